/**
 * `relay tunnel`: carries TCP services through the relay, both ways, until SIGINT/SIGTERM
 * (or, with --stdio, until the stream ends).
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { formatDuration, formatSize, parseHostPort, parsePort, UsageError } from "./flags.ts";
import type { CommandSpec, Flag, ParsedFlags } from "./flag_table.ts";
import { KEEPALIVE_MS } from "../limits.ts";
import { setupLogging } from "./log.ts";
import { INITIAL_WINDOW_BYTES, MAX_WINDOW_BYTES } from "../wire/tunnel.ts";
import { createCipherFactory } from "../tunnel/crypto.ts";
import { selectAead } from "../tunnel/aead.ts";
import { readSecret } from "./secret.ts";
import type { Target } from "../tunnel/dial.ts";
import {
  DEFAULT_OPEN_TIMEOUT_MS,
  DEFAULT_SERVICE,
  relayLinkFactory,
  Tunnel,
} from "../tunnel/tunnel.ts";
import { DEFAULT_WINDOW_BYTES } from "../tunnel/window.ts";
import {
  checkName,
  CLIENT_FLAGS,
  clientOptions,
  describeError,
  explainConnectError,
  logFlags,
  onShutdownSignal,
  parseCommand,
} from "./common.ts";

const TUNNEL_GROUP = "Tunnel";

/** Every flag of `relay tunnel`, declared once: help, README and parsing come from here. */
export const TUNNEL_FLAGS: readonly Flag[] = [
  {
    name: "relay",
    env: "RELAY_RELAY",
    type: "string",
    value: "HOST:PORT",
    help: "relay to connect to (required)",
    group: TUNNEL_GROUP,
  },
  {
    name: "name",
    env: "RELAY_NAME",
    type: "string",
    value: "NAME",
    defaultText: "random",
    help: "name to register; peers reach exposed services by it as NAME/SERVICE, so it " +
      "cannot contain '/' (random when nothing is exposed)",
    group: TUNNEL_GROUP,
  },
  {
    name: "expose",
    env: "RELAY_EXPOSE",
    type: "string",
    value: "[SERVICE=]HOST:PORT",
    multiple: true,
    help: `let peers open streams to SERVICE (default "${DEFAULT_SERVICE}"), connected to ` +
      "HOST:PORT here; repeatable",
    group: TUNNEL_GROUP,
  },
  {
    name: "forward",
    env: "RELAY_FORWARD",
    type: "string",
    value: "[BIND_HOST:]PORT=PEER[/SERVICE]",
    multiple: true,
    help: "listen on BIND_HOST:PORT (127.0.0.1 by default) and carry every connection to " +
      "PEER's SERVICE; repeatable",
    group: TUNNEL_GROUP,
  },
  {
    name: "allow",
    env: "RELAY_ALLOW",
    type: "string",
    value: "PEER[,PEER...]",
    multiple: true,
    defaultText: "any",
    help: "only these peers may open streams here. Without an auth file on the relay names " +
      "are not owned and anyone can register a trusted name: use --secret-file as well, or " +
      "a relay with --auth-file",
    group: TUNNEL_GROUP,
  },
  {
    name: "stdio",
    type: "string",
    value: "PEER[/SERVICE]",
    help: "one stream on stdin/stdout, then exit (SSH ProxyCommand)",
    group: TUNNEL_GROUP,
  },
  {
    name: "secret-file",
    env: "RELAY_TUNNEL_SECRET_FILE",
    type: "string",
    value: "FILE",
    help: "end-to-end encrypt with the secret in FILE; both ends need the same secret (or " +
      "the secret itself in RELAY_TUNNEL_SECRET)",
    group: TUNNEL_GROUP,
  },
  {
    name: "window",
    env: "RELAY_TUNNEL_WINDOW",
    type: "size",
    default: formatSize(DEFAULT_WINDOW_BYTES),
    help: "receive window per stream: more for throughput on long links, less to bound memory",
    group: TUNNEL_GROUP,
  },
  {
    name: "open-timeout",
    env: "RELAY_TUNNEL_OPEN_TIMEOUT",
    type: "duration",
    default: formatDuration(DEFAULT_OPEN_TIMEOUT_MS),
    help: "time for a peer to accept a stream, and for the relay link to come back for a new " +
      "connection",
    group: TUNNEL_GROUP,
  },
  ...CLIENT_FLAGS.map((f) =>
    f.name === "keepalive" ? { ...f, help: "relay keepalive and peer ping interval" } : f
  ),
  ...logFlags("info", "info (warning with --stdio)").map((f) =>
    f.name === "log-level" ? { ...f, default: undefined } : f
  ),
];

const SPEC: CommandSpec = {
  command: "relay tunnel",
  about: "carry TCP services (HTTP, SSH, databases) through a relay",
  usage:
    "relay tunnel --relay HOST:PORT [--name NAME] [--expose ...] [--forward ...] [--stdio ...]",
  description: "Runs until SIGINT (Ctrl-C) or SIGTERM (exit 0); with --stdio, until the stream " +
    "ends.\nEnvironment lists (RELAY_EXPOSE, RELAY_FORWARD) are separated by spaces; quote a " +
    "value\nwith spaces: RELAY_FORWARD='8000=lab/web \"9000=my lab/ssh\"'.",
  flags: TUNNEL_FLAGS,
  footer: `Example:
  # on the lab machine
  relay tunnel --relay relay.example.com:8080 --name lab --expose web=127.0.0.1:80
  # on the laptop
  relay tunnel --relay relay.example.com:8080 --name laptop --forward 8000=lab/web
  curl http://127.0.0.1:8000/

  # SSH through the relay (~/.ssh/config)
  Host lab
    ProxyCommand relay tunnel --relay relay.example.com:8080 --stdio lab/ssh`,
};

/** A parsed `--forward`. */
export interface ForwardSpec {
  /** Address to listen on. */
  hostname: string;
  /** Port to listen on. */
  port: number;
  /** Peer tunnel name. */
  peer: string;
  /** Service of the peer. */
  service: string;
}

/**
 * Parses `--expose [SERVICE=]HOST:PORT` (a bare PORT means 127.0.0.1:PORT).
 * @throws {UsageError} on a malformed value
 */
export function parseExpose(text: string): { service: string; target: Target } {
  const eq = text.indexOf("=");
  const service = eq < 0 ? DEFAULT_SERVICE : text.slice(0, eq);
  const address = eq < 0 ? text : text.slice(eq + 1);
  checkService(service, "--expose", text);
  if (/^\d+$/.test(address)) {
    return {
      service,
      target: { hostname: "127.0.0.1", port: parsePort(address, "--expose port") },
    };
  }
  const target = parseHostPort(address, "--expose address");
  if (target.port === 0) throw new UsageError(`Invalid --expose ${JSON.stringify(text)}: port 0`);
  return { service, target };
}

function parseExposeText(text: string): { service: string; target: Target; text: string } {
  return { ...parseExpose(text), text };
}

/**
 * Parses each value of a repeatable flag; when they came from its environment variable, a bad
 * one says how that variable is split, since a space in a value is the usual cause.
 */
function fromList<T>(flags: ParsedFlags, name: string, parse: (text: string) => T): T[] {
  return flags.list(name).map((text) => {
    try {
      return parse(text);
    } catch (error) {
      const label = flags.label(name);
      if (!(error instanceof UsageError) || label.startsWith("--")) throw error;
      throw new UsageError(
        `${error.message} (from ${label}, which is split on spaces; quote a value that has ` +
          `spaces: ${label}='"8000=my lab/web"')`,
      );
    }
  });
}

/**
 * Parses `--forward [BIND_HOST:]PORT=PEER[/SERVICE]`.
 * @throws {UsageError} on a malformed value
 */
export function parseForward(text: string): ForwardSpec {
  const eq = text.indexOf("=");
  if (eq < 0) {
    throw new UsageError(
      `Invalid --forward ${JSON.stringify(text)}: expected [BIND_HOST:]PORT=PEER[/SERVICE]`,
    );
  }
  const local = text.slice(0, eq);
  const { hostname, port } = /^\d+$/.test(local)
    ? { hostname: "127.0.0.1", port: parsePort(local, "--forward port") }
    : parseHostPort(local, "--forward listen address");
  const { peer, service } = parsePeerService(text.slice(eq + 1), "--forward");
  return { hostname, port, peer, service };
}

/**
 * Parses `PEER[/SERVICE]`. Tunnel names cannot contain `/` (see {@linkcode checkTunnelName}),
 * so the first `/` ends the peer name.
 * @throws {UsageError} on a bad peer name or service
 */
export function parsePeerService(text: string, flag: string): { peer: string; service: string } {
  const slash = text.indexOf("/");
  const peer = slash < 0 ? text : text.slice(0, slash);
  const service = slash < 0 ? DEFAULT_SERVICE : text.slice(slash + 1);
  if (peer === "") throw new UsageError(`Invalid ${flag} ${JSON.stringify(text)}: no peer name`);
  checkName(peer, `${flag} ${JSON.stringify(text)}: peer`);
  checkService(service, flag, text);
  return { peer, service };
}

/**
 * Checks a tunnel name (`--name`, a peer in `--allow`): a relay name without `/`, which
 * separates peer and service in PEER/SERVICE, or `,`, which separates `--allow` entries, so
 * that every name a tunnel registers can be reached and allowed by another tunnel.
 * @throws {UsageError} naming the flag and the character
 */
export function checkTunnelName(name: string, flag: string): void {
  checkName(name, flag);
  const bad = /[/,]/.exec(name);
  if (bad) {
    throw new UsageError(
      `Invalid ${flag} ${JSON.stringify(name)}: a tunnel name cannot contain '${bad[0]}' ` +
        "(peers address tunnels as NAME/SERVICE and list them as NAME,NAME)",
    );
  }
}

function checkService(service: string, flag: string, text: string): void {
  const bytes = new TextEncoder().encode(service).length;
  if (bytes === 0 || bytes > 255 || /[\s/=]/.test(service)) {
    throw new UsageError(
      `Invalid ${flag} ${
        JSON.stringify(text)
      }: a service name is 1-255 bytes without spaces, '/' or '='`,
    );
  }
}

/** Runs `relay tunnel` with `args`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  // Installed first, so that a Ctrl-C at any moment of start-up still exits 0.
  using signal = onShutdownSignal();
  const relay = flags.string("relay");
  if (relay === undefined) throw new UsageError("Missing --relay HOST:PORT");
  const expose = new Map<string, Target>();
  for (const { service, target, text } of fromList(flags, "expose", parseExposeText)) {
    if (expose.has(service)) {
      throw new UsageError(`Invalid --expose ${JSON.stringify(text)}: service ${service} twice`);
    }
    expose.set(service, target);
  }
  const forwards = fromList(flags, "forward", parseForward);
  const allow = flags.list("allow").flatMap((a) => a.split(",")).map((a) => a.trim())
    .filter(Boolean);
  for (const a of allow) checkTunnelName(a, flags.label("allow"));
  const stdioText = flags.string("stdio");
  const stdio = stdioText === undefined ? undefined : parsePeerService(stdioText, "--stdio");
  if (expose.size === 0 && forwards.length === 0 && !stdio) {
    throw new UsageError("Nothing to do: give --expose, --forward or --stdio");
  }
  let name = flags.string("name");
  if (name === undefined) {
    if (expose.size > 0) throw new UsageError("Missing --name NAME (peers reach --expose by it)");
    name = `tunnel-${crypto.randomUUID().slice(0, 8)}`;
  }
  checkTunnelName(name, flags.label("name"));
  const windowBytes = flags.size("window")!;
  if (windowBytes < INITIAL_WINDOW_BYTES || windowBytes > MAX_WINDOW_BYTES) {
    throw new UsageError(
      `Invalid ${flags.label("window")}: ${windowBytes} bytes is not from 64KiB to 2GiB`,
    );
  }
  const openTimeoutMs = flags.duration("open-timeout")!;
  const secret = await readSecret(flags.string("secret-file"));
  const client = await clientOptions(flags, relay, name);
  await setupLogging({
    level: flags.string("log-level") ?? (stdio ? "warning" : "info"),
    format: flags.string("log-format"),
    labels: { level: flags.label("log-level"), format: flags.label("log-format") },
  });
  const log = getLogger(["relay", "tunnel"]);
  if (secret === undefined) {
    log.info("No --secret-file: tunnel frames cross the relay unencrypted");
  } else {
    // Which AES-GCM is in use: WebCrypto's is several times slower (see lib/tunnel/aead.ts).
    const aead = await selectAead();
    log.info("End-to-end encryption: AES-256-GCM with {engine}", {
      engine: aead.name === "openssl"
        ? "OpenSSL"
        : "WebCrypto (OpenSSL's libcrypto 3 is faster: it needs --allow-ffi)",
    });
  }
  const keepaliveMs = client.keepaliveMs ?? KEEPALIVE_MS;
  const link = relayLinkFactory(client);
  await using tunnel = new Tunnel({
    // The retry log then says what one-shot commands say: "add --tls", "not trusted: --ca".
    connect: (signal) =>
      link(signal).catch((error) => Promise.reject(explainConnectError(error, client))),
    expose,
    allow,
    windowBytes,
    openTimeoutMs,
    keepaliveMs: keepaliveMs > 0 ? keepaliveMs : undefined,
    cipher: secret ? createCipherFactory(secret) : undefined,
  });
  for (const [service, target] of expose) {
    log.info("Exposing {service} as {target}", {
      service,
      target: `${target.hostname}:${target.port}`,
    });
  }
  for (const f of forwards) {
    try {
      tunnel.forward(f);
    } catch (error) {
      // A port in use is a runtime failure (exit 1), not bad usage.
      throw new Error(
        `Cannot listen for --forward on ${f.hostname}:${f.port}: ${describeError(error)}`,
      );
    }
  }
  const stopped = new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
  if (stdio) {
    const result = await Promise.race([
      tunnel.stdio(stdio.peer, stdio.service).then((reason) => ({ reason }), (error: Error) => ({
        reason: error.message,
      })),
      stopped.then(() => ({ reason: undefined })),
    ]);
    if (result.reason !== undefined) {
      console.error(`relay tunnel: ${result.reason}`);
      return 1;
    }
    return 0;
  }
  // A refusal that retrying cannot fix (a wrong token, a name another client holds) ends
  // the tunnel with its reason; transient failures are retried until a signal.
  const failure = await Promise.race([stopped.then(() => undefined), tunnel.done]);
  if (failure) {
    console.error(`relay tunnel: ${failure.message}`);
    return 1;
  }
  log.info("Shutting down");
  return 0;
}
