/**
 * Captures the relay's LogTape records in tests.
 * @module
 */

import { configure, type LogRecord, reset } from "@logtape/logtape";

/** Collects the `relay` log records (debug and up) while `fn` runs, then resets logging. */
export async function withLogs(fn: (records: LogRecord[]) => Promise<void>): Promise<void> {
  const records: LogRecord[] = [];
  await configure({
    sinks: { capture: (r) => void records.push(r) },
    loggers: [
      { category: ["relay"], lowestLevel: "debug", sinks: ["capture"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
    reset: true,
  });
  try {
    await fn(records);
  } finally {
    await reset();
  }
}

/** A record's message as one line: text as it is, other values as JSON. */
export function logText(record: LogRecord): string {
  return record.message.map((m) => typeof m === "string" ? m : JSON.stringify(m)).join("");
}
