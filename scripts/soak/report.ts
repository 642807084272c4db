/**
 * What a soak run found ({@linkcode SoakReport}), how failures are recorded in it, and the
 * summary a person reads.
 * @module
 */

/** Failure details kept for the summary (all are counted). */
const MAX_FAILURE_DETAILS = 20;

/** What a soak run found. */
export interface SoakReport {
  /** Seed of the random choices. */
  seed: number;
  /** Time spent on random cases, in milliseconds. */
  durationMs: number;
  /** Cases tried, by kind. */
  cases: Record<string, number>;
  /** All cases tried. */
  casesTotal: number;
  /** Connections opened to the relay. */
  connections: number;
  /** Bytes written to the relay (and through tunnels). */
  bytesSent: number;
  /** Bytes read back. */
  bytesReceived: number;
  /** Hostile cases tried (all but valid exchanges and tunnel streams). */
  faults: number;
  /** Bad connections the relay closed as it should. */
  badClosed: number;
  /** Messages (and tunnel echoes) received and checked byte for byte. */
  messagesVerified: number;
  /** Whether a fresh pair could exchange a message after the run. */
  routesAfter: boolean;
  /** Open descriptors of the relay before and after, when measured (Linux). */
  fds: { before: number; after: number } | null;
  /** Resident memory of the relay in bytes: before, highest sample, after (Linux). */
  rss: { before: number; max: number; after: number; limit: number } | null;
  /** Exit code of a started relay after SIGTERM (null when attached). */
  relayExit: number | null;
  /** Failures by kind. */
  failures: Record<string, number>;
  /** The first failures, described. */
  failureDetails: string[];
  /** True when nothing failed. */
  ok: boolean;
}

/** A report with nothing counted yet. */
export function emptyReport(seed: number): SoakReport {
  return {
    seed,
    durationMs: 0,
    cases: {},
    casesTotal: 0,
    connections: 0,
    bytesSent: 0,
    bytesReceived: 0,
    faults: 0,
    badClosed: 0,
    messagesVerified: 0,
    routesAfter: false,
    fds: null,
    rss: null,
    relayExit: null,
    failures: {},
    failureDetails: [],
    ok: false,
  };
}

/** Counts a failure of `kind`, keeping the first details. */
export function recordFailure(report: SoakReport, kind: string, detail: string): void {
  report.failures[kind] = (report.failures[kind] ?? 0) + 1;
  if (report.failureDetails.length < MAX_FAILURE_DETAILS) report.failureDetails.push(detail);
}

/** `bytes` in MiB with one decimal. */
export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** The report as the lines a person reads. */
export function formatReport(r: SoakReport): string {
  const kinds = Object.entries(r.cases).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`);
  const lines = [
    `relay soak: ${(r.durationMs / 1000).toFixed(1)} s, seed ${r.seed}`,
    `cases tried     ${r.casesTotal} over ${r.connections} connections (${kinds.join(", ")})`,
    `bytes           ${mib(r.bytesSent)} sent, ${mib(r.bytesReceived)} received`,
    `faults          ${r.faults} hostile cases; the relay closed ${r.badClosed} bad connections`,
    `verified        ${r.messagesVerified} messages and echoes intact`,
    r.fds
      ? `descriptors     before ${r.fds.before}, after ${r.fds.after}`
      : "descriptors     not measured (needs /proc: Linux, and the relay's pid)",
    r.rss
      ? `memory (RSS)    before ${mib(r.rss.before)}, max ${mib(r.rss.max)}, after ${
        mib(r.rss.after)
      } (limit ${mib(r.rss.limit)})`
      : "memory (RSS)    not measured (needs /proc: Linux, and the relay's pid)",
    `routes after    ${r.routesAfter ? "yes" : "NO"}`,
    ...(r.relayExit === null ? [] : [`relay exit      ${r.relayExit} on SIGTERM`]),
  ];
  if (!r.ok) {
    const counts = Object.entries(r.failures).map(([k, n]) => `${k} ${n}`).join(", ");
    lines.push(`FAILED: ${counts}`, ...r.failureDetails.map((d) => `  ${d}`));
  } else {
    lines.push("result          PASS");
  }
  return lines.join("\n");
}
