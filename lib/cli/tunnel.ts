/**
 * `relay tunnel`: carries TCP services through the relay, both ways, until SIGINT/SIGTERM
 * (or, with --stdio, until the stream ends).
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  durationFlag,
  type FlagSpec,
  listFlag,
  parseFlags,
  parseHostPort,
  parsePort,
  sizeFlag,
  stringFlag,
  UsageError,
} from "./flags.ts";
import { KEEPALIVE_MS } from "../limits.ts";
import { setupLogging } from "./log.ts";
import { INITIAL_WINDOW_BYTES, MAX_WINDOW_BYTES } from "../wire/tunnel.ts";
import { createCipherFactory } from "../tunnel/crypto.ts";
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
  CLIENT_FLAGS,
  CLIENT_FLAGS_HELP,
  clientOptions,
  encodeNameOrUsage,
  onShutdownSignal,
  wantsHelp,
} from "./common.ts";

const HELP = `relay tunnel: carry TCP services (HTTP, SSH, databases) through a relay

Usage: relay tunnel --relay HOST:PORT [--name NAME] [--expose ...] [--forward ...] [--stdio ...]

Options (each also from the environment variable shown; the flag wins):
  --relay HOST:PORT         relay to connect to (RELAY_RELAY)
  --name NAME               name to register; peers reach exposed services by it (RELAY_NAME)
                            [random, when nothing is exposed]
  --expose [SERVICE=]HOST:PORT
                            let peers open streams to SERVICE, connected to HOST:PORT here;
                            repeatable; SERVICE defaults to "${DEFAULT_SERVICE}" (RELAY_EXPOSE)
  --forward [BIND_HOST:]PORT=PEER[/SERVICE]
                            listen on BIND_HOST:PORT (127.0.0.1 by default) and carry every
                            connection to PEER's SERVICE; repeatable (RELAY_FORWARD)
  --allow PEER[,PEER...]    only these peers may open streams here (RELAY_ALLOW) [any]
  --stdio PEER[/SERVICE]    one stream on stdin/stdout, then exit (SSH ProxyCommand)
  --secret-file FILE        end-to-end encrypt with the secret in FILE; both ends need the
                            same secret (RELAY_TUNNEL_SECRET_FILE, or the secret itself in
                            RELAY_TUNNEL_SECRET)
  --window SIZE             receive window per stream (RELAY_TUNNEL_WINDOW) [2MiB]
  --open-timeout DUR        time for a peer to accept a stream, and for the relay link to
                            come back for a new connection (RELAY_TUNNEL_OPEN_TIMEOUT) [10s]
${
  CLIENT_FLAGS_HELP.replace("[warning]", "[info]")
    .replace(/keepalive interval, 0 for none/, "relay keepalive, peer ping interval")
}

With --stdio the default log level is warning, so that an ssh session stays quiet.

Environment lists (RELAY_EXPOSE, RELAY_FORWARD) are separated by spaces.

Example:
  # on the lab machine
  relay tunnel --relay relay.example.com:8080 --name lab --expose web=127.0.0.1:80
  # on the laptop
  relay tunnel --relay relay.example.com:8080 --name laptop --forward 8000=lab/web
  curl http://127.0.0.1:8000/

  # SSH through the relay (~/.ssh/config)
  Host lab
    ProxyCommand relay tunnel --relay relay.example.com:8080 --stdio lab/ssh`;

const FLAGS: Record<string, FlagSpec> = {
  relay: { type: "string", env: "RELAY_RELAY" },
  name: { type: "string", env: "RELAY_NAME" },
  expose: { type: "string", multiple: true, env: "RELAY_EXPOSE" },
  forward: { type: "string", multiple: true, env: "RELAY_FORWARD" },
  allow: { type: "string", multiple: true, env: "RELAY_ALLOW" },
  stdio: { type: "string" },
  "secret-file": { type: "string", env: "RELAY_TUNNEL_SECRET_FILE" },
  window: { type: "string", env: "RELAY_TUNNEL_WINDOW" },
  "open-timeout": { type: "string", env: "RELAY_TUNNEL_OPEN_TIMEOUT" },
  ...CLIENT_FLAGS,
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
 * Parses `PEER[/SERVICE]` (the service is after the last `/`).
 * @throws {UsageError} on a bad peer name or service
 */
export function parsePeerService(text: string, flag: string): { peer: string; service: string } {
  const slash = text.lastIndexOf("/");
  const peer = slash < 0 ? text : text.slice(0, slash);
  const service = slash < 0 ? DEFAULT_SERVICE : text.slice(slash + 1);
  if (peer === "") throw new UsageError(`Invalid ${flag} ${JSON.stringify(text)}: no peer name`);
  try {
    encodeNameOrUsage(peer);
  } catch (error) {
    throw new UsageError(`Invalid ${flag} ${JSON.stringify(text)}: ${(error as Error).message}`);
  }
  checkService(service, flag, text);
  return { peer, service };
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
  if (wantsHelp(args)) {
    console.log(HELP);
    return 0;
  }
  const { values } = parseFlags(args, FLAGS);
  const relay = stringFlag(values, "relay");
  if (relay === undefined) throw new UsageError("Missing --relay HOST:PORT");
  const expose = new Map<string, Target>();
  for (const text of listFlag(values, "expose")) {
    const { service, target } = parseExpose(text);
    if (expose.has(service)) {
      throw new UsageError(`Invalid --expose ${JSON.stringify(text)}: service ${service} twice`);
    }
    expose.set(service, target);
  }
  const forwards = listFlag(values, "forward").map(parseForward);
  const allow = listFlag(values, "allow").flatMap((a) => a.split(",")).map((a) => a.trim())
    .filter(Boolean);
  for (const a of allow) {
    try {
      encodeNameOrUsage(a);
    } catch (error) {
      throw new UsageError(`Invalid --allow ${JSON.stringify(a)}: ${(error as Error).message}`);
    }
  }
  const stdioText = stringFlag(values, "stdio");
  const stdio = stdioText === undefined ? undefined : parsePeerService(stdioText, "--stdio");
  if (expose.size === 0 && forwards.length === 0 && !stdio) {
    throw new UsageError("Nothing to do: give --expose, --forward or --stdio");
  }
  let name = stringFlag(values, "name");
  if (name === undefined) {
    if (expose.size > 0) throw new UsageError("Missing --name NAME (peers reach --expose by it)");
    name = `tunnel-${crypto.randomUUID().slice(0, 8)}`;
  }
  const windowBytes = sizeFlag(values, "window", DEFAULT_WINDOW_BYTES);
  if (windowBytes < INITIAL_WINDOW_BYTES || windowBytes > MAX_WINDOW_BYTES) {
    throw new UsageError(`Invalid --window: ${windowBytes} bytes is not from 64KiB to 2GiB`);
  }
  const openTimeoutMs = durationFlag(values, "open-timeout", DEFAULT_OPEN_TIMEOUT_MS);
  const secret = await readSecret(stringFlag(values, "secret-file"));
  const client = await clientOptions(values, relay, name);
  await setupLogging({
    level: stringFlag(values, "log-level") ?? (stdio ? "warning" : "info"),
    format: stringFlag(values, "log-format"),
  });
  const log = getLogger(["relay", "tunnel"]);
  if (secret === undefined) {
    log.info("No --secret-file: tunnel frames cross the relay unencrypted");
  }
  const keepaliveMs = client.keepaliveMs ?? KEEPALIVE_MS;
  await using tunnel = new Tunnel({
    connect: relayLinkFactory(client),
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
      throw new UsageError(
        `Cannot listen for --forward on ${f.hostname}:${f.port}: ${(error as Error).message}`,
      );
    }
  }
  const signal = onShutdownSignal();
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
  await stopped;
  log.info("Shutting down");
  return 0;
}
