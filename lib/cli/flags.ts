/**
 * Command-line parsing shared by every command: flags with `RELAY_*` environment fallbacks,
 * durations (`3s`, `500ms`, `2m`, plain seconds), sizes (`16MiB`, `64KiB`, bytes) and
 * `HOST:PORT` addresses. Bad input throws {@linkcode UsageError}, which `main.ts` prints as one
 * line and turns into exit code 2.
 * @module
 */

import { parseArgs } from "node:util";

/** A bad flag, value or argument on the command line. */
export class UsageError extends Error {
  /** @param message one line naming the flag or argument */
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

/**
 * Parses a duration: `500ms`, `3s`, `2m`, `1h`, or plain (possibly fractional) seconds.
 * @param text the value
 * @param what the flag it came from, for the error message
 * @returns milliseconds
 * @throws {UsageError} on anything else
 */
export function parseDuration(text: string, what: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) {
    throw new UsageError(
      `Invalid ${what} ${JSON.stringify(text)}: expected a duration like 500ms, 3s, 2m or seconds`,
    );
  }
  return Math.round(Number(match[1]) * DURATION_UNITS_MS[match[2] ?? "s"]);
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
 * @param what the flag it came from, for the error message
 * @returns bytes
 * @throws {UsageError} on anything else
 */
export function parseSize(text: string, what: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
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

/**
 * Parses a TCP port number (0 picks a free port).
 * @throws {UsageError} when it is not an integer from 0 to 65535
 */
export function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) {
    throw new UsageError(
      `Invalid ${what} ${JSON.stringify(text)}: expected a port from 0 to 65535`,
    );
  }
  return Number(text);
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
 * @throws {UsageError} on anything else
 */
export function parseHostPort(text: string, what: string, defaultHost = "127.0.0.1"): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:\s]*)):(\d+)$/.exec(text);
  if (!match) {
    throw new UsageError(`Invalid ${what} ${JSON.stringify(text)}: expected HOST:PORT`);
  }
  const hostname = match[1] ?? (match[2] || defaultHost);
  return { hostname, port: parsePort(match[3], what) };
}

/** One flag of a command. */
export interface FlagSpec {
  /** Whether the flag takes a value. */
  type: "string" | "boolean";
  /** One-letter alias. */
  short?: string;
  /** May be given more than once (values collect in an array). */
  multiple?: boolean;
  /** Environment variable read when the flag is absent. */
  env?: string;
}

/** Parsed flags and positional arguments. */
export interface ParsedArgs {
  /** Flag values by name; env fallbacks already applied. */
  values: Record<string, string | boolean | string[] | undefined>;
  /** Arguments that are not flags. */
  positionals: string[];
}

/**
 * Parses `args` with `node:util` parseArgs (strict), then fills absent flags from their
 * environment variables (the flag wins).
 * @throws {UsageError} on an unknown flag, a missing value or a wrong number of arguments
 */
export function parseFlags(
  args: string[],
  specs: Record<string, FlagSpec>,
  positionals: { min?: number; max?: number } = { max: 0 },
): ParsedArgs {
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = { type: spec.type, multiple: spec.multiple ?? false };
    if (spec.short) options[name].short = spec.short;
  }
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(oneLine(error instanceof Error ? error.message : String(error)));
  }
  const values = parsed.values as ParsedArgs["values"];
  for (const [name, spec] of Object.entries(specs)) {
    if (values[name] !== undefined || !spec.env) continue;
    const fromEnv = readEnv(spec.env);
    if (fromEnv === undefined || fromEnv === "") continue;
    if (spec.type === "boolean") values[name] = /^(1|true|yes|on)$/i.test(fromEnv);
    else values[name] = spec.multiple ? fromEnv.split(/\s+/).filter(Boolean) : fromEnv;
  }
  const count = parsed.positionals.length;
  if (positionals.min !== undefined && count < positionals.min) {
    throw new UsageError(`Missing argument: expected at least ${positionals.min}, got ${count}`);
  }
  if (positionals.max !== undefined && count > positionals.max) {
    throw new UsageError(
      `Unexpected argument ${JSON.stringify(parsed.positionals[positionals.max])}`,
    );
  }
  return { values, positionals: parsed.positionals };
}

/** Reads an environment variable; `undefined` when unset or not permitted. */
export function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function oneLine(text: string): string {
  return text.split("\n")[0].split(". ")[0].replace(/\.$/, "");
}

/** A string flag's value, or `undefined`. */
export function stringFlag(values: ParsedArgs["values"], name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

/** A repeatable string flag's values (empty when absent). */
export function listFlag(values: ParsedArgs["values"], name: string): string[] {
  const v = values[name];
  if (Array.isArray(v)) return v;
  return typeof v === "string" ? [v] : [];
}

/** Parses an optional duration flag, or returns `fallback`. */
export function durationFlag(values: ParsedArgs["values"], name: string, fallback: number): number {
  const v = stringFlag(values, name);
  return v === undefined ? fallback : parseDuration(v, `--${name}`);
}

/** Parses an optional size flag, or returns `fallback`. */
export function sizeFlag(values: ParsedArgs["values"], name: string, fallback: number): number {
  const v = stringFlag(values, name);
  return v === undefined ? fallback : parseSize(v, `--${name}`);
}

/** Parses an optional flag that must be one of `choices`, or returns `fallback`. */
export function choiceFlag<T extends string>(
  values: ParsedArgs["values"],
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const v = stringFlag(values, name);
  if (v === undefined) return fallback;
  if (!(choices as readonly string[]).includes(v)) {
    throw new UsageError(
      `Invalid --${name} ${JSON.stringify(v)}: expected one of ${choices.join(", ")}`,
    );
  }
  return v as T;
}

/** Parses an optional non-negative integer flag, or returns `fallback`. */
export function integerFlag(values: ParsedArgs["values"], name: string, fallback: number): number {
  const v = stringFlag(values, name);
  if (v === undefined) return fallback;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) {
    throw new UsageError(`Invalid --${name} ${JSON.stringify(v)}: expected a whole number`);
  }
  return Number(v);
}
