/**
 * The systems under test, each started on loopback by the benchmark itself: this project's
 * relay and tunnel, and the reference peers (nats-server, socat, OpenSSH `ssh -L`) when their
 * Debian packages are installed. Every start function returns a handle that stops everything
 * it started, and throws {@linkcode Unavailable} when a peer is not installed.
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type Child,
  findExecutable,
  freePort,
  spawnChild,
  waitForPort,
} from "../_shared/processes.ts";

/** Time a server gets to start listening. */
const START_TIMEOUT_MS = 20_000;

/** Tries to start the relay before giving up (see startRelay). */
const RELAY_START_ATTEMPTS = 3;

/** socat's buffer: 256 KiB, large enough that a forwarder moves bulk data in big reads. */
const SOCAT_BUFFER_BYTES = 262_144;

/** The one SSH cipher compared: the fastest one OpenSSH offers on machines with AES-NI. */
const SSH_CIPHER = "aes128-gcm@openssh.com";

/** Root of the project (scripts/bench/../..). */
export const PROJECT_ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** A system that cannot run here: its rows are skipped with this message. */
export class Unavailable extends Error {
  /** @param message why, e.g. which Debian package to install */
  constructor(message: string) {
    super(message);
    this.name = "Unavailable";
  }
}

/** A started system: where to connect, which processes to measure, how to stop it. */
export interface Running extends AsyncDisposable {
  /** Port clients connect to. */
  port: number;
  /** Processes whose CPU (with their children) and memory count as the system's. */
  pids: number[];
  /** Stops every process the system started. */
  stop(): Promise<void>;
  /** Which of its processes died (how, and its last output), or `undefined` while all run. */
  died(): Promise<string | undefined>;
}

/** Options of this project's processes. */
export interface ProjectOptions {
  /** When set, each Deno process writes a V8 CPU profile into this directory on exit. */
  profileDir?: string;
  /** Profile file name prefix (the scenario), so runs do not overwrite each other. */
  profileName?: string;
}

/** Options of {@linkcode startRelay}. */
export interface RelayOptions extends ProjectOptions {
  /**
   * Run at the relay's default log level instead of `warning` (rows that measure what an
   * operator gets out of the box, log lines included).
   * @default false
   */
  defaultLogLevel?: boolean;
  /** More `relay serve` flags (`--threads 1`). */
  args?: string[];
}

/** Options of {@linkcode startTunnels}. */
export interface TunnelOptions extends ProjectOptions {
  /** Both tunnels encrypt end to end with the secret in this file (`--secret-file`). */
  secretFile?: string;
  /**
   * Prefix of the two tunnels' names, so several pairs can share one relay.
   * @default "bench"
   */
  namePrefix?: string;
}

function running(port: number, children: Child[], cleanup?: () => Promise<void>): Running {
  const stop = async () => {
    // Stop in reverse start order: clients before the servers they talk to.
    for (const child of [...children].reverse()) await child.stop();
    await cleanup?.();
  };
  const died = async () => {
    const dead = children.find((c) => c.exited);
    if (!dead) return undefined;
    const { code, signal } = await dead.process.status;
    const tail = dead.tail().trim();
    return `${dead.name} exited (${signal ?? `code ${code}`})${
      tail ? `; its last output:\n${tail}` : ""
    }`;
  };
  return {
    port,
    pids: children.map((c) => c.pid),
    stop,
    died,
    [Symbol.asyncDispose]: stop,
  };
}

async function stopAll(children: Child[]): Promise<void> {
  for (const child of [...children].reverse()) await child.stop();
}

function denoArgs(options: ProjectOptions, role: string): string[] {
  const args = ["run", "-A"];
  if (options.profileDir) {
    args.push(
      "--cpu-prof",
      `--cpu-prof-dir=${options.profileDir}`,
      `--cpu-prof-name=${options.profileName ?? "run"}-${role}.cpuprofile`,
    );
  }
  return args;
}

/**
 * Starts this project's relay (`main.ts serve`) on a free loopback port, logging warnings only
 * (unless `defaultLogLevel`) so log lines cost nothing in the measured path.
 */
export async function startRelay(options: RelayOptions = {}): Promise<Running> {
  const main = join(PROJECT_ROOT, "main.ts");
  try {
    Deno.statSync(main);
  } catch {
    throw new Unavailable("relay not available: main.ts is missing");
  }
  // A start can fail for reasons outside the relay: the free port taken in the meantime, or a
  // signal from another program on this shared machine. Those are worth another try.
  for (let attempt = 1;; attempt++) {
    const port = freePort();
    const child = spawnChild("relay", Deno.execPath(), [
      ...denoArgs(options, "relay"),
      main,
      "serve",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      ...(options.defaultLogLevel ? [] : ["--log-level", "warning"]),
      // The rows named "relay" measure one thread (the scaling table adds one per core).
      ...(options.args?.includes("--threads") ? [] : ["--threads", "1"]),
      ...(options.args ?? []),
    ], { raiseFdLimit: true, cwd: PROJECT_ROOT });
    try {
      // The Listening line is logged at info, below the level chosen: wait for the port instead.
      await waitForPort(port, START_TIMEOUT_MS, child);
      return running(port, [child]);
    } catch (err) {
      const exitedEarly = child.exited; // rather than timed out
      await child.stop();
      if (attempt >= RELAY_START_ATTEMPTS || !exitedEarly) throw err;
    }
  }
}

/** Starts nats-server on a free loopback port (`-p -1`: it picks, then logs, the port). */
export async function startNats(): Promise<Running> {
  const exe = findExecutable("nats-server");
  if (!exe) throw new Unavailable("nats-server not installed (Debian package nats-server)");
  const child = spawnChild("nats-server", exe, ["-a", "127.0.0.1", "-p", "-1"], {
    raiseFdLimit: true,
  });
  try {
    const match = await child.waitForLine(
      /Listening for client connections on [^\s]+:(\d+)/,
      START_TIMEOUT_MS,
    );
    return running(Number(match[1]), [child]);
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/**
 * Starts socat forwarding raw bytes from a free port to `targetPort`, with 256 KiB buffers and
 * Nagle off on both sides (as the relay and the generator have it).
 */
export async function startSocat(targetPort: number): Promise<Running> {
  const exe = findExecutable("socat");
  if (!exe) throw new Unavailable("socat not installed (Debian package socat)");
  const port = freePort();
  const child = spawnChild("socat", exe, [
    `-b${SOCAT_BUFFER_BYTES}`,
    `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,nodelay`,
    `TCP:127.0.0.1:${targetPort},nodelay`,
  ]);
  try {
    await waitForPort(port, START_TIMEOUT_MS, child);
  } catch (err) {
    await child.stop();
    throw err;
  }
  return running(port, [child]);
}

/** Local ports forwarded to other ports, one per target. */
export interface Forwards extends Running {
  /** The local port forwarded to each target, in the order of the targets. */
  ports: number[];
}

/**
 * Starts an OpenSSH tunnel: a private sshd on a free loopback port (temporary host key and
 * authorized_keys, no system configuration read) and `ssh -N -L PORT:127.0.0.1:TARGET` for
 * each target port through it, both with aes128-gcm.
 */
export async function startSshTunnel(targetPorts: number[]): Promise<Forwards> {
  const sshd = findExecutable("sshd");
  const ssh = findExecutable("ssh");
  const keygen = findExecutable("ssh-keygen");
  if (!sshd) throw new Unavailable("sshd not installed (Debian package openssh-server)");
  if (!ssh || !keygen) throw new Unavailable("ssh not installed (Debian package openssh-client)");
  if (Deno.build.os === "windows") throw new Unavailable("ssh -L is not benchmarked on Windows");
  const dir = await Deno.makeTempDir({ prefix: "relay-bench-ssh-" });
  const children: Child[] = [];
  const cleanup = async () => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const hostKey = join(dir, "host_key");
    const userKey = join(dir, "user_key");
    for (const key of [hostKey, userKey]) {
      const made = await new Deno.Command(keygen, {
        args: ["-q", "-t", "ed25519", "-N", "", "-f", key],
        stdout: "null",
        stderr: "piped",
      }).output();
      if (!made.success) {
        throw new Error(`ssh-keygen failed: ${new TextDecoder().decode(made.stderr)}`);
      }
    }
    const authorizedKeys = join(dir, "authorized_keys");
    await Deno.copyFile(`${userKey}.pub`, authorizedKeys);
    const config = join(dir, "sshd_config");
    await Deno.writeTextFile(config, "# Empty: every option is given with -o\n");
    ensurePrivsepDir();

    const sshdPort = freePort();
    children.push(spawnChild("sshd", sshd, [
      "-D",
      "-e",
      "-f",
      config,
      "-h",
      hostKey,
      "-p",
      String(sshdPort),
      "-o",
      "ListenAddress=127.0.0.1",
      "-o",
      `AuthorizedKeysFile=${authorizedKeys}`,
      "-o",
      "PasswordAuthentication=no",
      "-o",
      "KbdInteractiveAuthentication=no",
      "-o",
      "UsePAM=no",
      "-o",
      "StrictModes=no",
      "-o",
      "PermitRootLogin=prohibit-password",
      "-o",
      "PidFile=none",
      "-o",
      `Ciphers=${SSH_CIPHER}`,
      "-o",
      "Compression=no",
    ]));
    await waitForPort(sshdPort, START_TIMEOUT_MS, children[0]);

    const ports = targetPorts.map(() => freePort());
    const forwards = targetPorts.flatMap((target, i) => [
      "-L",
      `127.0.0.1:${ports[i]}:127.0.0.1:${target}`,
    ]);
    const user = Deno.env.get("USER") ?? Deno.env.get("LOGNAME") ?? "root";
    children.push(spawnChild("ssh -L", ssh, [
      "-N",
      "-F",
      "/dev/null",
      "-i",
      userKey,
      "-p",
      String(sshdPort),
      "-o",
      "BatchMode=yes",
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "ExitOnForwardFailure=yes",
      "-o",
      `Ciphers=${SSH_CIPHER}`,
      "-o",
      "Compression=no",
      ...forwards,
      `${user}@127.0.0.1`,
    ]));
    // With ExitOnForwardFailure, ssh listens only once logged in and every forward is set up.
    await waitForPort(ports[0], START_TIMEOUT_MS, children[1]);
    return { ...running(ports[0], children, cleanup), ports };
  } catch (err) {
    await stopAll(children);
    await cleanup();
    throw err;
  }
}

/** Where sshd running as root insists on an empty directory for privilege separation. */
const PRIVSEP_DIR = "/run/sshd";

/**
 * Creates sshd's empty privilege-separation directory when running as root and it is missing,
 * as the ssh service does at boot. It is runtime state, not configuration, and it stays: another
 * benchmark run may have an sshd using it at this moment.
 */
function ensurePrivsepDir(): void {
  if (Deno.uid() !== 0) return;
  Deno.mkdirSync(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
}

/** Starts the small HTTP server of the HTTP scenario (`http_server.ts`) in its own process. */
export function startHttpServer(): Promise<Running> {
  return startScript("http server", "./http_server.ts");
}

/** Starts the bare Deno accept loop (`accept_loop.ts`), the registration rows' floor. */
export function startAcceptLoop(): Promise<Running> {
  return startScript("deno accept loop", "./accept_loop.ts", { raiseFdLimit: true });
}

/** Starts a script of this folder that prints `Listening on HOST:PORT` once it listens. */
async function startScript(
  name: string,
  path: string,
  spawn: { raiseFdLimit?: boolean } = {},
): Promise<Running> {
  const script = fileURLToPath(new URL(path, import.meta.url));
  const child = spawnChild(name, Deno.execPath(), ["run", "-A", script], spawn);
  try {
    const match = await child.waitForLine(/Listening on [^\s]+:(\d+)/, START_TIMEOUT_MS);
    return running(Number(match[1]), [child]);
  } catch (err) {
    await child.stop();
    throw err;
  }
}

/** A tunnel pair through a relay: local ports forwarded to services exposed by the other end. */
export interface TunnelPair extends Running {
  /** Local port per service name (`port` is the first one). */
  ports: Record<string, number>;
}

/**
 * Starts two tunnels through the relay at `relayPort`: one exposing `services` (name → local
 * port), one forwarding a free local port to each. Resolves once `ready` (called with the
 * forwarded ports) succeeds, which proves the whole path works.
 */
export async function startTunnels(
  relayPort: number,
  services: Record<string, number>,
  ready: (ports: Record<string, number>) => Promise<void>,
  options: TunnelOptions = {},
): Promise<TunnelPair> {
  const main = join(PROJECT_ROOT, "main.ts");
  try {
    Deno.statSync(join(PROJECT_ROOT, "lib", "cli", "tunnel.ts"));
  } catch {
    throw new Unavailable("tunnel not available: lib/cli/tunnel.ts is missing");
  }
  const prefix = options.namePrefix ?? "bench";
  const relay = [
    "--relay",
    `127.0.0.1:${relayPort}`,
    "--log-level",
    "warning",
    ...(options.secretFile ? ["--secret-file", options.secretFile] : []),
  ];
  const expose = Object.entries(services).flatMap(([name, port]) => [
    "--expose",
    `${name}=127.0.0.1:${port}`,
  ]);
  const ports: Record<string, number> = {};
  for (const name of Object.keys(services)) ports[name] = freePort();
  const forward = Object.entries(ports).flatMap(([name, port]) => [
    "--forward",
    `${port}=${prefix}-exposer/${name}`,
  ]);
  const children: Child[] = [];
  try {
    for (const [role, args] of [["exposer", expose], ["forwarder", forward]] as const) {
      children.push(spawnChild(`tunnel ${role}`, Deno.execPath(), [
        ...denoArgs(options, `${options.namePrefix ? `${prefix}-` : ""}tunnel-${role}`),
        main,
        "tunnel",
        ...relay,
        "--name",
        `${prefix}-${role}`,
        ...args,
      ], { raiseFdLimit: true, cwd: PROJECT_ROOT }));
    }
    const first = Object.values(ports)[0];
    await waitForPort(first, START_TIMEOUT_MS, children[1]);
    await retryUntil(() => ready(ports), START_TIMEOUT_MS, children);
  } catch (err) {
    await stopAll(children);
    const output = children.map((c) => c.tail().trim() && `${c.name}: ${c.tail().trim()}`)
      .filter(Boolean).join("\n");
    throw new Error(
      `Tunnel failed to start: ${err instanceof Error ? err.message : err}${
        output ? `\n${output}` : ""
      }`,
    );
  }
  return { ...running(Object.values(ports)[0], children), ports };
}

async function retryUntil(
  attempt: () => Promise<void>,
  timeoutMs: number,
  children: Child[],
): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (true) {
    try {
      return await attempt();
    } catch (err) {
      const dead = children.find((c) => c.exited);
      if (dead) throw new Error(`${dead.name} exited; its last output:\n${dead.tail()}`);
      if (performance.now() > end) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}
