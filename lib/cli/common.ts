/**
 * Pieces shared by the commands: the logging and client flag tables, help and parsing,
 * client options (TLS, tokens), shutdown signals, reading input, showing bytes.
 * @module
 */

import { RegistrationError, RelayClient, type RelayClientOptions } from "../client/client.ts";
import { parseHostPort, UsageError } from "./flags.ts";
import {
  type CommandSpec,
  type Flag,
  helpText,
  type ParsedFlags,
  parseFlags,
} from "./flag_table.ts";
import { KEEPALIVE_MS, MAX_TOKEN_BYTES } from "../limits.ts";
import { LOG_LEVELS, setupLogging } from "./log.ts";
import { encodeName } from "../wire/relay.ts";
import { concat } from "../util/bytes.ts";
import { formatDuration } from "./flags.ts";

/** `-h, --help`, in every command. */
export const HELP_FLAG: Flag = {
  name: "help",
  short: "h",
  type: "boolean",
  help: "show this help",
  group: "Logging and help",
};

/** `--log-level` and `--log-format` with `default` as the level, then `--help`. */
export function logFlags(level: string, levelText?: string): Flag[] {
  return [
    {
      name: "log-level",
      env: "RELAY_LOG_LEVEL",
      type: "choice",
      value: "LEVEL",
      choices: LOG_LEVELS,
      default: level,
      defaultText: levelText,
      help: `${LOG_LEVELS.join(", ")}`,
      group: "Logging and help",
    },
    {
      name: "log-format",
      env: "RELAY_LOG_FORMAT",
      type: "choice",
      choices: ["text", "json"],
      default: "text",
      help: "log line format; json for log collectors",
      group: "Logging and help",
    },
    HELP_FLAG,
  ];
}

/** Default time to connect and register from the command line. */
export const CONNECT_TIMEOUT_MS = 10_000;

/** Flags of every relay client command (connect, send, listen, who, tunnel), before logging. */
export const CLIENT_FLAGS: readonly Flag[] = [
  {
    name: "keepalive",
    env: "RELAY_KEEPALIVE",
    type: "duration",
    default: formatDuration(KEEPALIVE_MS),
    zeroIsOff: true,
    help: "keepalive interval",
    group: "Connection",
  },
  {
    name: "timeout",
    env: "RELAY_CONNECT_TIMEOUT",
    type: "duration",
    default: formatDuration(CONNECT_TIMEOUT_MS),
    help: "time to connect and register",
    group: "Connection",
  },
  {
    name: "token-file",
    env: "RELAY_TOKEN_FILE",
    type: "string",
    value: "FILE",
    help: "read the token of an owned name from FILE (first line)",
    group: "Connection",
  },
  {
    name: "token",
    env: "RELAY_TOKEN",
    type: "string",
    value: "TOKEN",
    help: "token of an owned name; prefer --token-file, which stays out of the process list",
    group: "Connection",
  },
  {
    name: "tls",
    env: "RELAY_TLS",
    type: "boolean",
    help: "connect over TLS",
    group: "Connection",
  },
  {
    name: "ca",
    env: "RELAY_CA",
    type: "string",
    value: "FILE",
    help: "trust this certificate (PEM) for TLS, e.g. one from 'relay cert'; implies --tls",
    group: "Connection",
  },
];

/** Client flags plus logging at `warning`: the table of connect, send, listen and who. */
export const CLIENT_COMMAND_FLAGS: readonly Flag[] = [...CLIENT_FLAGS, ...logFlags("warning")];

/**
 * Prints the help of `spec` and returns `undefined` when the arguments ask for it; otherwise
 * parses them against its flags.
 * @throws {UsageError} on a bad flag or argument count
 */
export function parseCommand(args: string[], spec: CommandSpec): ParsedFlags | undefined {
  if (wantsHelp(args)) {
    console.log(helpText(spec));
    return undefined;
  }
  return parseFlags(args, spec.flags, spec.positionals ?? { max: 0 });
}

/** Whether the arguments ask for help (checked before anything else is parsed). */
export function wantsHelp(args: string[]): boolean {
  const end = args.indexOf("--");
  const flags = end < 0 ? args : args.slice(0, end);
  return flags.includes("--help") || flags.includes("-h");
}

/**
 * An AbortSignal that fires on the first SIGINT or SIGTERM (SIGINT only on Windows, which
 * has no SIGTERM). The handlers stay installed, so a second Ctrl-C while shutting down does
 * not kill the process with 130 either; `dispose()` removes them.
 */
export function onShutdownSignal(): AbortSignal & Disposable {
  const controller = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT", "SIGBREAK"]
    : ["SIGINT", "SIGTERM"];
  const handler = () => controller.abort();
  for (const s of signals) Deno.addSignalListener(s, handler);
  return Object.assign(controller.signal, {
    [Symbol.dispose]() {
      for (const s of signals) Deno.removeSignalListener(s, handler);
    },
  });
}

/**
 * Connects a client for a command, with `stop` (the shutdown signal) aborting the attempt.
 * @returns the client, or `undefined` when `stop` fired first (the command then exits 0)
 */
export async function connectUnlessStopped(
  options: RelayClientOptions,
  stop: AbortSignal,
): Promise<RelayClient | undefined> {
  try {
    return await RelayClient.connect({ ...options, signal: stop });
  } catch (error) {
    if (stop.aborted) return undefined;
    throw explainConnectError(error, options);
  }
}

/**
 * Connects a client for a one-shot command (send, who).
 * @throws {Error} with a hint for the usual TLS mistakes
 */
export async function connectClient(options: RelayClientOptions): Promise<RelayClient> {
  try {
    return await RelayClient.connect(options);
  } catch (error) {
    throw explainConnectError(error, options);
  }
}

/**
 * Adds what to do to the errors people meet first: plaintext to a TLS port, a certificate the
 * client does not trust, a certificate marked CA:TRUE or for another name.
 */
export function explainConnectError(error: unknown, options: RelayClientOptions): unknown {
  if (!(error instanceof Error)) return error;
  const text = error.message;
  const host = options.host ?? "127.0.0.1";
  if (isConnectFailure(error)) {
    // The socket's own words name neither the host nor the port.
    const failed = new Error(
      `Cannot connect to ${formatAddress(host, options.port ?? 8080)}: ${describeError(error)}`,
    );
    failed.name = error.name;
    return failed;
  }
  let hint: string | undefined;
  if (error instanceof RegistrationError && error.reason === "tls_port") {
    hint = "add --tls, and --ca FILE for its certificate";
  } else if (
    !options.tls && /does not speak the control channel|closed .*before answering/.test(text)
  ) {
    hint = "if the relay serves TLS on this port, add --tls, and --ca FILE for its certificate";
  } else if (/UnknownIssuer/.test(text)) {
    hint = "the relay's certificate is not trusted: give it (or its CA) with --ca FILE";
  } else if (/CaUsedAsEndEntity/.test(text)) {
    hint = "the relay's certificate is marked CA:TRUE; make one with 'relay cert' " +
      "(docs/SELF_HOSTING.md has the openssl command)";
  } else if (/NotValidForName|not valid for name/.test(text)) {
    hint = `the relay's certificate is not for ${host}: connect by a name it lists, or make ` +
      `one with 'relay cert --host ${host}'`;
  } else if (
    options.tls && /InvalidContentType|corrupt message|unexpected end of file/i.test(text)
  ) {
    hint = "the relay does not seem to serve TLS on this port; try without --tls";
  }
  if (hint === undefined) return error;
  // A refusal stays a RegistrationError with its reason: the tunnel decides on it whether to retry.
  if (error instanceof RegistrationError) {
    return new RegistrationError(error.reason, `${text} (${hint})`);
  }
  const explained = new Error(`${text} (${hint})`);
  explained.name = error.name;
  return explained;
}

/** Whether `error` is a failure to reach the relay at all (refused, unreachable, no such host). */
function isConnectFailure(error: Error): boolean {
  return error instanceof Deno.errors.ConnectionRefused ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.AddrNotAvailable ||
    error instanceof Deno.errors.NetworkUnreachable ||
    /failed to lookup address information/.test(error.message);
}

/** `host:port`, with an IPv6 address in brackets. */
function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Reads a token from `--token-file` or `--token` (the file wins when both are given).
 * @throws {UsageError} when the file cannot be read or holds more than one line
 */
export async function readToken(flags: ParsedFlags): Promise<string | undefined> {
  if (flags.has("token-file")) {
    const path = flags.string("token-file")!;
    const label = flags.label("token-file");
    let text: string;
    try {
      const info = await Deno.stat(path);
      if (info.isDirectory) throw new Error("it is a directory");
      if (info.size > 64 * 1024) throw new Error(`a token is at most ${MAX_TOKEN_BYTES} bytes`);
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new UsageError(`Cannot read ${label} ${path}: ${describeError(error)}`);
    }
    const token = text.replace(/\r?\n$/, "");
    if (token.includes("\n")) {
      throw new UsageError(`Invalid ${label} ${path}: the token file has more than one line`);
    }
    if (token === "") throw new UsageError(`Invalid ${label} ${path}: the file is empty`);
    return token;
  }
  return flags.string("token");
}

/**
 * Builds {@linkcode RelayClientOptions} from parsed client flags and sets up logging.
 * @throws {UsageError} on a bad value
 */
export async function clientOptions(
  flags: ParsedFlags,
  address: string,
  name: string,
): Promise<RelayClientOptions> {
  const { hostname, port } = parseHostPort(address, "relay address");
  checkName(name, "name");
  let tls: RelayClientOptions["tls"] = flags.boolean("tls");
  if (flags.has("ca")) {
    const ca = flags.string("ca")!;
    let pem: string;
    try {
      pem = await Deno.readTextFile(ca);
    } catch (error) {
      throw new UsageError(`Cannot read ${flags.label("ca")} ${ca}: ${describeError(error)}`);
    }
    if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
      throw new UsageError(
        `Invalid ${flags.label("ca")} ${ca}: no PEM certificate in it ` +
          `(expected "-----BEGIN CERTIFICATE-----", as in the cert.pem of 'relay cert')`,
      );
    }
    tls = { caCerts: [pem] };
  }
  await setupLogging({
    level: flags.string("log-level"),
    format: flags.string("log-format"),
    labels: { level: flags.label("log-level"), format: flags.label("log-format") },
  });
  return {
    host: hostname,
    port,
    name,
    token: await readToken(flags),
    tls,
    keepaliveMs: flags.duration("keepalive"),
    connectTimeoutMs: flags.duration("timeout"),
  };
}

/**
 * Checks a relay name given on the command line.
 * @param what how to name it in the error (`name`, `--to`)
 * @throws {UsageError} when it is not a valid relay name
 */
export function checkName(name: string, what: string): Uint8Array {
  try {
    return encodeName(name);
  } catch (error) {
    // The codec's message repeats the name ("Invalid name \"\": Name is empty"): keep the why.
    const message = (error as Error).message;
    const prefix = `Invalid name ${JSON.stringify(name)}: `;
    const why = message.startsWith(prefix) ? message.slice(prefix.length) : message;
    throw new UsageError(
      `Invalid ${what} ${JSON.stringify(name)}: ${
        why.replace(/^[A-Z][a-z]/, (s) => s.toLowerCase())
      }`,
    );
  }
}

/** An error's message in the words a person reads: `address already in use`. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // Deno writes "No such file or directory (os error 2): stat '/x'": the path is in our own
  // message already, and the error number means nothing to a person.
  return error.message.replace(/ \(os error \d+\)/, "").replace(/: [a-z]+ '[^']*'$/, "")
    .replace(/^[A-Z][a-z]/, (s) => s.toLowerCase());
}

/**
 * Checks that `path` is a file that can be read, before anything else is done with it.
 * @throws {UsageError} naming the path and what is wrong
 */
export async function checkReadable(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    throw new UsageError(`Cannot read ${path}: ${describeError(error)}`);
  }
  if (info.isDirectory) throw new UsageError(`Cannot send ${path}: it is a directory, not a file`);
}

/**
 * Reads all of stdin (`-`) or a file, refusing more than `limit` bytes.
 * @param what names the limit in the error
 * @throws {UsageError} when the input is larger than `limit` or cannot be read
 */
export async function readAllLimited(
  path: string,
  limit: number,
  what = "the message limit",
): Promise<Uint8Array> {
  let file: Deno.FsFile | undefined;
  if (path !== "-") {
    await checkReadable(path);
    try {
      file = await Deno.open(path);
    } catch (error) {
      throw new UsageError(`Cannot read ${path}: ${describeError(error)}`);
    }
  }
  const readable = file ? file.readable : Deno.stdin.readable;
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of readable) {
    total += chunk.length;
    if (total > limit) {
      await readable.cancel().catch(() => {});
      throw new UsageError(
        `${path === "-" ? "Input" : path} is larger than ${what} of ${limit} bytes`,
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
