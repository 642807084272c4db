/**
 * Logging for every command: LogTape records written to stderr as text lines or, for log
 * collectors such as journald, JSON lines.
 * @module
 */

import {
  configure,
  getTextFormatter,
  type LogLevel,
  type LogRecord,
  type Sink,
  type TextFormatter,
} from "@logtape/logtape";
import { UsageError } from "./flags.ts";

/** Log levels accepted by `--log-level`, quietest last (`warn` is taken for `warning`). */
export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error"] as const;

/** Output formats accepted by `--log-format`. */
export const LOG_FORMATS = ["text", "json"] as const;

/** Logger category whose records are written at any `--log-level` (the listening address). */
import { ANNOUNCE_CATEGORY } from "../util/log_category.ts";

/** How to log. */
export interface LogOptions {
  /**
   * Lowest level written (`warn` is taken for `warning`).
   * @default {"info"}
   */
  level?: string;
  /**
   * `text` for people, `json` (one object per line) for collectors.
   * @default {"text"}
   */
  format?: string;
  /**
   * How to name the level and format in an error: the flag, or the variable it came from.
   * @default {{ level: "--log-level", format: "--log-format" }}
   */
  labels?: { level?: string; format?: string };
}

const encoder = new TextEncoder();

/**
 * Sends the `relay` loggers to stderr at `level` in `format`.
 * @throws {UsageError} on an unknown level or format
 */
export async function setupLogging(options: LogOptions = {}): Promise<void> {
  const level = parseLogLevel(options.level ?? "info", options.labels?.level);
  const format = options.format ?? "text";
  if (!(LOG_FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(
      `Invalid ${options.labels?.format ?? "--log-format"} ${
        JSON.stringify(format)
      }: expected one of ${LOG_FORMATS.join(", ")}`,
    );
  }
  const formatter: TextFormatter = format === "json" ? jsonLine : getTextFormatter({
    timestamp: "date-time-tz",
    category: ".",
    value: showValue,
  });
  await configure({
    reset: true,
    sinks: { stderr: stderrSink(formatter) },
    loggers: [
      { category: ["relay"], lowestLevel: level, sinks: ["stderr"] },
      // Where a server listens is always shown, whatever the level: scripts and people
      // need the port, above all with --port 0.
      {
        category: ANNOUNCE_CATEGORY,
        lowestLevel: "info",
        sinks: ["stderr"],
        parentSinks: "override",
      },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/**
 * Parses a `--log-level` value.
 * @throws {UsageError} on an unknown level
 */
export function parseLogLevel(text: string, label = "--log-level"): LogLevel {
  const level = text === "warn" ? "warning" : text;
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new UsageError(
      `Invalid ${label} ${JSON.stringify(text)}: expected one of ${LOG_LEVELS.join(", ")}`,
    );
  }
  return level as LogLevel;
}

/**
 * Plain strings read better in a log line than quoted ones; a string with spaces, quotes or
 * control characters (a name chosen by a client) is quoted, so it cannot forge a log line.
 */
function showValue(value: unknown): string {
  if (typeof value !== "string") return Deno.inspect(value);
  // deno-lint-ignore no-control-regex
  return value === "" || /[\s"\x00-\x1f\x7f\u0080-\u009f\u2028\u2029]/.test(value)
    ? JSON.stringify(value)
    : value;
}

/** In JSON lines a string is already quoted once by JSON itself. */
function showJsonValue(value: unknown): string {
  return typeof value === "string" ? value : Deno.inspect(value);
}

/** One JSON object per line: timestamp, level, logger, the rendered message and properties. */
function jsonLine(record: LogRecord): string {
  let message = "";
  for (let i = 0; i < record.message.length; i++) {
    message += i % 2 === 0 ? record.message[i] as string : showJsonValue(record.message[i]);
  }
  return JSON.stringify({
    "@timestamp": new Date(record.timestamp).toISOString(),
    level: record.level.toUpperCase(),
    logger: record.category.join("."),
    message,
    properties: record.properties,
  }) + "\n";
}

function stderrSink(formatter: TextFormatter): Sink {
  // Synchronous so that nothing is lost when the process exits right after logging.
  return (record: LogRecord) => {
    try {
      Deno.stderr.writeSync(encoder.encode(formatter(record)));
    } catch {
      // stderr closed: nowhere left to report to.
    }
  };
}
