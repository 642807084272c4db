/**
 * Test helpers: raw TCP peers that speak the wire protocol byte by byte, and a way to run
 * the real CLI.
 * @module
 */

import { fileURLToPath } from "node:url";
import type { RelayConn } from "../../lib/relay/connection.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a string to bytes. */
export function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Decodes bytes to a string. */
export function text(data: Uint8Array): string {
  return decoder.decode(data);
}

/** A raw TCP connection to a relay, for tests that control every byte. */
export class RawPeer implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  #buffered = new Uint8Array(0);
  #eof = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to `port` on 127.0.0.1 and, if `name` is given, sends `name|`. */
  static async connect(port: number, name?: string): Promise<RawPeer> {
    const peer = new RawPeer(await Deno.connect({ hostname: "127.0.0.1", port }));
    if (name !== undefined) await peer.write(`${name}|`);
    return peer;
  }

  /**
   * Writes all of `data`. Throws (and closes the socket) if the relay has not taken it all
   * after `timeoutMs`: a relay that stops reading must fail a test, not hang it.
   */
  async write(data: string | Uint8Array, timeoutMs = 20_000): Promise<void> {
    const buf = typeof data === "string" ? bytes(data) : data;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let timedOut = false;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        this.conn.close(); // ends the pending write too
        reject(new Error(`Timed out writing ${buf.length} bytes after ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      for (let at = 0; at < buf.length;) {
        at += await Promise.race([this.conn.write(buf.subarray(at)), deadline]);
      }
    } catch (error) {
      if (timedOut) throw new Error(`Timed out writing ${buf.length} bytes after ${timeoutMs} ms`);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reads exactly `n` bytes, or throws on EOF or after `timeoutMs`. */
  async read(n: number, timeoutMs = 5_000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buffered.length < n) {
      if (this.#eof) throw new Error(`EOF after ${this.#buffered.length} of ${n} bytes`);
      await this.#fill(deadline - Date.now());
    }
    const out = this.#buffered.slice(0, n);
    this.#buffered = this.#buffered.slice(n);
    return out;
  }

  /** Reads `expected.length` bytes and returns them as text. */
  async readText(length: number, timeoutMs?: number): Promise<string> {
    return text(await this.read(length, timeoutMs));
  }

  /**
   * Waits until the relay closes the connection; returns the bytes received until then.
   * Throws if it is still open after `timeoutMs`.
   */
  async closed(timeoutMs = 5_000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#eof) await this.#fill(deadline - Date.now());
    return this.#buffered;
  }

  /**
   * Whether the connection stays open and silent for `ms`: false as soon as any byte arrives
   * (or is already buffered unread) or the relay closes it. Every "receives nothing" check is
   * built on this, so a stray byte must fail it.
   */
  async stillOpen(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.#buffered.length === 0 && !this.#eof) {
      try {
        await this.#fill(deadline - Date.now());
      } catch {
        return true; // timed out: nothing arrived, still open
      }
    }
    return false;
  }

  async #fill(timeoutMs: number): Promise<void> {
    if (timeoutMs <= 0) throw new Error("Timed out waiting for data");
    const buf = new Uint8Array(64 * 1024);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const reading = this.#pending ??= this.conn.read(buf).then(
      (n) => ({ n, buf }),
      () => ({ n: null, buf }),
    );
    const result = await Promise.race([reading, timeout]);
    clearTimeout(timer);
    if (result === "timeout") throw new Error("Timed out waiting for data");
    this.#pending = undefined;
    if (result.n === null) {
      this.#eof = true;
      return;
    }
    const merged = new Uint8Array(this.#buffered.length + result.n);
    merged.set(this.#buffered);
    merged.set(result.buf.subarray(0, result.n), this.#buffered.length);
    this.#buffered = merged;
  }

  #pending: Promise<{ n: number | null; buf: Uint8Array }> | undefined;

  /** Closes the socket (safe twice) and waits for a pending read to finish. */
  async close(): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
    await this.#pending;
  }

  /** Same as close(). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Reads as many bytes as `expected` has and checks they are `expected`. */
export async function expectText(peer: RawPeer, expected: string, timeoutMs?: number) {
  const got = text(await peer.read(bytes(expected).length, timeoutMs));
  if (got !== expected) {
    throw new Error(`Expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`);
  }
}

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5_000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await delay(10);
  }
}

/** Path of main.ts. */
export const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));

/**
 * Runs the real CLI with `args`; returns exit code and output. A run that has not ended after
 * `timeoutMs` is killed and the call throws.
 */
export async function runCli(
  args: string[],
  options: { stdin?: Uint8Array | string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", MAIN, ...args],
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, options.timeoutMs ?? 30_000);
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    try {
      await writer.write(typeof options.stdin === "string" ? bytes(options.stdin) : options.stdin);
      await writer.close();
    } catch {
      // The command exited (or was killed) before reading all of it: its exit code tells.
    }
  }
  const out = await child.output().finally(() => clearTimeout(timer));
  if (timedOut) {
    throw new Error(
      `relay ${args.join(" ")} did not exit within ${options.timeoutMs ?? 30_000} ms`,
    );
  }
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** A child `deno run main.ts ...` whose stderr is collected and searchable. */
export class CliProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  stderr = "";
  #reading: Promise<void>;
  #changed: (() => void)[] = [];

  constructor(
    args: string[],
    options: {
      stdin?: "piped" | "null";
      stdout?: "piped" | "null";
      env?: Record<string, string>;
    } = {},
  ) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", "--allow-env", "--allow-read", MAIN, ...args],
      stdin: options.stdin ?? "null",
      stdout: options.stdout ?? "null",
      stderr: "piped",
      env: { NO_COLOR: "1", ...options.env },
    }).spawn();
    this.child = child;
    this.#reading = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += chunk;
        for (const w of this.#changed.splice(0)) w();
      }
      for (const w of this.#changed.splice(0)) w();
    })();
  }

  /** Waits for stderr to match `pattern` `count` times; returns the last match. */
  async waitLog(pattern: RegExp, timeoutMs = 10_000, count = 1): Promise<RegExpMatchArray> {
    const global = new RegExp(pattern.source, "g");
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const matches = [...this.stderr.matchAll(global)];
      if (matches.length >= count) return matches[count - 1];
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`Timed out waiting for ${pattern} in:\n${this.stderr}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#changed.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /** Stops the process (SIGTERM, then SIGKILL) and waits for its output to end. */
  async stop(): Promise<Deno.CommandStatus> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    }, 3_000);
    const status = await this.child.status;
    clearTimeout(timer);
    await this.#reading;
    return status;
  }

  /**
   * Waits for the process to exit by itself; after `timeoutMs` it is killed and the call
   * throws.
   */
  async exited(timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    }, timeoutMs);
    const status = await this.child.status.finally(() => clearTimeout(timer));
    await this.#reading;
    if (timedOut) throw new Error(`Process did not exit within ${timeoutMs} ms:\n${this.stderr}`);
    return status;
  }

  /** Stops the process. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** A relay running as a real `relay serve --host 127.0.0.1 --port 0` process. */
export class ServeProcess extends CliProcess {
  /** The port it listens on (the first, plaintext one). */
  port = 0;

  /**
   * Starts `relay serve --host 127.0.0.1 --port 0 ...args` and waits for its port. Without a
   * `--log-level` in `args` the relay logs at debug, so tests can wait for its per-connection
   * lines (Registered, Disconnected), which are at debug by default.
   */
  static async start(args: string[] = [], env: Record<string, string> = {}): Promise<ServeProcess> {
    const level = args.includes("--log-level") ? [] : ["--log-level", "debug"];
    const proc = new ServeProcess(
      ["serve", "--host", "127.0.0.1", "--port", "0", ...level, ...args],
      { env },
    );
    try {
      proc.port = Number((await proc.waitLog(/Listening on \S+:(\d+)/))[1]);
    } catch (error) {
      await proc.stop();
      throw error;
    }
    return proc;
  }

  /** Sends `signal`, waits for exit, returns the exit code. */
  async stopWith(signal: Deno.Signal): Promise<number> {
    try {
      this.child.kill(signal);
    } catch {
      // Already exited.
    }
    return (await this.exited()).code;
  }
}

let nextPort = 40_000;

/**
 * An in-memory connection for `RelayServer.serve`: the test decides exactly what the relay
 * reads and when, and whether its writes are taken (a socket buffer of size zero when
 * `stalled`), so no kernel buffer blurs when a sender is held back.
 */
export class MemoryConn implements RelayConn {
  readonly remoteAddr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: nextPort++ };
  readonly written: number[] = [];
  closed = false;
  #input: Uint8Array[] = [];
  #reader: (() => void) | undefined;
  #stalledWrites: (() => void)[] = [];

  constructor(readonly stalled = false) {}

  /** Bytes fed and not yet read by the relay. */
  get unread(): number {
    return this.#input.reduce((sum, chunk) => sum + chunk.length, 0);
  }

  /** Bytes the relay will read next. */
  feed(data: string | Uint8Array): void {
    this.#input.push(typeof data === "string" ? bytes(data) : data);
    this.#reader?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#input.length === 0) {
      if (this.closed) return null;
      await new Promise<void>((resolve) => this.#reader = resolve);
      this.#reader = undefined;
    }
    if (this.closed) return null;
    const chunk = this.#input[0];
    const n = Math.min(p.length, chunk.length);
    p.set(chunk.subarray(0, n));
    if (n === chunk.length) this.#input.shift();
    else this.#input[0] = chunk.subarray(n);
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("closed"));
    if (this.stalled) {
      return new Promise((_, reject) =>
        this.#stalledWrites.push(() => reject(new Deno.errors.BadResource("closed")))
      );
    }
    for (const b of p) this.written.push(b);
    return Promise.resolve(p.length);
  }

  close(): void {
    this.closed = true;
    this.#reader?.();
    for (const fail of this.#stalledWrites.splice(0)) fail();
  }

  get text(): string {
    return text(new Uint8Array(this.written));
  }
}

/**
 * A registered pair on `server` over in-memory connections: `rx`, which takes no bytes (its
 * queue only grows), and `tx`, its sender.
 */
export async function stalledPair(
  server: { serve(conn: RelayConn): void; stats(): { registered: number } },
): Promise<{ rx: MemoryConn; tx: MemoryConn }> {
  const rx = new MemoryConn(true);
  const tx = new MemoryConn();
  const before = server.stats().registered;
  server.serve(rx);
  server.serve(tx);
  rx.feed("rx|");
  tx.feed("tx|");
  await waitFor(() => server.stats().registered === before + 2, 2_000, "registration");
  return { rx, tx };
}
