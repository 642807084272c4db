/**
 * One table of flags per command: each flag is declared once (name, environment variable,
 * value type, default, help line, group), and the parser, `--help` text and README tables
 * all come from that declaration.
 *
 * Parsing: `--flag value` and `--flag=value` (a value may begin with `-`: `--from -dash`),
 * `-h`, and `--` to end the flags. A flag that is absent falls back to its environment
 * variable, then to its default; a bad value names where it came from (`--port` or
 * `RELAY_PORT`).
 * @module
 */

import {
  parseDuration,
  parseHost,
  parsePort,
  parseSize,
  readEnv,
  splitList,
  UsageError,
} from "./flags.ts";

/** What a flag's value is; it decides how the value is checked and read. */
export type FlagType =
  | "boolean"
  | "string"
  | "duration"
  | "size"
  | "port"
  | "host"
  | "count"
  | "choice";

/** One flag, declared once. */
export interface Flag {
  /** Long name without the dashes: `idle-timeout`. */
  name: string;
  /** One-letter alias. */
  short?: string;
  /** Environment variable read when the flag is absent. */
  env?: string;
  /** How the value is read. */
  type: FlagType;
  /** Placeholder in the help (`DUR`, `SIZE`, `FILE`); defaults by type. */
  value?: string;
  /** The default, written as a user would type it (`30s`, `16MiB`); parsed like input. */
  default?: string;
  /** Shown instead of the default when it is not a value (`random`, `any`). */
  defaultText?: string;
  /** One help line, sentence case, no final period. */
  help: string;
  /** Heading the flag is listed under in `--help` and the README. */
  group: string;
  /** May be given more than once; the environment variable holds a space-separated list. */
  multiple?: boolean;
  /** Values a `choice` flag accepts. */
  choices?: readonly string[];
  /**
   * Whether 0 turns this timeout or limit off. Numeric flags without it refuse 0, so that no
   * value is accepted only to break everything later.
   */
  zeroIsOff?: boolean;
}

/** A command's help and flags. */
export interface CommandSpec {
  /** `relay serve`. */
  command: string;
  /** One line: what it does. */
  about: string;
  /** The usage line(s) after `Usage: `. */
  usage: string;
  /** Paragraphs between usage and the flags. */
  description?: string;
  /** The flags, in help order (groups in order of first appearance). */
  flags: readonly Flag[];
  /** Text after the flags (examples). */
  footer?: string;
  /** How many positional arguments: none unless given. */
  positionals?: { min?: number; max?: number };
}

const PLACEHOLDERS: Record<FlagType, string> = {
  boolean: "",
  string: "VALUE",
  duration: "DUR",
  size: "SIZE",
  port: "PORT",
  host: "HOST",
  count: "N",
  choice: "",
};

/** The placeholder shown after a flag in help: `DUR`, `text|json`, or nothing for a switch. */
export function placeholder(flag: Flag): string {
  if (flag.value !== undefined) return flag.value;
  if (flag.type === "choice") return (flag.choices ?? []).join("|");
  return PLACEHOLDERS[flag.type];
}

/** Where a value came from: the flag as typed or its variable, for error messages. */
type Source = { value: string | boolean | string[]; label: string };

/** Parsed command line: typed getters that apply the environment and the declared default. */
export class ParsedFlags {
  /** Arguments that are not flags. */
  readonly positionals: string[];
  readonly #flags: Map<string, Flag>;
  readonly #given: Map<string, Source>;

  /** @internal Built by {@linkcode parseFlags}. */
  constructor(flags: Map<string, Flag>, given: Map<string, Source>, positionals: string[]) {
    this.#flags = flags;
    this.#given = given;
    this.positionals = positionals;
  }

  #flag(name: string): Flag {
    const flag = this.#flags.get(name);
    if (!flag) throw new Error(`Flag --${name} is not declared`);
    return flag;
  }

  /** Whether the flag was given on the command line or in its variable. */
  has(name: string): boolean {
    this.#flag(name);
    return this.#given.has(name);
  }

  /** `--name`, or the variable's name when the value came from there. */
  label(name: string): string {
    return this.#given.get(name)?.label ?? `--${name}`;
  }

  #text(name: string): { text: string; label: string } | undefined {
    const flag = this.#flag(name);
    const given = this.#given.get(name);
    if (given !== undefined) return { text: String(given.value), label: given.label };
    return flag.default === undefined ? undefined : { text: flag.default, label: `--${name}` };
  }

  /** A string flag's value (or default), or `undefined`. */
  string(name: string): string | undefined {
    return this.#text(name)?.text;
  }

  /** A switch: given, from a variable that says yes, or its default. */
  boolean(name: string): boolean {
    const given = this.#given.get(name);
    if (given !== undefined) return given.value === true;
    return this.#flag(name).default === "true";
  }

  /** A repeatable flag's values (empty when absent). */
  list(name: string): string[] {
    const given = this.#given.get(name)?.value;
    if (Array.isArray(given)) return given;
    return typeof given === "string" ? [given] : [];
  }

  /** A duration in milliseconds, checked against the zero rule. */
  duration(name: string): number | undefined {
    const t = this.#text(name);
    return t === undefined ? undefined : this.#zero(name, parseDuration(t.text, t.label), t);
  }

  /** A size in bytes, checked against the zero rule. */
  size(name: string): number | undefined {
    const t = this.#text(name);
    return t === undefined ? undefined : this.#zero(name, parseSize(t.text, t.label), t);
  }

  /** A whole number, checked against the zero rule. */
  count(name: string): number | undefined {
    const t = this.#text(name);
    if (t === undefined) return undefined;
    if (!/^\d+$/.test(t.text) || !Number.isSafeInteger(Number(t.text))) {
      throw new UsageError(
        `Invalid ${t.label} ${JSON.stringify(t.text)}: expected a whole number`,
      );
    }
    return this.#zero(name, Number(t.text), t);
  }

  /** A TCP port (0: any free port). */
  port(name: string): number | undefined {
    const t = this.#text(name);
    return t === undefined ? undefined : parsePort(t.text, t.label);
  }

  /** A host name or IP address. */
  host(name: string): string | undefined {
    const t = this.#text(name);
    return t === undefined ? undefined : parseHost(t.text, t.label);
  }

  /** One of the declared choices. */
  choice<T extends string>(name: string): T | undefined {
    const t = this.#text(name);
    if (t === undefined) return undefined;
    const choices = this.#flag(name).choices ?? [];
    if (!choices.includes(t.text)) {
      throw new UsageError(
        `Invalid ${t.label} ${JSON.stringify(t.text)}: expected one of ${choices.join(", ")}`,
      );
    }
    return t.text as T;
  }

  #zero(name: string, value: number, t: { text: string; label: string }): number {
    if (value === 0 && !this.#flag(name).zeroIsOff) {
      throw new UsageError(
        `Invalid ${t.label} ${JSON.stringify(t.text)}: must be above 0 (${name} cannot be off)`,
      );
    }
    return value;
  }
}

const YES = /^(1|true|yes|on)$/i;
const NO = /^(0|false|no|off)$/i;

/**
 * Parses `args` against `flags`, then fills absent flags from their environment variables.
 * @throws {UsageError} on an unknown flag, a missing value, a bad switch variable or a wrong
 * number of positional arguments
 */
export function parseFlags(
  args: readonly string[],
  flags: readonly Flag[],
  positionals: { min?: number; max?: number } = { max: 0 },
): ParsedFlags {
  const byName = new Map(flags.map((f) => [f.name, f]));
  const byShort = new Map(flags.filter((f) => f.short).map((f) => [f.short!, f]));
  const given = new Map<string, Source>();
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      rest.push(...args.slice(i + 1));
      break;
    }
    if (arg === "-" || !arg.startsWith("-")) {
      rest.push(arg);
      continue;
    }
    const long = arg.startsWith("--");
    const eq = arg.indexOf("=");
    const key = long
      ? arg.slice(2, eq < 0 ? undefined : eq)
      : arg.slice(1, eq < 0 ? undefined : eq);
    const flag = long ? byName.get(key) : byShort.get(key);
    const typed = long ? `--${key}` : `-${key}`;
    if (!flag) {
      throw new UsageError(
        /^-\d/.test(arg)
          ? `Unexpected argument ${JSON.stringify(arg)} (put -- before arguments that begin with -)`
          : `Unknown option ${JSON.stringify(typed)}`,
      );
    }
    let value: string | boolean;
    if (flag.type === "boolean") {
      if (eq < 0) value = true;
      else {
        const text = arg.slice(eq + 1);
        if (!YES.test(text) && !NO.test(text)) {
          throw new UsageError(`Invalid ${typed} ${JSON.stringify(text)}: expected true or false`);
        }
        value = YES.test(text);
      }
    } else if (eq >= 0) {
      value = arg.slice(eq + 1);
    } else {
      if (i + 1 >= args.length) {
        throw new UsageError(
          `Missing value for ${typed} (expected ${placeholder(flag) || "a value"})`,
        );
      }
      value = args[++i];
    }
    const label = `--${flag.name}`;
    if (flag.multiple) {
      const before = given.get(flag.name)?.value;
      given.set(flag.name, {
        value: [...(Array.isArray(before) ? before : []), String(value)],
        label,
      });
    } else {
      given.set(flag.name, { value, label });
    }
  }
  for (const flag of flags) {
    if (given.has(flag.name) || !flag.env) continue;
    const fromEnv = readEnv(flag.env);
    if (fromEnv === undefined || fromEnv === "") continue;
    let value: string | boolean | string[] = fromEnv;
    if (flag.type === "boolean") {
      if (!YES.test(fromEnv) && !NO.test(fromEnv)) {
        throw new UsageError(
          `Invalid ${flag.env} ${JSON.stringify(fromEnv)}: expected true or false`,
        );
      }
      value = YES.test(fromEnv);
    } else if (flag.multiple) {
      value = splitList(fromEnv, flag.env);
    }
    given.set(flag.name, { value, label: flag.env });
  }
  const count = rest.length;
  if (positionals.min !== undefined && count < positionals.min) {
    throw new UsageError(
      `Missing argument: expected at least ${positionals.min}, got ${count}`,
    );
  }
  if (positionals.max !== undefined && count > positionals.max) {
    throw new UsageError(`Unexpected argument ${JSON.stringify(rest[positionals.max])}`);
  }
  return new ParsedFlags(byName, given, rest);
}

/** The `--help` line of the zero rule, with the flags of `flags` that refuse 0. */
export function zeroRule(flags: readonly Flag[]): string {
  const numeric = flags.filter((f) => ["duration", "size", "count"].includes(f.type));
  if (numeric.length === 0) return "";
  const refusing = numeric.filter((f) => !f.zeroIsOff).map((f) => `--${f.name}`);
  return "A value of 0 turns a timeout or a limit off" +
    (refusing.length ? `, except ${refusing.join(", ")}, which must be above 0.` : ".");
}

const HELP_WIDTH = 100;
const HELP_COLUMN = 28;

/** The help line of a flag: its help, variable and default. */
export function helpLine(flag: Flag): string {
  const env = flag.env ? ` (${flag.env})` : "";
  const shown = flag.defaultText ?? flag.default;
  const def = shown !== undefined && flag.type !== "boolean" ? ` [${shown}]` : "";
  return `${flag.help}${env}${def}`;
}

function flagColumn(flag: Flag): string {
  const value = placeholder(flag);
  return `${flag.short ? `-${flag.short}, ` : ""}--${flag.name}${value ? ` ${value}` : ""}`;
}

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/** The whole `--help` text of a command, generated from its declaration. */
export function helpText(spec: CommandSpec): string {
  const out = [`${spec.command}: ${spec.about}`, "", `Usage: ${spec.usage}`];
  if (spec.description) {
    // Lines are kept as written (examples are indented); only an overlong one is wrapped.
    out.push(
      "",
      ...spec.description.split("\n").flatMap((l) =>
        l.length > HELP_WIDTH - 2 ? wrap(l, HELP_WIDTH - 2) : [l]
      ),
    );
  }
  const groups = [...new Set(spec.flags.map((f) => f.group))];
  const pad = " ".repeat(HELP_COLUMN);
  for (const group of groups) {
    out.push("", `${group}:`);
    for (const flag of spec.flags.filter((f) => f.group === group)) {
      const left = `  ${flagColumn(flag)}`;
      const lines = wrap(helpLine(flag), HELP_WIDTH - HELP_COLUMN);
      if (left.length < HELP_COLUMN - 1) {
        out.push(left.padEnd(HELP_COLUMN) + lines[0]);
        for (const l of lines.slice(1)) out.push(pad + l);
      } else {
        out.push(left);
        for (const l of lines) out.push(pad + l);
      }
    }
  }
  const values = [
    spec.flags.some((f) => f.env)
      ? "Each option can also come from the environment variable shown; the flag wins."
      : "",
    spec.flags.some((f) => f.type === "duration")
      ? "Durations: 500ms, 3s, 2m30s, or plain seconds."
      : "",
    spec.flags.some((f) => f.type === "size") ? "Sizes: 64KiB, 16MiB, or bytes." : "",
    zeroRule(spec.flags),
  ].filter(Boolean).join(" ");
  if (values) out.push("", ...wrap(values, HELP_WIDTH - 2));
  if (spec.footer) out.push("", spec.footer);
  return out.join("\n");
}

/** The README table rows of `flags`: flag, variable, default, meaning (cells as markdown). */
export function markdownRows(flags: readonly Flag[]): string[][] {
  const code = (s: string) => `\`${s.replaceAll("|", "\\|")}\``;
  return flags.map((f) => [
    code(flagColumn(f)),
    f.env ? code(f.env) : "",
    f.defaultText !== undefined
      ? f.defaultText
      : f.default !== undefined && f.type !== "boolean"
      ? code(f.default)
      : "",
    f.help.replaceAll("|", "\\|"),
  ]);
}

/** A README table of `flags`, columns padded the way `deno fmt` pads them. */
export function markdownTable(flags: readonly Flag[]): string {
  const rows = [["flag", "variable", "default", "meaning"], ...markdownRows(flags)];
  const widths = rows[0].map((_, c) => Math.max(3, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]) => `| ${cells.map((s, c) => s.padEnd(widths[c])).join(" | ")} |`;
  return [
    line(rows[0]),
    `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...rows.slice(1).map(line),
  ].join("\n");
}
