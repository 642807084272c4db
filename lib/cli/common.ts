/**
 * Pieces shared by the commands: logging flags, help detection, shutdown signals.
 * @module
 */

import type { RelayClientOptions } from "../client/client.ts";
import {
  durationFlag,
  type FlagSpec,
  type ParsedArgs,
  parseFlags,
  parseHostPort,
  stringFlag,
  UsageError,
} from "./flags.ts";
import { KEEPALIVE_MS } from "../limits.ts";
import { setupLogging } from "./log.ts";
import { encodeName } from "../wire/relay.ts";
import { concat } from "../util/bytes.ts";

/** `--log-level` and `--log-format`, with their environment variables. */
export const LOG_FLAGS: Record<string, FlagSpec> = {
  "log-level": { type: "string", env: "RELAY_LOG_LEVEL" },
  "log-format": { type: "string", env: "RELAY_LOG_FORMAT" },
};

/**
 * Prints `help` and returns `undefined` when the arguments ask for it; otherwise parses them
 * with {@linkcode parseFlags}.
 * @throws {UsageError} on a bad flag or argument count
 */
export function parseCommand(
  args: string[],
  help: string,
  flags: Record<string, FlagSpec>,
  positionals?: { min?: number; max?: number },
): ParsedArgs | undefined {
  if (wantsHelp(args)) {
    console.log(help);
    return undefined;
  }
  return parseFlags(args, flags, positionals);
}

/** Whether the arguments ask for help (checked before anything else is parsed). */
export function wantsHelp(args: string[]): boolean {
  return args.includes("--help") || args.includes("-h");
}

/**
 * An AbortSignal that fires on the first SIGINT or SIGTERM (SIGINT only on Windows, which
 * has no SIGTERM). The handlers are removed when it fires.
 */
export function onShutdownSignal(): AbortSignal {
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT", "SIGBREAK"]
    : ["SIGINT", "SIGTERM"];
  const handler = () => {
    for (const s of signals) Deno.removeSignalListener(s, handler);
    controller.abort();
  };
  for (const s of signals) Deno.addSignalListener(s, handler);
  return controller.signal;
}

/** Flags every client command takes (connect, send, listen). */
export const CLIENT_FLAGS: Record<string, FlagSpec> = {
  keepalive: { type: "string", env: "RELAY_KEEPALIVE" },
  timeout: { type: "string", env: "RELAY_CONNECT_TIMEOUT" },
  token: { type: "string", env: "RELAY_TOKEN" },
  tls: { type: "boolean", env: "RELAY_TLS" },
  ca: { type: "string", env: "RELAY_CA" },
  ...LOG_FLAGS,
  help: { type: "boolean", short: "h" },
};

/** Help lines for {@linkcode CLIENT_FLAGS}. */
export const CLIENT_FLAGS_HELP =
  `  --keepalive DUR           keepalive interval, 0 for none (RELAY_KEEPALIVE) [10s]
  --timeout DUR             time to connect and register (RELAY_CONNECT_TIMEOUT) [10s]
  --token TOKEN             token of an owned name (RELAY_TOKEN)
  --tls                     connect over TLS (RELAY_TLS)
  --ca FILE                 trust this CA certificate (PEM) for TLS (RELAY_CA)
  --log-level LEVEL         trace, debug, info, warning, error (RELAY_LOG_LEVEL) [warning]
  --log-format text|json    log line format (RELAY_LOG_FORMAT) [text]
  -h, --help                show this help`;

/**
 * Builds {@linkcode RelayClientOptions} from parsed client flags.
 * @throws {UsageError} on a bad value
 */
export async function clientOptions(
  values: ParsedArgs["values"],
  address: string,
  name: string,
): Promise<RelayClientOptions> {
  const { hostname, port } = parseHostPort(address, "relay address");
  encodeNameOrUsage(name);
  const ca = stringFlag(values, "ca");
  let tls: RelayClientOptions["tls"] = values.tls === true;
  if (ca !== undefined) {
    try {
      tls = { caCerts: [await Deno.readTextFile(ca)] };
    } catch (error) {
      throw new UsageError(`Cannot read --ca ${ca}: ${(error as Error).message}`);
    }
  }
  await setupLogging({
    level: stringFlag(values, "log-level") ?? "warning",
    format: stringFlag(values, "log-format"),
  });
  return {
    host: hostname,
    port,
    name,
    token: stringFlag(values, "token"),
    tls,
    keepaliveMs: durationFlag(values, "keepalive", KEEPALIVE_MS),
    connectTimeoutMs: durationFlag(values, "timeout", CONNECT_TIMEOUT_MS),
  };
}

/** Default time to connect and register from the command line. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Checks a name given on the command line.
 * @throws {UsageError} when it is not a valid relay name
 */
export function encodeNameOrUsage(name: string): Uint8Array {
  try {
    return encodeName(name);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Reads all of stdin or a file, refusing more than `limit` bytes. */
export async function readAllLimited(path: string, limit: number): Promise<Uint8Array> {
  let file: Deno.FsFile | undefined;
  try {
    file = path === "-" ? undefined : await Deno.open(path);
  } catch (error) {
    throw new UsageError(`Cannot read ${path}: ${(error as Error).message}`);
  }
  const readable = file ? file.readable : Deno.stdin.readable;
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of readable) {
    total += chunk.length;
    if (total > limit) {
      await readable.cancel().catch(() => {});
      throw new UsageError(
        `${path === "-" ? "Input" : path} is larger than the message limit of ${limit} bytes`,
      );
    }
    parts.push(chunk);
  }
  return concat(parts);
}

const printable = new TextDecoder("utf-8", { fatal: true });

/**
 * Shows bytes safely on a terminal: UTF-8 text with control characters escaped as `\xNN`
 * (tab kept); anything that is not UTF-8 as `<N bytes: hex…>`.
 */
export function showBytes(bytes: Uint8Array): string {
  let text: string;
  try {
    text = printable.decode(bytes);
  } catch {
    const hex = Array.from(bytes.subarray(0, 32), (b) => b.toString(16).padStart(2, "0"))
      .join(" ");
    return `<${bytes.length} bytes: ${hex}${bytes.length > 32 ? " …" : ""}>`;
  }
  return text.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x08\x0a-\x1f\x7f\u0080-\u009f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}
