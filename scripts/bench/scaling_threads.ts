/**
 * The `scaling` group of `deno task bench` (issue 15): the relay at `--threads 1` and at one
 * worker per core against nats-server, at 1, 8, 64 and 256 pairs of 64 B and 1 KiB messages
 * and 1 and 8 pairs of 64 KiB ones, with the server's CPU beside each figure. Its table
 * ({@linkcode threadsTable}) puts the three side by side with the two goals: at least
 * nats-server at every row, and never below `--threads 1`.
 * @module
 */

import type { GeneratorProcess } from "./generator.ts";
import type { FlowResult } from "./loadgen.ts";
import { startNats, startRelay } from "./peers.ts";
import {
  describe,
  type Endpoint,
  flowJob,
  flowSample,
  mapPeer,
  measureRows,
  natsTarget,
  optional,
  projectOptions,
  relayTarget,
  type Row,
  type ScenarioResult,
  stopAll,
  type SuiteOptions,
  type System,
  tryStart,
  windowFor,
} from "./scenarios.ts";
import { CORES } from "../../lib/threads/threads.ts";

const KIB = 1024;

/** Payload bytes and pairs of the scaling rows. */
export const SCALING_VARIANTS: readonly [bytes: number, pairs: number][] = [
  [64, 1],
  [64, 8],
  [64, 64],
  [64, 256],
  [KIB, 1],
  [KIB, 8],
  [KIB, 64],
  [KIB, 256],
  [64 * KIB, 1],
  [64 * KIB, 8],
];

/** Payloads from this size are reported in MB/s, smaller ones in messages/s. */
const BULK_FROM_BYTES = 64 * KIB;

/** The system names of the table. */
export const ONE_THREAD = "relay --threads 1";
/** The relay with one worker per core (`--threads` as many as `navigator.hardwareConcurrency`). */
export const ALL_CORES = `relay --threads ${CORES}`;

function scenarioId(size: number, pairs: number): string {
  return `scaling-${size >= KIB ? `${size / KIB}KiB` : `${size}B`}-${pairs}pair`;
}

/** Ids of the scaling rows, which `--only` also accepts one by one. */
export const SCALING_SCENARIOS: readonly string[] = SCALING_VARIANTS.map(([size, pairs]) =>
  scenarioId(size, pairs)
);

/** Runs the scaling rows: each variant measured on the three systems, interleaved. */
export async function runScaling(
  gen: GeneratorProcess,
  options: SuiteOptions,
): Promise<ScenarioResult[]> {
  const [one, all, nats] = await Promise.all([
    tryStart(() =>
      startRelay({ ...projectOptions(options, "scaling-1"), args: ["--threads", "1"] })
    ),
    tryStart(() =>
      startRelay({
        ...projectOptions(options, `scaling-${CORES}`),
        args: ["--threads", String(CORES)],
      })
    ),
    tryStart(optional(options, "nats-server", startNats)),
  ]);
  try {
    const systems: System<Endpoint>[] = [
      { system: ALL_CORES, role: "subject", peer: mapPeer(all, relayTarget), running: [all] },
      { system: ONE_THREAD, role: "reference", peer: mapPeer(one, relayTarget), running: [one] },
      {
        system: "nats-server",
        role: "reference",
        peer: mapPeer(nats, natsTarget),
        running: [nats],
      },
    ];
    const results: ScenarioResult[] = [];
    const variants = options.smoke ? SCALING_VARIANTS.slice(0, 1) : SCALING_VARIANTS;
    for (const [size, pairs] of variants) {
      const id = scenarioId(size, pairs);
      const picked = [...options.messageScenarios].filter((x) => x.startsWith("scaling-"));
      if (picked.length > 0 && !picked.includes(id)) continue;
      options.log(`  ${id}`);
      const bulk = size >= BULK_FROM_BYTES;
      const unit = bulk ? "MB/s" : "msg/s";
      const window = windowFor(options, pairs);
      const rows = await measureRows(options, systems, unit, async (target) => {
        const job = { ...flowJob(options, target, size, pairs), windowBytes: window };
        const r = await gen.run<FlowResult>(job);
        return flowSample(r, bulk ? r.payloadBytesPerSecond / 1e6 : r.messagesPerSecond);
      });
      const what = `${describe(size)} ${bulk ? "MB/s" : "msg/s"}, ${pairs} pair${
        pairs > 1 ? "s" : ""
      }`;
      results.push({
        id,
        group: "scaling",
        title: `Scaling over cores: ${what}`,
        short: `threads: ${what}`,
        unit,
        higherIsBetter: true,
        method: `${pairs} sender→receiver pair(s) of ${
          describe(size)
        } messages, as in the message rows (at most ${
          describe(window)
        } in flight per sender), against the relay with one worker per core (${CORES} here), the relay with --threads 1, and nats-server; server CPU is the whole process, every thread.`,
        rows,
      });
    }
    return results;
  } finally {
    await stopAll([one, all, nats]);
  }
}

/** The scaling rows side by side, with CPU and the two goals. */
export interface ThreadsTable {
  /** Heading. */
  title: string;
  /** Column headings. */
  header: string[];
  /** One row per scenario. */
  rows: string[][];
  /** Scenarios that miss a goal, in words (empty: every goal met). */
  misses: string[];
}

/** The table of the `scaling` group, or undefined when it did not run. */
export function threadsTable(
  scenarios: ScenarioResult[],
  format: (value: number, unit: string) => string,
): ThreadsTable | undefined {
  const chosen = scenarios.filter((s) => s.group === "scaling");
  if (chosen.length === 0) return undefined;
  const find = (s: ScenarioResult, system: string): Row | undefined =>
    s.rows.find((r) => r.system === system);
  const cell = (s: ScenarioResult, r: Row | undefined) => {
    if (r?.value === undefined) return r?.skipped ? "skipped" : r?.error ? "failed" : "—";
    const cpu = r.detail?.serverCpu;
    return `${format(r.value, s.unit)}${cpu === undefined ? "" : ` (${cpu.toFixed(0)}% CPU)`}`;
  };
  const ratio = (a: Row | undefined, b: Row | undefined) =>
    a?.value === undefined || b?.value === undefined ? "—" : `${(a.value / b.value).toFixed(2)}×`;
  const misses: string[] = [];
  const rows = chosen.map((s) => {
    const all = find(s, ALL_CORES);
    const one = find(s, ONE_THREAD);
    const nats = find(s, "nats-server");
    if (all?.value !== undefined && nats?.value !== undefined && all.value < nats.value) {
      misses.push(`${s.short}: below nats-server (${ratio(all, nats)})`);
    }
    if (all?.value !== undefined && one?.value !== undefined && all.value < one.value) {
      misses.push(`${s.short}: below --threads 1 (${ratio(all, one)})`);
    }
    return [
      s.short.replace(/^threads: /, ""),
      cell(s, all),
      cell(s, one),
      cell(s, nats),
      ratio(all, nats),
      ratio(all, one),
    ];
  });
  return {
    title:
      `Scaling over cores (${CORES} cores): relay --threads ${CORES} and 1 against nats-server`,
    header: [
      "row",
      ALL_CORES,
      ONE_THREAD,
      "nats-server",
      `${CORES} threads ÷ nats`,
      `${CORES} threads ÷ 1 thread`,
    ],
    rows,
    misses,
  };
}
