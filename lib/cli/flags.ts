/**
 * Values on the command line: durations (`3s`, `500ms`, `2m30s`, plain seconds), sizes
 * (`16MiB`, `64KiB`, bytes), ports, hosts and `HOST:PORT` addresses. Bad input throws
 * {@linkcode UsageError}, which `main.ts` prints as one line and turns into exit code 2.
 * The flag tables and their parser are in `flag_table.ts`.
 * @module
 */

/** A bad flag, value or argument on the command line (exit code 2). */
export class UsageError extends Error {
  /** @param message one line naming the flag, variable or argument */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

const DURATION_UNITS_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|h|m|s)/y;

/**
 * Parses a duration: `500ms`, `3s`, `2m`, `1h`, a sum such as `2m30s` or `1h30m`, or plain
 * (possibly fractional) seconds.
 * @param text the value
 * @param what the flag or variable it came from, for the error message
 * @returns milliseconds
 * @throws {UsageError} on anything else, naming `what`
 */
export function parseDuration(text: string, what: string): number {
  const value = text.trim();
  if (value.startsWith("-")) {
    throw new UsageError(`Invalid ${what} ${JSON.stringify(text)}: a duration cannot be negative`);
  }
  if (/^\d+(?:\.\d+)?$/.test(value)) return Math.round(Number(value) * 1_000);
  let total = 0;
  let at = 0;
  DURATION_PART.lastIndex = 0;
  while (at < value.length) {
    DURATION_PART.lastIndex = at;
    const match = DURATION_PART.exec(value);
    if (!match) break;
    total += Number(match[1]) * DURATION_UNITS_MS[match[2]];
    at = DURATION_PART.lastIndex;
  }
  if (value === "" || at !== value.length) {
    throw new UsageError(
      `Invalid ${what} ${
        JSON.stringify(text)
      }: expected a duration like 500ms, 3s, 2m30s or plain seconds`,
    );
  }
  return Math.round(total);
}

/** Formats milliseconds the way {@linkcode parseDuration} reads them (`30s`, `2m30s`, `500ms`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0";
  if (ms % 1_000 !== 0) return `${ms}ms`;
  let s = ms / 1_000;
  let out = "";
  for (const [unit, size] of [["h", 3600], ["m", 60]] as const) {
    if (s >= size) {
      out += `${Math.floor(s / size)}${unit}`;
      s %= size;
    }
  }
  return s > 0 || out === "" ? `${out}${s}s` : out;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1_000,
  mb: 1_000_000,
  gb: 1_000_000_000,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
};

/**
 * Parses a size: `16MiB`, `64KiB`, `1MB`, `4k` or plain bytes.
 * @param text the value
 * @param what the flag or variable it came from, for the error message
 * @returns bytes
 * @throws {UsageError} on anything else, naming `what`
 */
export function parseSize(text: string, what: string): number {
  const value = text.trim();
  if (value.startsWith("-")) {
    throw new UsageError(`Invalid ${what} ${JSON.stringify(text)}: a size cannot be negative`);
  }
  const match = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value);
  const unit = match ? SIZE_UNITS[match[2].toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new UsageError(
      `Invalid ${what} ${JSON.stringify(text)}: expected a size like 16MiB, 64KiB or bytes`,
    );
  }
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`Invalid ${what}: ${text} is too large`);
  return bytes;
}

/** Formats bytes the way {@linkcode parseSize} reads them (`16MiB`, `64KiB`, `1000`). */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return String(bytes);
}

/**
 * Parses a TCP port number (0 picks a free port).
 * @throws {UsageError} when it is not an integer from 0 to 65535, naming `what`
 */
export function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    throw new UsageError(
      `Invalid ${what} ${JSON.stringify(text)}: expected a port from 0 to 65535`,
    );
  }
  return Number(text);
}

/**
 * Checks a host to listen on or connect to: an IPv4 address (each part 0-255), an IPv6
 * address, or a DNS name.
 * @returns the host, unchanged
 * @throws {UsageError} naming `what` and the host
 */
export function parseHost(text: string, what: string): string {
  const bad = (why: string) => new UsageError(`Invalid ${what} ${JSON.stringify(text)}: ${why}`);
  if (text === "") throw bad("empty host");
  if (/^[\d.]+$/.test(text)) {
    const parts = text.split(".");
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
      throw bad("not an IPv4 address (four numbers from 0 to 255)");
    }
    return text;
  }
  if (text.includes(":")) {
    if (
      !/^[0-9a-fA-F:.]+(%\w+)?$/.test(text) || !text.includes("::") && text.split(":").length !== 8
    ) {
      throw bad("not an IPv6 address");
    }
    return text;
  }
  const labels = text.replace(/\.$/, "").split(".");
  if (
    text.length > 253 ||
    labels.some((l) => !/^[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?$/.test(l))
  ) {
    throw bad("not an IP address or host name");
  }
  return text;
}

/** A host and port. */
export interface HostPort {
  /** Host name or IP address (IPv6 without brackets). */
  hostname: string;
  /** TCP port. */
  port: number;
}

/**
 * Parses `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` (then `defaultHost`).
 * @throws {UsageError} on anything else, naming `what`
 */
export function parseHostPort(text: string, what: string, defaultHost = "127.0.0.1"): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:\s]*)):([^:]*)$/.exec(text);
  if (!match) {
    throw new UsageError(`Invalid ${what} ${JSON.stringify(text)}: expected HOST:PORT`);
  }
  const hostname = match[1] ?? (match[2] || defaultHost);
  parseHost(hostname, what);
  try {
    return { hostname, port: parsePort(match[3], "port") };
  } catch (error) {
    // "Invalid relay address "h:99999": expected a port from 0 to 65535", not the port twice.
    const why = (error as Error).message.replace(/^.*?: /, "");
    throw new UsageError(`Invalid ${what} ${JSON.stringify(text)}: ${why}`);
  }
}

/** Reads an environment variable; `undefined` when unset or not permitted. */
export function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Splits an environment list on spaces; double or single quotes keep spaces inside one value
 * (`RELAY_FORWARD='8000=lab/web "9000=my lab/ssh"'`), and a backslash escapes the next
 * character.
 * @throws {UsageError} on an unclosed quote, naming `what`
 */
export function splitList(text: string, what: string): string[] {
  const out: string[] = [];
  let current = "";
  let started = false;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && quote !== "'") {
      current += text[++i];
      started = true;
    } else if (quote) {
      if (c === quote) quote = undefined;
      else current += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      started = true;
    } else if (/\s/.test(c)) {
      if (started) out.push(current);
      current = "";
      started = false;
    } else {
      current += c;
      started = true;
    }
  }
  if (quote) throw new UsageError(`Invalid ${what}: unclosed ${quote} quote`);
  if (started) out.push(current);
  return out;
}
