/**
 * `relay serve`: runs a relay server until SIGINT or SIGTERM (exit 0).
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { formatDuration, formatSize, UsageError } from "./flags.ts";
import type { CommandSpec, Flag, ParsedFlags } from "./flag_table.ts";
import { AuthPolicy } from "../relay/auth.ts";
import {
  DEFAULT_PORT,
  IDLE_TIMEOUT_MS,
  MAX_BUFFER_BYTES,
  MAX_CONNECTIONS,
  MAX_MEMORY_BYTES,
  MAX_MESSAGE_BYTES,
  REGISTER_TIMEOUT_MS,
  WRITE_TIMEOUT_MS,
} from "../limits.ts";
import { setupLogging } from "./log.ts";
import { type Rate, RelayServer, type TlsCertificate } from "../relay/server.ts";
import { WebServer, type WebServerOptions } from "../web/server.ts";
import { describeError, logFlags, onShutdownSignal, parseCommand } from "./common.ts";
import { serveThreaded } from "./serve_threads.ts";
import { CORES, defaultThreads } from "../threads/threads.ts";
import { CLUSTER_FLAGS, clusterSettings, joinCluster } from "./serve_cluster.ts";

/** Time queued data gets to go out on SIGINT/SIGTERM before connections are closed. */
const SHUTDOWN_GRACE_MS = 2_000;

const TLS_GROUP = "TLS and names (reloaded on SIGHUP)";
const PUBLIC_GROUP = "Limits for a public instance (off by default)";
const WEB_GROUP = "Web: status page, /metrics, /ws and the playground (off by default)";

/** Every flag of `relay serve`, declared once: help, README and parsing come from here. */
export const SERVE_FLAGS: readonly Flag[] = [
  {
    name: "host",
    env: "RELAY_HOST",
    type: "host",
    default: "0.0.0.0",
    help: "address to listen on",
    group: "Listening",
  },
  {
    name: "port",
    env: "RELAY_PORT",
    type: "port",
    default: String(DEFAULT_PORT),
    help: "TCP port; 0 picks any free port",
    group: "Listening",
  },
  {
    name: "threads",
    env: "RELAY_THREADS",
    type: "count",
    defaultText: "one per core",
    help: "worker threads sharing the port and one namespace; 1 runs no workers",
    group: "Listening",
  },
  {
    name: "max-connections",
    env: "RELAY_MAX_CONNECTIONS",
    type: "count",
    default: String(MAX_CONNECTIONS),
    help: "connections open at once; past it new ones are refused",
    group: "Listening",
  },
  {
    name: "register-timeout",
    env: "RELAY_REGISTER_TIMEOUT",
    type: "duration",
    default: formatDuration(REGISTER_TIMEOUT_MS),
    zeroIsOff: true,
    help: "time a new client has to send its name",
    group: "Timeouts",
  },
  {
    name: "idle-timeout",
    env: "RELAY_IDLE_TIMEOUT",
    type: "duration",
    default: formatDuration(IDLE_TIMEOUT_MS),
    zeroIsOff: true,
    help: "drop clients that send nothing this long",
    group: "Timeouts",
  },
  {
    name: "write-timeout",
    env: "RELAY_WRITE_TIMEOUT",
    type: "duration",
    default: formatDuration(WRITE_TIMEOUT_MS),
    zeroIsOff: true,
    help: "drop receivers that accept nothing this long",
    group: "Timeouts",
  },
  {
    name: "max-message",
    env: "RELAY_MAX_MESSAGE",
    type: "size",
    default: formatSize(MAX_MESSAGE_BYTES),
    help: "largest message payload",
    group: "Messages",
  },
  {
    name: "max-buffer",
    env: "RELAY_MAX_BUFFER",
    type: "size",
    default: formatSize(MAX_BUFFER_BYTES),
    help: "bytes queued per receiver before its senders wait",
    group: "Messages",
  },
  {
    name: "max-memory",
    env: "RELAY_MAX_MEMORY",
    type: "size",
    default: formatSize(MAX_MEMORY_BYTES),
    zeroIsOff: true,
    help: "bytes queued for all receivers together before senders wait",
    group: "Messages",
  },
  {
    name: "deliver",
    env: "RELAY_DELIVER",
    type: "choice",
    choices: ["framed", "payload"],
    default: "framed",
    help: 'deliver "sender|len|payload", or the payload only',
    group: "Messages",
  },
  {
    name: "tls-cert",
    env: "RELAY_TLS_CERT",
    type: "string",
    value: "FILE",
    help: "serve TLS with this certificate chain (PEM); 'relay cert' makes one",
    group: TLS_GROUP,
  },
  {
    name: "tls-key",
    env: "RELAY_TLS_KEY",
    type: "string",
    value: "FILE",
    help: "private key of --tls-cert (PEM)",
    group: TLS_GROUP,
  },
  {
    name: "tls-port",
    env: "RELAY_TLS_PORT",
    type: "port",
    help: "serve TLS on this port and keep --port plaintext (one registry)",
    group: TLS_GROUP,
  },
  {
    name: "auth-file",
    env: "RELAY_AUTH_FILE",
    type: "string",
    value: "FILE",
    help: "JSON of owned names and token hashes; see 'relay hash-token'",
    group: TLS_GROUP,
  },
  {
    name: "require-auth",
    env: "RELAY_REQUIRE_AUTH",
    type: "boolean",
    help: "only names in --auth-file may register",
    group: TLS_GROUP,
  },
  {
    name: "max-connections-per-ip",
    env: "RELAY_MAX_CONNECTIONS_PER_IP",
    type: "count",
    default: "0",
    zeroIsOff: true,
    help: "connections open at once from one IP",
    group: PUBLIC_GROUP,
  },
  {
    name: "register-rate",
    env: "RELAY_REGISTER_RATE",
    type: "string",
    value: "N/s|N/m",
    default: "0",
    help: "registrations per IP per second (N/s) or minute (N/m)",
    group: PUBLIC_GROUP,
  },
  {
    name: "bandwidth",
    env: "RELAY_BANDWIDTH",
    type: "size",
    default: "0",
    zeroIsOff: true,
    help: "bytes per second one client may send",
    group: PUBLIC_GROUP,
  },
  {
    name: "listing",
    env: "RELAY_LISTING",
    type: "choice",
    choices: ["on", "off"],
    default: "on",
    help: "whether clients may list who is online ('relay who'); watching names works either way",
    group: PUBLIC_GROUP,
  },
  ...CLUSTER_FLAGS,
  {
    name: "http-port",
    env: "RELAY_HTTP_PORT",
    type: "port",
    help: "serve the status page, /metrics, /ws and /playground (HTTPS with --tls-cert)",
    group: WEB_GROUP,
  },
  {
    name: "http-host",
    env: "RELAY_HTTP_HOST",
    type: "host",
    default: "127.0.0.1",
    help: "address of --http-port",
    group: WEB_GROUP,
  },
  {
    name: "ws-origins",
    env: "RELAY_WS_ORIGINS",
    type: "string",
    value: "ORIGIN",
    multiple: true,
    help: "other web origins that may open /ws (https://lab.example.org), or *",
    group: WEB_GROUP,
  },
  {
    name: "http-token",
    env: "RELAY_HTTP_TOKEN",
    type: "string",
    value: "TOKEN",
    help: "token (bearer or basic auth) for /, /api/* and /metrics",
    group: WEB_GROUP,
  },
  {
    name: "http-token-file",
    env: "RELAY_HTTP_TOKEN_FILE",
    type: "string",
    value: "FILE",
    help: "read --http-token from this file",
    group: WEB_GROUP,
  },
  ...logFlags("info"),
];

const SPEC: CommandSpec = {
  command: "relay serve",
  about: "run the relay server",
  usage: "relay serve [options]",
  description: "Runs until SIGINT (Ctrl-C) or SIGTERM, then lets queued data go out for " +
    `${SHUTDOWN_GRACE_MS / 1000}s and exits 0. SIGHUP reloads the TLS certificate and the ` +
    "auth file.",
  flags: SERVE_FLAGS,
};

/** Runs `relay serve` with `args`; resolves to the exit code once the server has stopped. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  // Installed first, so that a Ctrl-C at any moment of start-up still exits 0.
  using signal = onShutdownSignal();
  const hostname = flags.host("host")!;
  const port = flags.port("port")!;
  const options = {
    hostname,
    port,
    registerTimeoutMs: flags.duration("register-timeout"),
    idleTimeoutMs: flags.duration("idle-timeout"),
    writeTimeoutMs: flags.duration("write-timeout"),
    maxMessageBytes: flags.size("max-message"),
    maxBufferBytes: flags.size("max-buffer"),
    maxMemoryBytes: flags.size("max-memory"),
    maxConnections: flags.count("max-connections"),
    deliver: flags.choice<"framed" | "payload">("deliver"),
    shutdownGraceMs: SHUTDOWN_GRACE_MS,
    maxConnectionsPerIp: flags.count("max-connections-per-ip"),
    registerRate: rateFlag(flags),
    bandwidthBytesPerSecond: flags.size("bandwidth"),
    listing: flags.choice<"on" | "off">("listing") !== "off",
  };
  const certFile = flags.string("tls-cert");
  const keyFile = flags.string("tls-key");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("--tls-cert and --tls-key go together");
  }
  const tlsPort = flags.port("tls-port");
  if (tlsPort !== undefined && certFile === undefined) {
    throw new UsageError("--tls-port needs --tls-cert and --tls-key");
  }
  const authFile = flags.string("auth-file");
  if (flags.boolean("require-auth") && authFile === undefined) {
    throw new UsageError("--require-auth needs --auth-file");
  }
  // Checked here so that a swapped or wrong file is named (exit 2), not "no certificates found".
  const readTls = async () =>
    certFile === undefined ? undefined : {
      cert: pemOf(
        flags.label("tls-cert"),
        certFile,
        await readFileFor(flags.label("tls-cert"), certFile),
        /-----BEGIN CERTIFICATE-----/,
        "certificate",
      ),
      key: pemOf(
        flags.label("tls-key"),
        keyFile!,
        await readFileFor(flags.label("tls-key"), keyFile!),
        /-----BEGIN [A-Z ]*PRIVATE KEY-----/,
        "private key",
      ),
    };
  let auth: AuthPolicy | undefined;
  if (authFile !== undefined) {
    try {
      auth = await AuthPolicy.load(authFile, { requireAuth: flags.boolean("require-auth") });
    } catch (error) {
      // AuthPolicy says "Invalid auth file PATH: why"; name the flag instead, on one line.
      const text = describeError(error).replace(/\s+/g, " ");
      const unread = /^cannot read auth file .*?: /.exec(text);
      const why = text.replace(/^(invalid|cannot read) auth file .*?: /, "");
      throw new UsageError(
        `${unread ? "Cannot read" : "Invalid"} ${flags.label("auth-file")} ${authFile}: ${
          unread ? why.replace(/^[A-Z][a-z]/, (c) => c.toLowerCase()) : why
        }`,
      );
    }
  }
  await setupLogging({
    level: flags.string("log-level"),
    format: flags.string("log-format"),
    labels: { level: flags.label("log-level"), format: flags.label("log-format") },
  });
  const log = getLogger(["relay", "serve"]);
  const tls = await readTls();
  const threads = threadsOf(flags);
  if (!flags.has("threads") && threads < CORES) {
    log.info(
      "Running {threads} threads on {cores} cores: --max-memory holds the rings for no more",
      {
        threads,
        cores: CORES,
      },
    );
  }
  // With --threads N the process is one cluster node; worker 0 joins for every worker.
  const cluster = await clusterSettings(flags, threads);
  if (threads > 1) {
    const web = await webOptions(flags, {
      ...options,
      tls,
      maxBufferBytes: options.maxBufferBytes!,
      maxMessageBytes: options.maxMessageBytes!,
      maxConnections: options.maxConnections!,
    });
    if (auth) {
      log.info("Auth file {file}: {count} owned names", { file: authFile, count: auth.size });
    }
    return await serveThreaded({
      options: {
        ...options,
        tls,
        tlsPort,
        threads,
        authFile: authFile === undefined
          ? undefined
          : { path: authFile, requireAuth: flags.boolean("require-auth") },
        logLevel: flags.string("log-level"),
        web,
        cluster,
      },
      readTls,
      auth: auth !== undefined,
      signal,
      settings: settingsText(flags),
      listenFailure: (error) =>
        web && (error as { web?: boolean }).web
          ? webListenError(error, web)
          : new ListenError(listenFailure(error, hostname, port, tls ? tlsPort : undefined)),
    });
  }
  // Cluster mode: joined before listening, so no client registers a name the cluster has not seen.
  await using mesh = cluster ? await joinCluster(cluster, log, signal) : undefined;
  let listening: RelayServer;
  try {
    listening = await RelayServer.listen({ ...options, tls, tlsPort, auth, mesh });
  } catch (error) {
    throw new ListenError(listenFailure(error, hostname, port, tls ? tlsPort : undefined));
  }
  await using server = listening;
  await using web = await startWeb(flags, server, {
    ...options,
    tls,
    maxBufferBytes: options.maxBufferBytes!,
    maxMessageBytes: options.maxMessageBytes!,
    maxConnections: options.maxConnections!,
  });
  log.info("Settings: {settings}", { settings: settingsText(flags) });
  if (auth) log.info("Auth file {file}: {count} owned names", { file: authFile, count: auth.size });
  const reload = async () => {
    log.info("SIGHUP: reloading the TLS certificate and the auth file");
    try {
      const tls = await readTls();
      if (tls) await server.setCertificate(tls);
      if (tls && web) await web.setCertificate(tls);
      if (auth) log.info("Auth file reloaded: {count} owned names", { count: await auth.reload() });
    } catch (error) {
      log.error("Reload failed, the old settings stay in force: {error}", {
        error: (error as Error).message,
      });
    }
  };
  const onHangup = () => void reload();
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", onHangup);
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve());
  });
  log.info("Shutting down");
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGHUP", onHangup);
  await web?.close();
  await server.close();
  return 0;
}

/** A failure to listen: a runtime failure (exit 1), printed as one line. */
export class ListenError extends Error {
  /** @param message names the address */
  constructor(message: string) {
    super(message);
    this.name = "ListenError";
  }
}

/** Names the address that could not be listened on, and why, in words. */
function listenFailure(
  error: unknown,
  hostname: string,
  port: number,
  tlsPort: number | undefined,
): string {
  const show = (p: number) => `${hostname.includes(":") ? `[${hostname}]` : hostname}:${p}`;
  let address = show(port);
  if (tlsPort !== undefined && error instanceof Deno.errors.AddrInUse) {
    // Both ports are opened at once; probe the plaintext one to say which was taken.
    try {
      Deno.listen({ hostname, port }).close();
      address = `${show(tlsPort)} (TLS)`;
    } catch {
      // The plaintext port is the taken one.
    }
  }
  if (error instanceof Deno.errors.AddrInUse) {
    return `Cannot listen on ${address}: address already in use`;
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return `Cannot listen on ${address}: ${hostname} is not an address of this machine`;
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return `Cannot listen on ${address}: permission denied (ports below 1024 need privileges)`;
  }
  if (/certificate|private key|pem/i.test(String(error))) {
    return `Cannot use --tls-cert/--tls-key: ${describeError(error)}`;
  }
  return `Cannot listen on ${address}: ${describeError(error)}`;
}

/** The settings in effect, one `name=value` each, for the start-up log line. */
export function settingsText(flags: ParsedFlags): string {
  return settingsEntries(flags).map(([name, value]) => `${name}=${value}`).join(" ");
}

/** `--threads`, or when not given one per core, as many as `--max-memory` holds rings for. */
function threadsOf(flags: ParsedFlags): number {
  if (flags.has("threads")) return flags.count("threads")!;
  return defaultThreads(flags.size("max-memory") ?? MAX_MEMORY_BYTES);
}

/** The settings in effect as flag names and values as typed (`off` for 0); no secrets. */
export function settingsEntries(flags: ParsedFlags): [string, string][] {
  const shown: [string, string][] = [];
  for (const flag of SERVE_FLAGS) {
    if (flag.group === "Logging and help" || flag.name === "host" || flag.name === "port") continue;
    if (flag.name === "http-token") continue; // a secret
    if (flag.name === "threads") {
      shown.push([flag.name, String(threadsOf(flags))]); // the cores when not given
      continue;
    }
    if (flag.type === "boolean") {
      shown.push([flag.name, flags.boolean(flag.name) ? "on" : "off"]);
      continue;
    }
    const value = flag.multiple
      ? flags.list(flag.name).join(" ") || undefined
      : flags.string(flag.name);
    // Port 0 is "any free port", not off (--http-port 0 serves on one).
    const off = value === undefined || (value === "0" && flag.type !== "port");
    shown.push([flag.name, off ? "off" : value]);
  }
  return shown;
}

/**
 * Starts the HTTP side when `--http-port` is given (over TLS when the relay has a certificate).
 * @throws {ListenError} when its port cannot be listened on
 */
async function startWeb(
  flags: ParsedFlags,
  relay: RelayServer,
  options: WebFlagOptions,
): Promise<WebServer | undefined> {
  const web = await webOptions(flags, options);
  if (web === undefined) return undefined;
  try {
    return await WebServer.listen({ ...web, relay });
  } catch (error) {
    throw webListenError(error, web);
  }
}

/** A failure to serve --http-port, named as such. */
function webListenError(error: unknown, web: { hostname?: string; port: number }): ListenError {
  const why = listenFailure(error, web.hostname!, web.port, undefined);
  return new ListenError(why.replace("Cannot listen on", "Cannot serve --http-port on"));
}

/** What the HTTP side takes from the relay's settings. */
interface WebFlagOptions {
  tls?: TlsCertificate;
  listing: boolean;
  maxBufferBytes: number;
  maxMessageBytes: number;
  maxConnections: number;
}

/** The HTTP side's options from the flags (the token file read), or undefined without it. */
async function webOptions(
  flags: ParsedFlags,
  options: WebFlagOptions,
): Promise<Omit<WebServerOptions, "relay"> | undefined> {
  const port = flags.port("http-port");
  if (port === undefined) return undefined;
  const hostname = flags.host("http-host")!;
  let token = flags.string("http-token");
  if (flags.has("http-token-file")) {
    const path = flags.string("http-token-file")!;
    token = (await readFileFor(flags.label("http-token-file"), path)).split(/\r?\n/)[0];
    if (token.trim() === "") {
      throw new UsageError(`Invalid ${flags.label("http-token-file")} ${path}: no token in it`);
    }
  }
  if (token === undefined && !isLoopback(hostname)) {
    // SELF_HOSTING.md: set the token before publishing; say so when someone did not.
    getLogger(["relay", "serve"]).warn(
      "The status page, /api and /metrics on {hostname} are open to anyone who can reach it: " +
        "give --http-token-file (or serve them on 127.0.0.1)",
      { hostname },
    );
  }
  const settings = Object.fromEntries(settingsEntries(flags));
  settings["http-token"] = token === undefined ? "off" : "on";
  return {
    hostname,
    port,
    tls: options.tls,
    token,
    wsOrigins: flags.list("ws-origins").flatMap((o) => o.split(",")).filter(Boolean),
    listing: options.listing,
    settings,
    maxBufferBytes: options.maxBufferBytes,
    maxMessageBytes: options.maxMessageBytes,
    maxConnections: options.maxConnections,
  };
}

/** Whether `hostname` is reachable from this machine only. */
function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\./.test(hostname);
}

/**
 * Parses `--register-rate`: `N/s`, `N/m` or plain N per second; 0 is off.
 * @throws {UsageError} on anything else
 */
function rateFlag(flags: ParsedFlags): Rate | undefined {
  const text = flags.string("register-rate")!;
  const match = /^(\d+)(?:\/(s|m))?$/.exec(text.trim());
  if (!match) {
    throw new UsageError(
      `Invalid ${flags.label("register-rate")} ${
        JSON.stringify(text)
      }: expected N/s or N/m, e.g. 10/s`,
    );
  }
  if (Number(match[1]) === 0) return undefined;
  return { limit: Number(match[1]), intervalMs: match[2] === "m" ? 60_000 : 1_000 };
}

/** `text` when it holds a PEM block matching `begin`; otherwise a UsageError naming the file. */
function pemOf(flag: string, path: string, text: string, begin: RegExp, what: string): string {
  if (begin.test(text)) return text;
  throw new UsageError(`Invalid ${flag} ${path}: no PEM ${what} in it`);
}

async function readFileFor(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`Cannot read ${flag} ${path}: ${describeError(error)}`);
  }
}
