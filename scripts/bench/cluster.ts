/**
 * The `cluster` group of `deno task bench`: cluster mode's cross-node path against raw nats.js
 * publish/subscribe between the same two processes, the cluster stream layer alone, and a
 * cluster node's local path (scripts/bench/cluster_nats.ts measures; this makes the rows).
 * @module
 */

import { type ClusterFigures, measureCluster } from "./cluster_nats.ts";
import { findExecutable } from "../_shared/processes.ts";
import type { Row, ScenarioResult, SuiteOptions } from "./scenarios.ts";

/** Messages per row: fewer in smoke mode, where only the plumbing is checked. */
function counts(options: SuiteOptions): { small: number; large: number } {
  return options.smoke ? { small: 5_000, large: 200 } : { small: 300_000, large: 4_000 };
}

type Mode = keyof ClusterFigures["small"];

const SYSTEMS: [Mode, string, Row["role"]][] = [
  ["relay", "relay cross-node", "subject"],
  ["raw", "raw nats.js", "reference"],
  ["stream", "stream layer", "reference"],
  ["local", "relay same node", "ceiling"],
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Runs the cluster rows `options.repeat` times and reports the medians. */
export async function runCluster(options: SuiteOptions): Promise<ScenarioResult[]> {
  options.log("  cluster-64B, cluster-64KiB, cluster-latency-64B");
  const method =
    "Two relay serve --cluster nodes on one nats-server with JetStream (one server, not three: on a 2-core machine two more servers only add CPU contention to every row alike); " +
    "the sender is a relay client of node a, the receiver of node b. raw nats.js: the same two processes publish and subscribe through the same server (no flow control). " +
    "stream layer: ClusterStreams pairs alone. relay same node: both clients on node a (NATS untouched). perCpu: per CPU-second of the clients and every server on the path.";
  const rowsOf = (rows: Row[]) => rows;
  if (!findExecutable("nats-server")) {
    const skipped = "nats-server not installed (Debian package nats-server)";
    return ["cluster-64B", "cluster-64KiB", "cluster-latency-64B"].map((id) => ({
      id,
      group: "cluster",
      title: id,
      short: id,
      unit: "",
      higherIsBetter: true,
      method,
      rows: rowsOf(SYSTEMS.map(([, system, role]) => ({ system, role, skipped }))),
    }));
  }
  const { small, large } = counts(options);
  const runs: ClusterFigures[] = [];
  let error: string | undefined;
  for (let i = 0; i < options.repeat; i++) {
    try {
      runs.push(await measureCluster(small, large));
    } catch (e) {
      error = e instanceof Error ? e.message : String(e);
    }
  }
  const rows = (
    pick: (f: ClusterFigures, m: Mode) => number | undefined,
    detail?: (f: ClusterFigures, m: Mode) => Record<string, number | undefined>,
  ) =>
    SYSTEMS.map(([mode, system, role]): Row => {
      const values = runs.map((f) => pick(f, mode)).filter((v): v is number => v !== undefined);
      if (values.length === 0) return { system, role, error: error ?? "no figure" };
      const row: Row = { system, role, value: median(values), values };
      if (detail) {
        const d: Record<string, number> = {};
        for (const f of runs) {
          for (const [k, v] of Object.entries(detail(f, mode))) if (v !== undefined) d[k] = v;
        }
        row.detail = d;
      }
      return row;
    });
  return [
    {
      id: "cluster-64B",
      group: "cluster",
      title: "Cluster: messages/s, 64 B payload, across two relay nodes",
      short: "cluster 64 B msg/s",
      unit: "msg/s",
      higherIsBetter: true,
      method,
      rows: rows(
        (f, m) => f.small[m],
        (f, m) => ({ perCpu: f.perCpu.small[m], lost: f.lost.small[m] }),
      ),
    },
    {
      id: "cluster-64KiB",
      group: "cluster",
      title: "Cluster: MB/s, 64 KiB payloads, across two relay nodes",
      short: "cluster 64 KiB MB/s",
      unit: "MB/s",
      higherIsBetter: true,
      method,
      rows: rows(
        (f, m) => f.large[m],
        (f, m) => ({ perCpu: f.perCpu.large[m], lost: f.lost.large[m] }),
      ),
    },
    {
      id: "cluster-latency-64B",
      group: "cluster",
      title: "Cluster: round trip p50, 64 B, across two relay nodes (p99 in detail)",
      short: "cluster 64 B round trip p50",
      unit: "µs",
      higherIsBetter: false,
      method,
      rows: rows((f, m) => f.rtt[m]?.p50, (f, m) => ({ p99Us: f.rtt[m]?.p99 })),
    },
  ];
}
