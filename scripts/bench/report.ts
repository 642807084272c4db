/**
 * What the benchmark prints and writes: the targets of issues 5 and 10 evaluated from the rows,
 * a console table, the scaling table of 64 B messages by pairs, `RESULTS.md` and an SVG chart
 * of the ratios.
 * @module
 */

import type { HotFunction } from "./profile.ts";
import { threadsTable } from "./scaling_threads.ts";
import type { Row, ScenarioResult } from "./scenarios.ts";

/** How a target compares the subject's figure. */
type TargetKind =
  /** subject ÷ reference must be at least `goal` (throughput). */
  | "ratio-at-least"
  /** subject ÷ reference must be at most `goal` (latency). */
  | "ratio-at-most"
  /** the subject's own figure must be at most `goal` (memory, time). */
  | "value-at-most";

/** The issues whose targets are evaluated, in report order. */
export const TARGET_ISSUES = [5, 10] as const;

interface TargetSpec {
  id: string;
  /** The issue that set the target. */
  issue: typeof TARGET_ISSUES[number];
  title: string;
  scenario: string;
  /** The row compared, when not the scenario's first subject row. */
  system?: string;
  reference?: string;
  /** The reference's scenario, when it is another one (the relay's own 8-pair figure). */
  referenceScenario?: string;
  kind: TargetKind;
  goal: number;
  goalText: string;
  /** Only evaluated when the run used this many idle clients. */
  clients?: number;
}

/** The targets of issue 5, then of issue 10. */
const TARGETS: TargetSpec[] = [
  {
    issue: 5,
    id: "msgs-64B-1pair",
    title: "64 B messages/s, 1 pair",
    scenario: "msgs-64B-1pair",
    reference: "nats-server",
    kind: "ratio-at-least",
    goal: 1,
    goalText: "≥ 1 × nats-server",
  },
  {
    issue: 5,
    id: "bulk-64KiB",
    title: "64 KiB MB/s",
    scenario: "bulk-64KiB",
    reference: "socat",
    kind: "ratio-at-least",
    goal: 0.9,
    goalText: "≥ 0.9 × socat",
  },
  {
    issue: 5,
    id: "latency-64B-p50",
    title: "64 B round trip p50",
    scenario: "latency-64B",
    reference: "nats-server",
    kind: "ratio-at-most",
    goal: 1,
    goalText: "≤ nats-server's",
  },
  {
    issue: 5,
    id: "idle-memory",
    title: "Relay RSS per idle client",
    scenario: "idle-memory",
    kind: "value-at-most",
    goal: 16 * 1024,
    goalText: "≤ 16 KiB at 10,000 clients",
    clients: 10_000,
  },
  {
    issue: 5,
    id: "idle-accept",
    title: "Accepting 10,000 registrations",
    scenario: "idle-accept",
    kind: "value-at-most",
    goal: 5,
    goalText: "< 5 s",
    clients: 10_000,
  },
  {
    issue: 5,
    id: "tunnel-bulk",
    title: "Tunnel bulk MB/s",
    scenario: "tunnel-bulk",
    reference: "ssh -L",
    kind: "ratio-at-least",
    goal: 1,
    goalText: "≥ 1 × ssh -L",
  },
  {
    issue: 5,
    id: "http",
    title: "HTTP req/s through the tunnel",
    scenario: "http",
    reference: "direct",
    kind: "ratio-at-least",
    goal: 0.5,
    goalText: "≥ 0.5 × direct",
  },
  {
    issue: 10,
    id: "i10-tunnel-bulk",
    title: "Tunnel bulk MB/s, plaintext",
    scenario: "tunnel-bulk",
    reference: "ssh -L",
    kind: "ratio-at-least",
    goal: 1.5,
    goalText: "≥ 1.5 × ssh -L",
  },
  {
    issue: 10,
    id: "i10-tunnel-bulk-secret",
    title: "Tunnel bulk MB/s, --secret-file",
    scenario: "tunnel-bulk",
    system: "tunnel --secret-file",
    reference: "ssh -L",
    kind: "ratio-at-least",
    goal: 1,
    goalText: "≥ 1.0 × ssh -L",
  },
  {
    issue: 10,
    id: "i10-http",
    title: "HTTP req/s through the tunnel",
    scenario: "http",
    reference: "ssh -L",
    kind: "ratio-at-least",
    goal: 1.5,
    goalText: "≥ 1.5 × ssh -L",
  },
  {
    issue: 10,
    id: "i10-bulk-64KiB",
    title: "64 KiB MB/s",
    scenario: "bulk-64KiB",
    reference: "socat",
    kind: "ratio-at-least",
    goal: 1,
    goalText: "≥ 1.0 × socat",
  },
  {
    issue: 10,
    id: "i10-msgs-64B-1pair",
    title: "64 B messages/s, 1 pair",
    scenario: "msgs-64B-1pair",
    reference: "nats-server",
    kind: "ratio-at-least",
    goal: 2,
    goalText: "≥ 2 × nats-server",
  },
  {
    issue: 10,
    id: "i10-msgs-64B-8pair",
    title: "64 B messages/s, 8 pairs",
    scenario: "msgs-64B-8pair",
    reference: "nats-server",
    kind: "ratio-at-least",
    goal: 2,
    goalText: "≥ 2 × nats-server",
  },
  {
    issue: 10,
    id: "i10-msgs-64B-64pair",
    title: "64 B messages/s, 64 pairs",
    scenario: "msgs-64B-64pair",
    reference: "relay",
    referenceScenario: "msgs-64B-8pair",
    kind: "ratio-at-least",
    goal: 0.8,
    goalText: "≥ 0.8 × its 8-pair figure",
  },
  {
    issue: 10,
    id: "i10-msgs-64B-256pair",
    title: "64 B messages/s, 256 pairs",
    scenario: "msgs-64B-256pair",
    reference: "relay",
    referenceScenario: "msgs-64B-8pair",
    kind: "ratio-at-least",
    goal: 0.8,
    goalText: "≥ 0.8 × its 8-pair figure",
  },
  {
    issue: 10,
    id: "i10-register-sequential",
    title: "10,000 registrations one after another",
    scenario: "register-sequential",
    reference: "deno accept loop",
    kind: "ratio-at-most",
    goal: 1.15,
    goalText: "≤ 1.15 × the bare Deno loop",
    clients: 10_000,
  },
  {
    issue: 10,
    id: "i10-idle-memory-message",
    title: "Relay RSS per idle client after a message",
    scenario: "idle-memory-message",
    kind: "value-at-most",
    goal: 10 * 1024,
    goalText: "≤ 10 KiB at 10,000 clients",
    clients: 10_000,
  },
];

/** One target of an issue, evaluated. */
export interface TargetResult {
  /** Stable id. */
  id: string;
  /** The issue that set it (results written before issue 10 have none: 5). */
  issue?: number;
  /** What is compared. */
  title: string;
  /** The goal in words. */
  goal: string;
  /** The figures compared, in words. */
  measured: string;
  /** subject ÷ reference, or the subject's figure for an absolute goal. */
  ratio?: number;
  /** The same, turned so that larger is better for the subject (for the chart). */
  advantage?: number;
  /** The goal on the `advantage` scale. */
  goalAdvantage: number;
  /** Whether the goal is met; absent when it could not be evaluated. */
  met?: boolean;
  /** Why it was not evaluated. */
  note?: string;
}

function row(s: ScenarioResult | undefined, system: string): Row | undefined {
  return s?.rows.find((r) => r.system === system);
}

function subjectRow(s: ScenarioResult | undefined): Row | undefined {
  return s?.rows.find((r) => r.role === "subject");
}

function whyMissing(r: Row | undefined, system: string): string {
  if (!r) return `${system} not measured`;
  return r.skipped ?? (r.error ? `${system} failed: ${r.error.split("\n")[0]}` : "no figure");
}

/** Evaluates the issues' targets against the scenarios that were run. */
export function evaluateTargets(
  scenarios: ScenarioResult[],
  clients: number,
): TargetResult[] {
  const out: TargetResult[] = [];
  for (const t of TARGETS) {
    const s = scenarios.find((x) => x.id === t.scenario);
    if (!s) continue;
    const subject = t.system === undefined ? subjectRow(s) : row(s, t.system);
    const base = {
      id: t.id,
      issue: t.issue,
      title: t.title,
      goal: t.goalText,
      goalAdvantage: t.kind === "ratio-at-least"
        ? t.goal
        : 1 / (t.kind === "ratio-at-most" ? t.goal : 1),
    };
    if (subject?.value === undefined) {
      out.push({
        ...base,
        measured: "—",
        note: whyMissing(subject, subject?.system ?? t.system ?? "subject"),
      });
      continue;
    }
    if (t.clients !== undefined && clients !== t.clients) {
      const measured = formatValue(subject.value, s.unit);
      out.push({ ...base, measured, note: `not evaluated: run with ${clients} clients` });
      continue;
    }
    if (t.kind === "value-at-most") {
      const measured = formatValue(subject.value, s.unit);
      const met = t.id === "idle-accept" ? subject.value < t.goal : subject.value <= t.goal;
      out.push({
        ...base,
        measured: `${subject.system} ${measured}`,
        ratio: subject.value / t.goal,
        advantage: t.goal / subject.value,
        met,
      });
      continue;
    }
    const refScenario = t.referenceScenario === undefined
      ? s
      : scenarios.find((x) => x.id === t.referenceScenario);
    const ref = row(refScenario, t.reference!);
    const refName = t.referenceScenario === undefined
      ? t.reference!
      : `${t.reference} (${t.referenceScenario})`;
    if (ref?.value === undefined) {
      out.push({
        ...base,
        measured: `${subject.system} ${formatValue(subject.value, s.unit)}`,
        note: whyMissing(ref, refName),
      });
      continue;
    }
    const ratio = subject.value / ref.value;
    out.push({
      ...base,
      measured: `${subject.system} ${formatValue(subject.value, s.unit)} vs ${
        t.referenceScenario === undefined ? ref.system : refName
      } ${formatValue(ref.value, s.unit)}`,
      ratio,
      advantage: t.kind === "ratio-at-least" ? ratio : 1 / ratio,
      met: t.kind === "ratio-at-least" ? ratio >= t.goal : ratio <= t.goal,
    });
  }
  return out;
}

/** A subject-versus-reference comparison that is not itself a target (grey in the chart). */
interface Comparison {
  label: string;
  advantage: number;
}

function comparisons(scenarios: ScenarioResult[], targets: TargetResult[]): Comparison[] {
  const targeted = new Set(
    TARGETS.filter((t) => targets.some((x) => x.id === t.id)).map((t) =>
      `${t.scenario}/${t.reference}`
    ),
  );
  const out: Comparison[] = [];
  for (const s of scenarios) {
    const subject = subjectRow(s);
    if (subject?.value === undefined) continue;
    for (const r of s.rows) {
      if (r.role !== "reference" || r.value === undefined) continue;
      if (targeted.has(`${s.id}/${r.system}`)) continue;
      out.push({
        label: `${subject.system} ${s.short} vs ${r.system}`,
        advantage: s.higherIsBetter ? subject.value / r.value : r.value / subject.value,
      });
    }
    const p99 = subject.detail?.p99Us;
    const nats = row(s, "nats-server")?.detail?.p99Us;
    if (s.id === "latency-64B" && p99 && nats) {
      out.push({
        label: `${subject.system} 64 B round trip p99 vs nats-server`,
        advantage: nats / p99,
      });
    }
  }
  return out;
}

/** Targets grouped by the issue that set them, in issue order. */
function targetsByIssue(targets: TargetResult[]): Map<number, TargetResult[]> {
  const out = new Map<number, TargetResult[]>();
  for (const t of targets) {
    const issue = t.issue ?? 5;
    if (!out.has(issue)) out.set(issue, []);
    out.get(issue)!.push(t);
  }
  return new Map([...out].sort((a, b) => a[0] - b[0]));
}

/** Message scenarios of the scaling table: 64 B payloads, any number of pairs. */
const SCALING_SCENARIO = /^msgs-64B-(\d+)pair$/;

/** The systems of the scaling table, in order: every non-ceiling row that was measured. */
export interface ScalingTable {
  /** Heading. */
  title: string;
  /** "system", then one column per number of pairs. */
  header: string[];
  /** One row per system (msg/s), then the relay's ratio to nats-server. */
  rows: string[][];
}

/**
 * 64 B messages/s at each number of pairs that ran, one row per system (rows added later,
 * such as a relay with more threads, appear by themselves), and the relay ÷ nats-server
 * ratio; `undefined` when fewer than two pair counts ran.
 */
export function scalingTable(scenarios: ScenarioResult[]): ScalingTable | undefined {
  const columns = scenarios
    .map((s) => ({ s, pairs: Number(s.id.match(SCALING_SCENARIO)?.[1] ?? NaN) }))
    .filter((c) => Number.isFinite(c.pairs))
    .sort((a, b) => a.pairs - b.pairs);
  if (columns.length < 2) return undefined;
  const systems: string[] = [];
  for (const { s } of columns) {
    for (const r of s.rows) {
      if (r.role !== "ceiling" && !systems.includes(r.system)) systems.push(r.system);
    }
  }
  const cell = (s: ScenarioResult, system: string) => {
    const r = row(s, system);
    return r?.value === undefined ? "—" : formatValue(r.value, "msg/s");
  };
  const rows = systems.map((system) => [system, ...columns.map(({ s }) => cell(s, system))]);
  const relay = systems.find((x) => x === "relay");
  if (relay && systems.includes("nats-server")) {
    rows.push([
      "relay ÷ nats-server",
      ...columns.map(({ s }) => {
        const a = row(s, "relay")?.value;
        const b = row(s, "nats-server")?.value;
        return a === undefined || b === undefined ? "—" : ratioText(a / b);
      }),
    ]);
  }
  return {
    title: "64 B messages/s by pairs (scaling)",
    header: ["system", ...columns.map(({ pairs }) => `${pairs} pair${pairs > 1 ? "s" : ""}`)],
    rows,
  };
}

/** Formats a figure with its unit, in the precision a reader needs. */
export function formatValue(value: number, unit: string): string {
  switch (unit) {
    case "msg/s":
    case "req/s":
      return `${compact(value)} ${unit}`;
    case "MB/s":
      return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} MB/s`;
    case "µs":
      return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} µs`;
    case "B/client":
      return `${(value / 1024).toFixed(1)} KiB/client`;
    case "s":
      return `${value.toFixed(2)} s`;
    default:
      return `${value.toPrecision(4)} ${unit}`;
  }
}

function compact(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(0);
}

function percent(n: number | undefined): string {
  return n === undefined ? "" : `${n.toFixed(0)}%`;
}

function ratioText(r: number): string {
  return `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×`;
}

/** subject ÷ row, turned so that > 1 means the subject is better. */
function advantageOver(s: ScenarioResult, r: Row): number | undefined {
  const subject = subjectRow(s);
  if (subject?.value === undefined || r.value === undefined || r === subject) return undefined;
  return s.higherIsBetter ? subject.value / r.value : r.value / subject.value;
}

function extraText(s: ScenarioResult, r: Row): string {
  const d = r.detail ?? {};
  const parts: string[] = [];
  if (d.p99Us !== undefined) parts.push(`p99 ${formatValue(d.p99Us, "µs")}`);
  if (d.p50Ms !== undefined) parts.push(`p50 ${d.p50Ms.toFixed(2)} ms`);
  if (d.p99Ms !== undefined) parts.push(`p99 ${d.p99Ms.toFixed(2)} ms`);
  if (d.acceptSeconds !== undefined && s.id === "idle-memory") {
    parts.push(`RSS ${mib(d.baselineRssBytes)} → ${mib(d.rssBytes)}`);
  }
  if (d.registeredRssBytes !== undefined && s.id === "idle-memory-message") {
    parts.push(
      `RSS ${mib(d.baselineRssBytes)} → ${mib(d.registeredRssBytes)} registered → ${
        mib(d.rssBytes)
      } after the message`,
    );
  }
  if (d.bytesPerClient !== undefined && s.id === "register-sequential") {
    parts.push(`${formatValue(d.bytesPerClient, "B/client")} after a message`);
  }
  if (d.minStreamMBps !== undefined && d.maxStreamMBps !== undefined) {
    parts.push(
      `per stream ${formatValue(d.minStreamMBps, "MB/s")}–${
        formatValue(d.maxStreamMBps, "MB/s")
      }, fairness ${(d.fairness ?? 0).toFixed(2)}`,
    );
    if (d.firstDeliverySeconds !== undefined) {
      parts.push(`all streams flowing after ${d.firstDeliverySeconds.toFixed(2)} s`);
    }
  }
  if (d.acceptPerSecond !== undefined) parts.push(`${compact(d.acceptPerSecond)} reg/s`);
  if ((d.generatorCpu ?? 0) >= GENERATOR_BOUND_PERCENT && r.role !== "ceiling") {
    parts.push("generator near a full core: may be generator-bound");
  }
  if (r.values && r.values.length > 1) {
    const lo = Math.min(...r.values);
    const hi = Math.max(...r.values);
    parts.push(`runs ${formatValue(lo, s.unit)}–${formatValue(hi, s.unit)}`);
  }
  return parts.join(", ");
}

/** Generator CPU (% of a core) from which a row's figure may be the generator's limit. */
const GENERATOR_BOUND_PERCENT = 90;

function mib(bytes: number | undefined): string {
  return bytes === undefined ? "?" : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function rowStatus(r: Row): string | undefined {
  if (r.skipped) return `skipped: ${r.skipped}`;
  if (r.error) return `failed: ${r.error.split("\n")[0]}`;
  // A row whose run measured nothing (e.g. a follow-up figure of a peer that was left out).
  if (r.value === undefined) return "no figure";
  return undefined;
}

/** The console table of every scenario and the targets. */
export function consoleReport(scenarios: ScenarioResult[], targets: TargetResult[]): string {
  const lines: string[] = [];
  for (const s of scenarios) {
    const subject = subjectRow(s)?.system ?? "subject";
    const width = Math.max(13, ...s.rows.map((r) => r.system.length + 1));
    lines.push("", s.title);
    lines.push(
      `  ${"system".padEnd(width)}${"figure".padStart(18)}  ${`${subject} adv.`.padStart(12)}  ${
        "srv CPU".padStart(7)
      }  ${"gen CPU".padStart(7)}  notes`,
    );
    for (const r of s.rows) {
      const status = rowStatus(r);
      const name = `  ${r.system.padEnd(width)}`;
      if (status) {
        lines.push(`${name}${"—".padStart(18)}  ${"".padStart(12)}  ${status}`);
        continue;
      }
      const adv = advantageOver(s, r);
      lines.push(
        `${name}${formatValue(r.value!, s.unit).padStart(18)}  ${
          (adv === undefined ? "" : ratioText(adv)).padStart(12)
        }  ${percent(r.detail?.serverCpu).padStart(7)}  ${
          percent(r.detail?.generatorCpu).padStart(7)
        }  ${r.role === "ceiling" ? "(ceiling) " : ""}${extraText(s, r)}`,
      );
    }
  }
  lines.push("", `("adv." = how many times better the subject is: > 1 means ahead of that row)`);
  const scaling = scalingTable(scenarios);
  if (scaling) {
    lines.push("", scaling.title);
    const widths = scaling.header.map((h, i) =>
      Math.max(h.length, ...scaling.rows.map((r) => r[i].length))
    );
    const line = (cells: string[]) =>
      "  " + cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ");
    lines.push(line(scaling.header), ...scaling.rows.map(line));
  }
  const threads = threadsTable(scenarios, formatValue);
  if (threads) {
    lines.push("", threads.title);
    const widths = threads.header.map((h, i) =>
      Math.max(h.length, ...threads.rows.map((r) => r[i].length))
    );
    const line = (cells: string[]) =>
      "  " + cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ");
    lines.push(line(threads.header), ...threads.rows.map(line));
    lines.push(
      threads.misses.length ? `  goals missed: ${threads.misses.join("; ")}` : "  goals met",
    );
  }
  for (const [issue, list] of targetsByIssue(targets)) {
    lines.push("", `Targets of issue ${issue}`);
    const titleWidth = Math.max(32, ...list.map((t) => t.title.length));
    const goalWidth = Math.max(28, ...list.map((t) => t.goal.length));
    for (const t of list) {
      const verdict = t.met === undefined ? "n/a " : t.met ? "MET " : "MISS";
      const ratio = t.ratio === undefined ? "" : ` → ${ratioText(t.ratio)}`;
      lines.push(
        `  ${verdict}  ${t.title.padEnd(titleWidth)} ${
          t.goal.padEnd(goalWidth)
        } ${t.measured}${ratio}${t.note ? ` (${t.note})` : ""}`,
      );
    }
  }
  return lines.join("\n");
}

/** Facts about the machine and the run, recorded with the figures. */
export interface RunInfo {
  /** ISO date of the run. */
  date: string;
  /** The command line. */
  command: string;
  /** CPU model and core count. */
  cpu: string;
  /** OS and kernel. */
  os: string;
  /** Deno version. */
  deno: string;
  /** Versions of the peers found. */
  peers: Record<string, string>;
  /** Peers and tools not found, with their Debian package. */
  missing: { tool: string; pkg: string }[];
  /** 1-minute load average before and after: other work on the machine shows here. */
  loadAverage: { before?: number; after?: number };
  /** Settings of the run. */
  settings: Record<string, number | string | boolean>;
}

/** `RESULTS.md`: the run, the targets, the chart, and every figure. */
export function markdownReport(
  info: RunInfo,
  scenarios: ScenarioResult[],
  targets: TargetResult[],
  chartFile: string,
  profiles?: Record<string, HotFunction[]>,
): string {
  const md: string[] = [];
  md.push("# Benchmark results", "");
  md.push(
    `Recorded by \`${info.command}\` on ${info.date}: ${info.cpu}, ${info.os}, Deno ${info.deno}.`,
  );
  md.push(
    "",
    `Peers: ${Object.entries(info.peers).map(([k, v]) => `${k} ${v}`).join(", ") || "none found"}.${
      info.missing.length
        ? ` Missing (rows skipped): ${
          info.missing.map((m) => `${m.tool} (apt package ${m.pkg})`).join(", ")
        }.`
        : ""
    }`,
  );
  md.push(
    "",
    `Settings: ${
      Object.entries(info.settings).map(([k, v]) => `${k} ${v}`).join(", ")
    }. Load average (1 min) before ${info.loadAverage.before ?? "?"}, after ${
      info.loadAverage.after ?? "?"
    }. The machine is shared: rows are measured interleaved (relay, peers, relay, …) and the median of the runs is reported, so background work spreads over every row; "runs" shows the spread.`,
  );
  md.push("", `![Ratios of the relay to its reference peers](${chartFile})`, "");
  for (const [issue, list] of targetsByIssue(targets)) {
    md.push(`## Targets (issue ${issue})`, "");
    md.push("| Target | Goal | Measured | Ratio | Met |", "|---|---|---|---:|:---:|");
    for (const t of list) {
      md.push(
        `| ${t.title} | ${t.goal} | ${t.measured} | ${
          t.ratio === undefined ? "—" : ratioText(t.ratio)
        } | ${t.met === undefined ? `n/a (${t.note})` : t.met ? "yes" : "**no**"} |`,
      );
    }
    md.push(
      "",
      "Ratio is the relay's (or tunnel's) figure divided by the reference's; for memory and time, the figure divided by the budget.",
      "",
    );
  }
  const scaling = scalingTable(scenarios);
  if (scaling) {
    md.push(`## ${scaling.title}`, "");
    md.push(
      "Each column is its own message scenario (all pairs starting together); rows added later, such as a relay with more threads, appear here by themselves.",
      "",
    );
    md.push(
      `| ${scaling.header.join(" | ")} |`,
      `|---|${scaling.header.slice(1).map(() => "---:").join("|")}|`,
      ...scaling.rows.map((r) => `| ${r.join(" | ")} |`),
      "",
    );
  }
  const threads = threadsTable(scenarios, formatValue);
  if (threads) {
    md.push(`## ${threads.title}`, "");
    md.push(
      "Goals (issue 15): the relay on every core at least nats-server at every row, and no row below its --threads 1 figure. CPU is the server process's, all threads, in % of one core.",
      "",
      `| ${threads.header.join(" | ")} |`,
      `|---|${threads.header.slice(1).map(() => "---:").join("|")}|`,
      ...threads.rows.map((r) => `| ${r.join(" | ")} |`),
      "",
      threads.misses.length ? `Goals missed: ${threads.misses.join("; ")}.` : "Every goal met.",
      "",
    );
  }
  md.push("## All figures", "");
  md.push(
    `"Advantage" is how many times better the subject is than that row (> 1: ahead). CPU is % of one core over the counted interval: the server's (with its child processes; for the tunnel, the relay and both tunnel processes) and the load generator's. Ceiling rows carry the same bytes without a relay in the path: the most the generator and the kernel can do here.`,
    "",
  );
  for (const s of scenarios) {
    md.push(`### ${s.title}`, "", s.method, "");
    md.push(
      "| System | Role | Figure | Advantage | Server CPU | Generator CPU | Notes |",
      "|---|---|---:|---:|---:|---:|---|",
    );
    for (const r of s.rows) {
      const status = rowStatus(r);
      if (status) {
        md.push(`| ${r.system} | ${r.role} | — | | | | ${status} |`);
        continue;
      }
      const adv = advantageOver(s, r);
      md.push(
        `| ${r.system} | ${r.role} | ${formatValue(r.value!, s.unit)} | ${
          adv === undefined ? "" : ratioText(adv)
        } | ${percent(r.detail?.serverCpu)} | ${percent(r.detail?.generatorCpu)} | ${
          extraText(s, r)
        } |`,
      );
    }
    md.push("");
  }
  if (profiles && Object.keys(profiles).length) {
    md.push("## CPU profiles", "");
    md.push(
      "Self time of the hottest functions of each profiled process over its whole life (`--profile`), as % of the time it was not idle. Profiling slows the process down, so figures of a profiled run are not comparable with an unprofiled one.",
      "",
    );
    for (const [file, top] of Object.entries(profiles)) {
      md.push(`### ${file}`, "", "| Busy % | Function | Script |", "|---:|---|---|");
      for (const f of top) {
        md.push(`| ${f.busyPercent.toFixed(1)} | \`${f.function}\` | ${f.url} |`);
      }
      md.push("");
    }
  }
  return md.join("\n");
}

const esc = (s: string) =>
  s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");

/** Chart range: 1/16× to 16× on a log scale, centred on parity. */
const CHART_LOG2_RANGE = 4;

/**
 * An SVG chart of every ratio: bars grow right of the 1× line when the relay is ahead, left
 * when it is behind (log scale). Targets are green (met) or red (missed) with a mark at the
 * goal; other comparisons are grey.
 */
export function svgChart(
  scenarios: ScenarioResult[],
  targets: TargetResult[],
  caption: string,
): string {
  type Bar = {
    label: string;
    value?: number;
    goal?: number;
    met?: boolean;
    note?: string;
    heading?: boolean;
  };
  const others = comparisons(scenarios, targets);
  const bars: Bar[] = [
    ...[...targetsByIssue(targets)].flatMap(([issue, list]) => [
      { label: `Targets of issue ${issue}`, heading: true },
      ...list.map((t) => ({
        label: `${t.title} (${t.goal})`,
        value: t.advantage,
        goal: t.goalAdvantage,
        met: t.met,
        note: t.note,
      })),
    ]),
    ...(others.length ? [{ label: "Other comparisons (no target)", heading: true }] : []),
    ...others.map((c) => ({ label: c.label, value: c.advantage })),
  ];
  const labelW = 430;
  const plotW = 400;
  const valueW = 150;
  const rowH = 26;
  const top = 64;
  const width = labelW + plotW + valueW;
  const height = top + bars.length * rowH + 48;
  const x = (v: number) => {
    const l = Math.max(-CHART_LOG2_RANGE, Math.min(CHART_LOG2_RANGE, Math.log2(v)));
    return labelW + ((l + CHART_LOG2_RANGE) / (2 * CHART_LOG2_RANGE)) * plotW;
  };
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="22" font-size="16" font-weight="bold">Relay and tunnel against reference peers (log scale; right of 1× = ahead)</text>`,
    `<text x="12" y="42" fill="#555">${esc(caption)}</text>`,
  );
  for (let l = -CHART_LOG2_RANGE; l <= CHART_LOG2_RANGE; l++) {
    const gx = x(2 ** l);
    out.push(
      `<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${top + bars.length * rowH}" stroke="${
        l === 0 ? "#333" : "#ddd"
      }" stroke-width="${l === 0 ? 1.5 : 1}"/>`,
      `<text x="${gx}" y="${top + bars.length * rowH + 16}" text-anchor="middle" fill="#555">${
        l >= 0 ? `${2 ** l}×` : `1/${2 ** -l}×`
      }</text>`,
    );
  }
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    if (b.heading) {
      out.push(
        `<rect x="0" y="${y + 2}" width="${width}" height="${rowH - 4}" fill="#f2f4f7"/>`,
        `<text x="12" y="${y + 17}" font-weight="bold">${esc(b.label)}</text>`,
      );
      return;
    }
    out.push(
      `<text x="${labelW - 8}" y="${y + 17}" text-anchor="end">${esc(b.label)}</text>`,
    );
    if (b.value === undefined) {
      out.push(
        `<text x="${x(1) + 6}" y="${y + 17}" fill="#888">${esc(b.note ?? "not measured")}</text>`,
      );
      return;
    }
    const color = b.goal === undefined ? "#9aa5b1" : b.met ? "#2e9e44" : "#d64541";
    const x0 = Math.min(x(1), x(b.value));
    const w = Math.max(1, Math.abs(x(b.value) - x(1)));
    out.push(
      `<rect x="${x0}" y="${y + 5}" width="${w}" height="${rowH - 10}" fill="${color}"/>`,
    );
    if (b.goal !== undefined) {
      const gx = x(b.goal);
      out.push(
        `<line x1="${gx}" y1="${y + 1}" x2="${gx}" y2="${
          y + rowH - 1
        }" stroke="#000" stroke-width="2" stroke-dasharray="3,2"/>`,
      );
    }
    const verdict = b.goal === undefined ? "" : b.met ? " met" : " missed";
    out.push(
      `<text x="${labelW + plotW + 8}" y="${y + 17}">${ratioText(b.value)}${verdict}</text>`,
    );
  });
  out.push(
    `<text x="12" y="${
      height - 10
    }" fill="#555">Green: met, red: missed (dashed: the goal); grey: no target. Latency, memory, time: reference (or budget) ÷ relay, so right is better everywhere.</text>`,
    `</svg>`,
  );
  return out.join("\n") + "\n";
}
