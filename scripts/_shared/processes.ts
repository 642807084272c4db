/**
 * Child processes of the benchmark and the soak: spawning with a raised file-descriptor limit,
 * waiting for a readiness line, draining output, stopping; plus helpers for free ports and
 * executables.
 * @module
 */

import { delimiter, join } from "node:path";

/** File descriptors asked for: 10,000 idle clients plus the server's own, with room. */
const FD_LIMIT = 65_536;

/** How long a stopped child gets to exit (and write its profile) before it is killed. */
const STOP_GRACE_MS = 5_000;

/** Lines of output kept per child for error messages. */
const TAIL_LINES = 40;

/** The lines of a byte stream (the last one even without a final newline). */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      yield pending.slice(0, nl);
      pending = pending.slice(nl + 1);
    }
  }
  if (pending) yield pending;
}

/** Options of {@linkcode spawnChild}. */
export interface SpawnOptions {
  /**
   * Raise the open-file limit first (`ulimit -n`, through `sh`; not on Windows).
   * @default false
   */
  raiseFdLimit?: boolean;
  /** Working directory. */
  cwd?: string;
  /**
   * Keep stdin open as a pipe and leave stdout to the caller (the generator's job lines).
   * @default false
   */
  stdin?: boolean;
}

/** A running child process whose output is drained and searchable. */
export class Child implements AsyncDisposable {
  /** Short name for messages. */
  readonly name: string;
  /** The Deno handle. */
  readonly process: Deno.ChildProcess;
  readonly #tail: string[] = [];
  readonly #waiters = new Set<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }>();
  readonly #drained: Promise<void>;
  #exited = false;

  /** Spawns the process; prefer {@linkcode spawnChild}. */
  constructor(name: string, command: string, args: string[], options: SpawnOptions = {}) {
    this.name = name;
    let cmd = command;
    let argv = args;
    if (options.raiseFdLimit && Deno.build.os !== "windows") {
      // `exec` keeps the PID: it is the process whose memory and CPU are measured.
      const quoted = [command, ...args].map(shellQuote).join(" ");
      cmd = "sh";
      argv = [
        "-c",
        `ulimit -n ${FD_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec ${quoted}`,
      ];
    }
    this.process = new Deno.Command(cmd, {
      args: argv,
      cwd: options.cwd,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.process.status.then(() => (this.#exited = true));
    this.#drained = Promise.all([
      this.#drain(this.process.stderr),
      options.stdin ? Promise.resolve() : this.#drain(this.process.stdout),
    ]).then(() => {});
  }

  /** Process id. */
  get pid(): number {
    return this.process.pid;
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** The last lines the process printed. */
  tail(): string {
    return this.#tail.join("\n");
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const line of readLines(stream)) this.#line(line.trimEnd());
    } catch {
      // The stream ends with the process.
    }
  }

  #line(line: string): void {
    this.#tail.push(line);
    if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    for (const waiter of this.#waiters) {
      const match = line.match(waiter.re);
      if (match) {
        this.#waiters.delete(waiter);
        waiter.resolve(match);
      }
    }
  }

  /**
   * Resolves with the first later output line matching `re`.
   * @throws {Error} when the process exits first or `timeoutMs` passes
   */
  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    for (const line of this.#tail) {
      const match = line.match(re);
      if (match) return Promise.resolve(match);
    }
    return new Promise((resolve, reject) => {
      const waiter = { re, resolve: (m: RegExpMatchArray) => done(() => resolve(m)) };
      const timer = setTimeout(
        () => done(() => reject(this.#failure(`did not print ${re} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        settle();
      };
      this.#waiters.add(waiter);
      this.process.status.then(() =>
        // Let the drain deliver the last lines before giving up.
        this.#drained.then(() => done(() => reject(this.#failure("exited"))))
      );
    });
  }

  #failure(what: string): Error {
    const tail = this.tail().trim();
    return new Error(`${this.name} ${what}${tail ? `; its last output:\n${tail}` : ""}`);
  }

  /**
   * Asks the process to stop (SIGTERM, or kill on Windows), kills it after `graceMs`.
   * @param graceMs time it gets to exit on its own
   */
  async stop(graceMs: number = STOP_GRACE_MS): Promise<void> {
    if (!this.#exited) {
      try {
        this.process.kill(Deno.build.os === "windows" ? "SIGKILL" : "SIGTERM");
      } catch {
        // Already gone.
      }
      const timer = setTimeout(() => {
        try {
          this.process.kill("SIGKILL");
        } catch {
          // Already gone.
        }
      }, graceMs);
      await this.process.status;
      clearTimeout(timer);
    }
    await this.#drained;
  }

  /** Same as {@linkcode stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

/** Spawns `command` with `args`; the returned child is stopped with `stop()` or `await using`. */
export function spawnChild(
  name: string,
  command: string,
  args: string[],
  options: SpawnOptions = {},
): Child {
  return new Child(name, command, args, options);
}

/**
 * Full path of an executable on PATH (and in the sbin directories, where Debian puts
 * nats-server and sshd), or `undefined` when it is not installed.
 */
export function findExecutable(name: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(delimiter).filter(Boolean);
  if (Deno.build.os !== "windows") dirs.push("/usr/sbin", "/sbin", "/usr/local/sbin");
  const names = Deno.build.os === "windows" ? [`${name}.exe`, name] : [name];
  for (const dir of dirs) {
    for (const file of names) {
      const path = join(dir, file);
      try {
        if (Deno.statSync(path).isFile) return path;
      } catch {
        // Not here.
      }
    }
  }
  return undefined;
}

/**
 * A loopback port that was free a moment ago, for programs that cannot report the port they
 * picked (socat, ssh -L, the tunnel's --forward). There is a small race; the caller's
 * readiness check catches a lost one.
 */
export function freePort(): number {
  while (true) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    // A port handed out earlier may still be unbound (its program starting): never reuse one.
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}

const handedOut = new Set<number>();

/**
 * Resolves once `port` accepts a TCP connection.
 * @throws {Error} after `timeoutMs`, or as soon as `child` exits
 */
export async function waitForPort(port: number, timeoutMs: number, child?: Child): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      if (child?.exited) {
        await child.stop(); // waits for its last output
        const { code, signal } = await child.process.status;
        throw new Error(
          `${child.name} exited (${
            signal ?? `code ${code}`
          }) before listening; its last output:\n${child.tail()}`,
        );
      }
      if (performance.now() > end) {
        throw new Error(`Nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}
