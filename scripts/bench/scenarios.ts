/**
 * The benchmark's scenarios: which systems each one runs, the generator job for each, and how
 * repeats are interleaved. Every system of a scenario is measured with the same generator and
 * the same job; only the port and protocol differ.
 * @module
 */

import { join } from "node:path";
import { runScaling } from "./scaling_threads.ts";
import { CORES } from "../../lib/threads/threads.ts";
import type {
  FlowJob,
  FlowResult,
  IdleResult,
  LatencyJob,
  LatencyResult,
  RegisterResult,
} from "./loadgen.ts";
import type { GeneratorProcess } from "./generator.ts";
import {
  type Forwards,
  type ProjectOptions,
  type Running,
  startAcceptLoop,
  startHttpServer,
  startNats,
  startRelay,
  startSocat,
  startSshTunnel,
  startTunnels,
  type TunnelPair,
  Unavailable,
} from "./peers.ts";
import { findExecutable, freePort } from "../_shared/processes.ts";
import { CpuMeter } from "../_shared/sysstat.ts";
import { formatValue } from "./report.ts";

/** Scenario groups, in run order; `--only` takes these names. */
export const GROUPS = [
  "msgs",
  "bulk",
  "latency",
  "idle",
  "register",
  "tunnel",
  "http",
  "scaling",
  "cluster",
] as const;

/** A scenario group name. */
export type Group = typeof GROUPS[number];

/** What a row is for: the system under test, a peer it is compared with, or a ceiling. */
export type Role = "subject" | "reference" | "ceiling";

/** One system's figure in one scenario. */
export interface Row {
  /** Display name: "relay", "nats-server", "socat", "ssh -L", "tunnel", "direct". */
  system: string;
  /** Why the row is there. */
  role: Role;
  /** The scenario's figure: the median of the repeats. Absent when skipped or failed. */
  value?: number;
  /** Every repeat's figure. */
  values?: number[];
  /** Secondary figures (medians): p99, CPU of server and generator, RSS. */
  detail?: Record<string, number>;
  /** Why the row was not measured (a peer not installed). */
  skipped?: string;
  /** Why the measurement failed. */
  error?: string;
  /** Why one run failed before a retry succeeded (at most one retry per row). */
  retried?: string;
}

/** One scenario's rows. */
export interface ScenarioResult {
  /** Stable id, e.g. `msgs-64B-1pair`. */
  id: string;
  /** Group it belongs to (`--only`). */
  group: Group;
  /** Human title. */
  title: string;
  /** A few words for the chart. */
  short: string;
  /** Unit of `value`. */
  unit: string;
  /** True when a larger value is better (throughput), false for latency, memory, time. */
  higherIsBetter: boolean;
  /** A sentence on what is measured and how. */
  method: string;
  /** Rows, subject first. */
  rows: Row[];
}

/** Settings of a suite run. */
export interface SuiteOptions {
  /** Counted time of each measurement. */
  durationMs: number;
  /** Uncounted time before it. */
  warmupMs: number;
  /** Measurements of each row, interleaved across systems; the median is reported. */
  repeat: number;
  /** Idle clients of the idle scenario. */
  clients: number;
  /** Concurrent streams of the tunnel-streams scenario. */
  streams: number;
  /** Smoke mode: one variant per group. */
  smoke: boolean;
  /** Groups to run. */
  groups: ReadonlySet<Group>;
  /** When not empty, only these message scenarios of the `msgs` group run. */
  messageScenarios: ReadonlySet<string>;
  /** Bytes a sender may have in flight. */
  windowBytes: number;
  /** Bytes per generator write. */
  batchBytes: number;
  /** Concurrent HTTP connections of wrk. */
  httpConnections: number;
  /** When set, this project's processes write CPU profiles here. */
  profileDir?: string;
  /** Peers and tools to leave out as if they were not installed (`nats-server`, `socat`, `ssh`, `wrk`). */
  without: ReadonlySet<string>;
  /** Progress output. */
  log: (line: string) => void;
}

/** The Debian packages that provide each reference peer or tool. */
export const PACKAGES: Record<string, string> = {
  "nats-server": "nats-server",
  socat: "socat",
  sshd: "openssh-server",
  ssh: "openssh-client",
  wrk: "wrk",
};

/** Peers and tools missing on this machine, with the package that provides each. */
export function missingTools(): { tool: string; pkg: string }[] {
  return Object.entries(PACKAGES)
    .filter(([tool]) => !findExecutable(tool))
    .map(([tool, pkg]) => ({ tool, pkg }));
}

/** A system of a scenario: how to start it once per group, and the job for it. */
export interface System<P> {
  system: string;
  role: Role;
  /** The started system, or why it is not there. */
  peer: P | Error;
  /** The processes of the system, to tell what happened when a measurement fails. */
  running?: (Running | Error | undefined)[];
}

/** Handshakes in flight in the idle scenario: keeps the server busy, well under its backlog. */
const IDLE_CONCURRENCY = 256;
/** Pause before reading RSS, so memory of the last registrations is counted. */
const IDLE_SETTLE_MS = 1_000;
/** The same in smoke mode, where only the plumbing is checked. */
const SMOKE_SETTLE_MS = 100;
const KIB = 1024;

/** The tools `--without` accepts. */
export const OPTIONAL_PEERS = ["nats-server", "socat", "ssh", "wrk"] as const;

/** `start()`, or an {@linkcode Unavailable} when `--without` leaves `tool` out. */
export function optional<P>(
  options: SuiteOptions,
  tool: typeof OPTIONAL_PEERS[number],
  start: () => Promise<P>,
): () => Promise<P> {
  if (!options.without.has(tool)) return start;
  return () => Promise.reject(new Unavailable(`${tool} left out by --without`));
}

export async function tryStart<P>(start: () => Promise<P>): Promise<P | Error> {
  try {
    return await start();
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

function unavailableRow(system: string, role: Role, err: Error): Row {
  return err instanceof Unavailable
    ? { system, role, skipped: err.message }
    : { system, role, error: `could not start: ${err.message}` };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** One measurement: the main figure and its secondary figures. */
interface Sample {
  value: number;
  detail: Record<string, number | undefined>;
}

/**
 * Measures every available system `repeat` times, interleaved (relay, peer, …, relay, peer, …)
 * so that a burst of load from elsewhere on the machine hits all of them alike.
 */
export async function measureRows<P>(
  options: SuiteOptions,
  systems: System<P>[],
  unit: string,
  measure: (peer: P) => Promise<Sample>,
): Promise<Row[]> {
  const rows: Row[] = systems.map((s) =>
    s.peer instanceof Error ? unavailableRow(s.system, s.role, s.peer) : {
      system: s.system,
      role: s.role,
      values: [],
    }
  );
  const details: Record<string, number[]>[] = systems.map(() => ({}));
  for (let r = 0; r < options.repeat; r++) {
    for (let i = 0; i < systems.length; i++) {
      const peer = systems[i].peer;
      const row = rows[i];
      if (peer instanceof Error || row.error || row.skipped) continue;
      try {
        const t0 = performance.now();
        let sample: Sample;
        try {
          sample = await measure(peer);
        } catch (err) {
          // One retry: on a machine shared with other work a single run can break (a
          // connection reset under load); a system that fails twice is reported failed.
          if (err instanceof Unavailable || row.retried) throw err;
          row.retried = err instanceof Error ? err.message : String(err);
          options.log(`    ${row.system}: failed once (${row.retried}), retrying`);
          sample = await measure(peer);
        }
        const seconds = ((performance.now() - t0) / 1000).toFixed(1);
        options.log(`    ${row.system}: ${formatValue(sample.value, unit)} (${seconds} s)`);
        row.values!.push(sample.value);
        for (const [k, v] of Object.entries(sample.detail)) {
          if (v !== undefined && Number.isFinite(v)) (details[i][k] ??= []).push(v);
        }
      } catch (err) {
        if (err instanceof Unavailable) {
          row.skipped = err.message;
          options.log(`    ${row.system}: skipped: ${err.message}`);
          continue; // the systems after it in this round still run
        }
        row.error = err instanceof Error ? err.message : String(err);
        // A server that died explains the failure better than the broken connection does.
        for (const r of systems[i].running ?? []) {
          const died = r instanceof Error ? undefined : await r?.died();
          if (died) row.error = `${row.error} (${died})`;
        }
        options.log(`    ${row.system}: failed: ${row.error}`);
      }
    }
  }
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i];
    if (row.values?.length) {
      row.value = median(row.values);
      row.detail = Object.fromEntries(
        Object.entries(details[i]).map(([k, v]) => [k, median(v)]),
      );
    } else {
      delete row.values;
    }
  }
  return rows;
}

/** Generator job fields that point a flow or latency job at one system (or at itself). */
export interface Endpoint {
  protocol: FlowJob["protocol"];
  port?: number;
  listenPort?: number;
  pids: number[];
}

const DIRECT: Endpoint = { protocol: "raw", pids: [] };

export function relayTarget(r: Running): Endpoint {
  return { protocol: "relay", port: r.port, pids: r.pids };
}
export function natsTarget(r: Running): Endpoint {
  return { protocol: "nats", port: r.port, pids: r.pids };
}
function forwarderTarget(r: Running, sinkPort: number): Endpoint {
  return { protocol: "raw", port: r.port, listenPort: sinkPort, pids: r.pids };
}

export function flowJob(
  options: SuiteOptions,
  target: Endpoint,
  payloadBytes: number,
  pairs: number,
) {
  const job: FlowJob = {
    kind: "flow",
    ...target,
    pairs,
    payloadBytes,
    warmupMs: options.warmupMs,
    durationMs: options.durationMs,
    windowBytes: options.windowBytes,
    batchBytes: options.batchBytes,
  };
  return job;
}

export function flowSample(r: FlowResult, value: number): Sample {
  return { value, detail: { serverCpu: r.serverCpu, generatorCpu: r.generatorCpu } };
}

export function projectOptions(options: SuiteOptions, name: string): ProjectOptions {
  return { profileDir: options.profileDir, profileName: name };
}

export async function stopAll(peers: unknown[]): Promise<void> {
  await Promise.all(
    peers.map((peer) =>
      peer && typeof peer === "object" && "stop" in peer ? (peer as Running).stop() : undefined
    ),
  );
}

export function describe(size: number): string {
  if (size >= KIB * KIB && size % (KIB * KIB) === 0) return `${size / KIB / KIB} MiB`;
  return size >= KIB ? `${size / KIB} KiB` : `${size} B`;
}

export function mapPeer<P, T>(peer: P | Error, f: (p: P) => T): T | Error {
  return peer instanceof Error ? peer : f(peer);
}

/**
 * Starts a relay, nats-server and socat side by side, runs `body` with the rows they make
 * (relay first, then the references, then the ceilings), and stops them.
 */
async function withRelayAndPeers(
  options: SuiteOptions,
  group: Group,
  socatRole: Role,
  body: (systems: System<Endpoint>[]) => Promise<ScenarioResult[]>,
): Promise<ScenarioResult[]> {
  const sink = freePort();
  const [relay, nats, socat] = await Promise.all([
    tryStart(() => startRelay(projectOptions(options, group))),
    tryStart(optional(options, "nats-server", startNats)),
    tryStart(optional(options, "socat", () => startSocat(sink))),
  ]);
  try {
    const systems: System<Endpoint>[] = [
      { system: "relay", role: "subject", peer: mapPeer(relay, relayTarget), running: [relay] },
      {
        system: "nats-server",
        role: "reference",
        peer: mapPeer(nats, natsTarget),
        running: [nats],
      },
      {
        system: "socat",
        role: socatRole,
        peer: mapPeer(socat, (s) => forwarderTarget(s, sink)),
        running: [socat],
      },
      { system: "direct", role: "ceiling", peer: DIRECT },
    ];
    const order: Role[] = ["subject", "reference", "ceiling"];
    return await body(systems.sort((a, b) => order.indexOf(a.role) - order.indexOf(b.role)));
  } finally {
    await stopAll([relay, nats, socat]);
  }
}

/**
 * Payload bytes and sender/receiver pairs of the message scenarios. The 64 B rows at 1, 8, 64
 * and 256 pairs make the scaling table (no collapse as connections multiply).
 */
const MESSAGE_VARIANTS: [number, number][] = [
  [64, 1],
  [64, 8],
  [64, 64],
  [64, 256],
  [1024, 1],
  [1024, 8],
];

/**
 * From this many pairs only the relay and nats-server run: the unrouted ceilings (socat forks
 * a process per connection) say nothing new there and would cost minutes.
 */
const CEILINGS_UP_TO_PAIRS = 8;

/**
 * Bytes in flight across all senders of one run: with many pairs each sender's window shrinks
 * so that the total stays here, under the relay's default memory budget (256 MiB) and
 * nats-server's pending limits, for every system alike.
 */
const MAX_TOTAL_WINDOW_BYTES = 64 * 1024 * 1024;

/** A sender's window with `pairs` senders: the chosen window, capped by the total. */
export function windowFor(options: SuiteOptions, pairs: number): number {
  return Math.min(options.windowBytes, Math.floor(MAX_TOTAL_WINDOW_BYTES / pairs));
}

function messageScenarioId(size: number, pairs: number): string {
  return `msgs-${size >= KIB ? `${size / KIB}KiB` : `${size}B`}-${pairs}pair`;
}

/** Ids of the message scenarios, which `--only` also accepts one by one. */
export const MESSAGE_SCENARIOS: readonly string[] = MESSAGE_VARIANTS.map(([size, pairs]) =>
  messageScenarioId(size, pairs)
);

/** Messages per second at small payloads: relay against nats-server, with the ceilings. */
function runMessages(gen: GeneratorProcess, options: SuiteOptions) {
  return withRelayAndPeers(options, "msgs", "ceiling", async (systems) => {
    const results: ScenarioResult[] = [];
    const variants = options.smoke ? MESSAGE_VARIANTS.slice(0, 1) : MESSAGE_VARIANTS;
    for (const [size, pairs] of variants) {
      const id = messageScenarioId(size, pairs);
      if (options.messageScenarios.size && !options.messageScenarios.has(id)) continue;
      options.log(`  ${id}`);
      const window = windowFor(options, pairs);
      const chosen = pairs > CEILINGS_UP_TO_PAIRS
        ? systems.filter((s) => s.role !== "ceiling")
        : systems;
      const rows = await measureRows(options, chosen, "msg/s", async (target) => {
        const job = { ...flowJob(options, target, size, pairs), windowBytes: window };
        const r = await gen.run<FlowResult>(job);
        return flowSample(r, r.messagesPerSecond);
      });
      results.push({
        id,
        group: "msgs",
        title: `Messages/s, ${describe(size)} payload, ${pairs} pair${pairs > 1 ? "s" : ""}`,
        short: `${describe(size)} msg/s, ${pairs} pair${pairs > 1 ? "s" : ""}`,
        unit: "msg/s",
        higherIsBetter: true,
        method:
          `${pairs} sender→receiver pair(s), all starting together, each sender writing batches of pre-encoded messages with at most ${
            describe(window)
          } in flight (at most ${
            describe(MAX_TOTAL_WINDOW_BYTES)
          } across all senders); deliveries counted at the receivers. ${
            pairs > CEILINGS_UP_TO_PAIRS
              ? "Relay and nats-server only."
              : "socat and direct carry the same bytes unrouted: the generator's ceiling."
          }`,
        rows,
      });
    }
    return results;
  });
}

/** MB/s at 64 KiB payloads: relay against socat forwarding (nats-server alongside). */
function runBulk(gen: GeneratorProcess, options: SuiteOptions) {
  return withRelayAndPeers(options, "bulk", "reference", async (systems) => {
    options.log("  bulk-64KiB");
    const rows = await measureRows(options, systems, "MB/s", async (target) => {
      const r = await gen.run<FlowResult>(flowJob(options, target, 64 * KIB, 1));
      return flowSample(r, r.payloadBytesPerSecond / 1e6);
    });
    return [{
      id: "bulk-64KiB",
      group: "bulk",
      title: "MB/s, 64 KiB payloads, 1 pair",
      short: "64 KiB MB/s",
      unit: "MB/s",
      higherIsBetter: true,
      method:
        "One sender→receiver pair streaming 64 KiB messages; payload bytes counted at the receiver (MB = 10^6 bytes). socat forwards the same bytes without routing them.",
      rows,
    }];
  });
}

/** Round-trip latency at 64 B: relay against nats-server. */
function runLatency(gen: GeneratorProcess, options: SuiteOptions) {
  return withRelayAndPeers(options, "latency", "ceiling", async (systems) => {
    options.log("  latency-64B");
    const rows = await measureRows(options, systems, "µs", async (target) => {
      const job: LatencyJob = {
        kind: "latency",
        ...target,
        payloadBytes: 64,
        warmupMs: options.warmupMs,
        durationMs: options.durationMs,
      };
      const r = await gen.run<LatencyResult>(job);
      return {
        value: r.p50Us,
        detail: {
          p99Us: r.p99Us,
          meanUs: r.meanUs,
          roundTrips: r.count,
          serverCpu: r.serverCpu,
          generatorCpu: r.generatorCpu,
        },
      };
    });
    return [{
      id: "latency-64B",
      group: "latency",
      title: "Round trip p50, 64 B (p99 in detail)",
      short: "64 B round trip p50",
      unit: "µs",
      higherIsBetter: false,
      method:
        "One message at a time: client A sends 64 B to B, B sends it back as soon as it has arrived; every round trip timed. direct is the generator's own floor.",
      rows,
    }];
  });
}

/** Idle registered clients: relay memory per client and accept time, nats-server alongside. */
async function runIdle(gen: GeneratorProcess, options: SuiteOptions) {
  options.log(`  idle-${options.clients}`);
  // A fresh server for each measurement: the baseline is an idle, just-started process.
  type Idle = { protocol: "relay" | "nats"; start: () => Promise<Running> };
  const systems: System<Idle>[] = [
    {
      system: "relay",
      role: "subject",
      peer: { protocol: "relay", start: () => startRelay(projectOptions(options, "idle")) },
    },
    {
      system: "nats-server",
      role: "reference",
      peer: { protocol: "nats", start: optional(options, "nats-server", startNats) },
    },
  ];
  const rows = await measureRows(options, systems, "B/client", async ({ protocol, start }) => {
    const server = await start();
    try {
      const r = await gen.run<IdleResult>({
        kind: "idle",
        protocol,
        port: server.port,
        clients: options.clients,
        concurrency: Math.min(IDLE_CONCURRENCY, options.clients),
        pid: server.pids[0],
        settleMs: options.smoke ? SMOKE_SETTLE_MS : IDLE_SETTLE_MS,
      });
      if (r.bytesPerClient === undefined) {
        throw new Error("Cannot read the server's memory (/proc is Linux only)");
      }
      return {
        value: r.bytesPerClient,
        detail: {
          acceptSeconds: r.acceptSeconds,
          acceptPerSecond: r.acceptPerSecond,
          baselineRssBytes: r.baselineRssBytes,
          rssBytes: r.rssBytes,
          serverCpu: r.serverCpu,
          generatorCpu: r.generatorCpu,
        },
      };
    } finally {
      await server.stop();
    }
  });
  // One run measures both: the accept view takes its figure from the memory rows' detail.
  const acceptRows: Row[] = rows.map(({ system, role, skipped, error, detail }) =>
    detail?.acceptSeconds === undefined ? { system, role, skipped, error } : {
      system,
      role,
      value: detail.acceptSeconds,
      detail: {
        acceptPerSecond: detail.acceptPerSecond,
        serverCpu: detail.serverCpu,
        generatorCpu: detail.generatorCpu,
      },
    }
  );
  const clients = options.clients.toLocaleString("en-US");
  return [
    {
      id: "idle-memory",
      group: "idle",
      title: `Memory per idle registered client (${clients} clients)`,
      short: "RSS per idle client",
      unit: "B/client",
      higherIsBetter: false,
      method:
        `${clients} clients connect and register (relay: name and a self-addressed probe; nats: CONNECT, SUB, PING/PONG), ${IDLE_CONCURRENCY} handshakes at a time; the server's VmRSS after a ${IDLE_SETTLE_MS} ms pause minus its VmRSS before, divided by the clients.`,
      rows,
    },
    {
      id: "idle-accept",
      group: "idle",
      title: `Time to accept ${clients} registrations`,
      short: `time for ${clients} registrations`,
      unit: "s",
      higherIsBetter: false,
      method:
        `From the first connect to the last confirmed registration (the relay's probe delivered back, NATS's PONG), ${IDLE_CONCURRENCY} handshakes at a time.`,
      rows: acceptRows,
    },
  ] satisfies ScenarioResult[];
}

/** Payload of the one message each registered client receives. */
const REGISTER_MESSAGE_BYTES = 64;

/** Name of the bare accept loop's row. */
export const ACCEPT_LOOP = "deno accept loop";

/**
 * One-after-another registrations and memory per idle client after one delivered message:
 * the relay at its default log level (and at `warning`) against nats-server and a bare Deno
 * accept loop. A fresh server for each measurement.
 */
async function runRegister(gen: GeneratorProcess, options: SuiteOptions) {
  options.log(`  register-sequential-${options.clients}`);
  type Server = { protocol: "relay" | "nats" | "echo"; start: () => Promise<Running> };
  const relayStart = (defaultLogLevel: boolean) => () =>
    startRelay({ ...projectOptions(options, "register"), defaultLogLevel });
  const systems: System<Server>[] = [
    { system: "relay", role: "subject", peer: { protocol: "relay", start: relayStart(true) } },
    {
      system: "relay --log-level warning",
      role: "subject",
      peer: { protocol: "relay", start: relayStart(false) },
    },
    {
      // Issue 15: a claim is a few shared-memory operations, no round trip between threads.
      system: `relay --threads ${CORES}`,
      role: "subject",
      peer: {
        protocol: "relay",
        start: () =>
          startRelay({
            ...projectOptions(options, "register-threads"),
            defaultLogLevel: true,
            args: ["--threads", String(CORES)],
          }),
      },
    },
    {
      system: "nats-server",
      role: "reference",
      peer: { protocol: "nats", start: optional(options, "nats-server", startNats) },
    },
    { system: ACCEPT_LOOP, role: "reference", peer: { protocol: "echo", start: startAcceptLoop } },
  ];
  const rows = await measureRows(options, systems, "s", async ({ protocol, start }) => {
    const server = await start();
    try {
      const r = await gen.run<RegisterResult>({
        kind: "register",
        protocol,
        port: server.port,
        clients: options.clients,
        payloadBytes: REGISTER_MESSAGE_BYTES,
        pid: server.pids[0],
        settleMs: options.smoke ? SMOKE_SETTLE_MS : IDLE_SETTLE_MS,
      });
      if (r.bytesPerClient === undefined) {
        throw new Error("Cannot read the server's memory (/proc is Linux only)");
      }
      return {
        value: r.acceptSeconds,
        detail: {
          acceptPerSecond: r.acceptPerSecond,
          bytesPerClient: r.bytesPerClient,
          deliverSeconds: r.deliverSeconds,
          baselineRssBytes: r.baselineRssBytes,
          registeredRssBytes: r.registeredRssBytes,
          rssBytes: r.rssBytes,
          serverCpu: r.serverCpu,
          generatorCpu: r.generatorCpu,
        },
      };
    } finally {
      await server.stop();
    }
  });
  // One run measures both: the memory view takes its figure from the time rows' detail.
  const memoryRows: Row[] = rows.map(({ system, role, skipped, error, detail }) =>
    detail?.bytesPerClient === undefined ? { system, role, skipped, error } : {
      system,
      role,
      value: detail.bytesPerClient,
      detail: {
        baselineRssBytes: detail.baselineRssBytes,
        registeredRssBytes: detail.registeredRssBytes,
        rssBytes: detail.rssBytes,
        deliverSeconds: detail.deliverSeconds,
      },
    }
  );
  const clients = options.clients.toLocaleString("en-US");
  return [
    {
      id: "register-sequential",
      group: "register",
      title: `${clients} clients connecting and registering one after another`,
      short: `${clients} sequential registrations`,
      unit: "s",
      higherIsBetter: false,
      method:
        `Each client connects, registers and waits for its confirmation before the next one starts (relay: name and a self-addressed probe; nats: CONNECT, SUB, PING/PONG; the bare Deno accept loop reads 1 KiB buffers and echoes the relay client's bytes back). "relay" runs at its default log level, as an operator gets it; the figure is the time from the first connect to the last confirmation.`,
      rows,
    },
    {
      id: "idle-memory-message",
      group: "register",
      title: `Memory per idle client after one delivered message (${clients} clients)`,
      short: "RSS per idle client after a message",
      unit: "B/client",
      higherIsBetter: false,
      method:
        `After the one-after-another registrations, every client receives one ${REGISTER_MESSAGE_BYTES} B message (relay and nats: from one extra sender; the bare loop: its own echo), then after a ${IDLE_SETTLE_MS} ms pause the server's VmRSS minus its VmRSS before the first client, divided by the clients.`,
      rows: memoryRows,
    },
  ] satisfies ScenarioResult[];
}

/** Tunnel bulk transfer against ssh -L, and HTTP through the tunnel against direct. */
async function runTunnel(
  gen: GeneratorProcess,
  options: SuiteOptions,
  bulk: boolean,
  http: boolean,
) {
  const sink = freePort();
  const results: ScenarioResult[] = [];
  const [relay, web] = await Promise.all([
    tryStart(() => startRelay(projectOptions(options, "tunnel"))),
    tryStart(startHttpServer),
  ]);
  const startTunnelPair = () =>
    relay instanceof Error
      ? relay instanceof Unavailable
        ? new Unavailable(`tunnel not available: ${relay.message}`)
        : new Error(`The relay failed to start: ${relay.message}`)
      : web instanceof Error
      ? web
      : tryStart(() =>
        startTunnels(
          relay.port,
          { bulk: sink, web: web.port },
          (ports) => httpGet(ports.web),
          projectOptions(options, "tunnel"),
        )
      );
  // The encrypted pair shares the relay; its own names keep the two pairs apart.
  const secretDir = bulk ? await Deno.makeTempDir({ prefix: "relay-bench-secret-" }) : undefined;
  const startSecretPair = async () => {
    if (relay instanceof Error || web instanceof Error || !secretDir) return startTunnelPair();
    const secretFile = join(secretDir, "tunnel.secret");
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const hex = Array.from(secret, (b) => b.toString(16).padStart(2, "0")).join("");
    await Deno.writeTextFile(secretFile, `${hex}\n`, { mode: 0o600 });
    return tryStart(() =>
      startTunnels(
        relay.port,
        { bulk: sink, web: web.port },
        (ports) => httpGet(ports.web),
        { ...projectOptions(options, "tunnel"), secretFile, namePrefix: "bench-secret" },
      )
    );
  };
  const [tunnels, secretTunnels, ssh, socat] = await Promise.all([
    startTunnelPair(),
    bulk ? startSecretPair() : undefined,
    web instanceof Error
      ? web
      : tryStart(optional(options, "ssh", () => startSshTunnel([sink, web.port]))),
    bulk ? tryStart(optional(options, "socat", () => startSocat(sink))) : undefined,
  ]);
  try {
    const tunnelPids = (t: TunnelPair) => [...(relay as Running).pids, ...t.pids];
    if (bulk) {
      options.log("  tunnel-bulk");
      const systems: System<Endpoint>[] = [
        {
          system: "tunnel",
          role: "subject",
          peer: mapPeer(tunnels, (t) => ({
            protocol: "raw",
            port: t.ports.bulk,
            listenPort: sink,
            pids: tunnelPids(t),
          })),
          running: [relay, tunnels],
        },
        {
          system: SECRET_TUNNEL,
          role: "subject",
          peer: mapPeer(secretTunnels!, (t) => ({
            protocol: "raw",
            port: t.ports.bulk,
            listenPort: sink,
            pids: tunnelPids(t),
          })),
          running: [relay, secretTunnels],
        },
        {
          system: "ssh -L",
          role: "reference",
          peer: mapPeer(ssh, (s) => forwarderTarget(s, sink)),
          running: [ssh],
        },
        {
          system: "socat",
          role: "ceiling",
          peer: mapPeer(socat!, (s) => forwarderTarget(s, sink)),
          running: [socat],
        },
        { system: "direct", role: "ceiling", peer: DIRECT },
      ];
      const rows = await measureRows(options, systems, "MB/s", async (target) => {
        // A plain byte stream: only TCP's and the tunnels' own flow control apply.
        const job = { ...flowJob(options, target, 64 * KIB, 1), windowBytes: 0 };
        const r = await gen.run<FlowResult>(job);
        return flowSample(r, r.payloadBytesPerSecond / 1e6);
      });
      results.push({
        id: "tunnel-bulk",
        group: "tunnel",
        title: "Tunnel bulk transfer, MB/s, one TCP stream",
        short: "tunnel MB/s",
        unit: "MB/s",
        higherIsBetter: true,
        method:
          `One TCP connection through the forwarding tunnel → relay → exposing tunnel → a byte-counting sink, written in 64 KiB pieces: plaintext, and with --secret-file (AES-256-GCM end to end) as "${SECRET_TUNNEL}"; the same through ssh -L (aes128-gcm) and socat; CPU is the whole chain's.`,
        rows,
      });
      const streams = options.streams;
      options.log(`  tunnel-streams (${streams} streams)`);
      const streamSystems = systems.filter((s) => s.system !== "socat");
      const streamRows = await measureRows(options, streamSystems, "MB/s", async (target) => {
        const job = { ...flowJob(options, target, 64 * KIB, streams), windowBytes: 0 };
        const r = await gen.run<FlowResult>(job);
        return {
          value: r.payloadBytesPerSecond / 1e6,
          detail: {
            serverCpu: r.serverCpu,
            generatorCpu: r.generatorCpu,
            firstDeliverySeconds: r.firstDeliverySeconds,
            minStreamMBps: r.minPairBytesPerSecond / 1e6,
            maxStreamMBps: r.maxPairBytesPerSecond / 1e6,
            fairness: r.maxPairBytesPerSecond > 0
              ? r.minPairBytesPerSecond / r.maxPairBytesPerSecond
              : 0,
          },
        };
      });
      results.push({
        id: "tunnel-streams",
        group: "tunnel",
        title: `Tunnel, ${streams} concurrent streams, aggregate MB/s`,
        short: `${streams} tunnel streams MB/s`,
        unit: "MB/s",
        higherIsBetter: true,
        method:
          `${streams} TCP connections at once through one forwarding tunnel → relay → exposing tunnel → a byte-counting sink, each written in 64 KiB pieces as fast as it goes; the figure is all streams together, and the notes give the slowest and fastest stream and their ratio (fairness, 1 = equal shares), and the time until every stream had delivered its first bytes (counting starts after that and the warmup). The same through ssh -L (one SSH connection) and directly.`,
        rows: streamRows,
      });
    }
    if (http) {
      options.log("  http");
      const wrk = options.without.has("wrk") ? undefined : findExecutable("wrk");
      const noWrk = new Unavailable(
        options.without.has("wrk")
          ? "wrk left out by --without"
          : "wrk not installed (Debian package wrk)",
      );
      const webPids = web instanceof Error ? [] : web.pids;
      const systems: System<{ port: number; pids: number[] }>[] = [
        {
          system: "tunnel",
          role: "subject",
          peer: wrk
            ? mapPeer(tunnels, (t) => ({ port: t.ports.web, pids: [...tunnelPids(t), ...webPids] }))
            : noWrk,
          running: [relay, tunnels, web],
        },
        {
          system: "direct",
          role: "reference",
          peer: wrk ? mapPeer(web, (w) => ({ port: w.port, pids: w.pids })) : noWrk,
          running: [web],
        },
        {
          system: "ssh -L",
          role: "reference",
          peer: wrk
            ? mapPeer(ssh, (s: Forwards) => ({ port: s.ports[1], pids: [...s.pids, ...webPids] }))
            : noWrk,
          running: [ssh, web],
        },
      ];
      const rows = await measureRows(
        options,
        systems,
        "req/s",
        (target) => runWrk(wrk!, target, options),
      );
      results.push({
        id: "http",
        group: "http",
        title: "HTTP requests/s (small response)",
        short: "HTTP req/s",
        unit: "req/s",
        higherIsBetter: true,
        method:
          `wrk, 1 thread, ${options.httpConnections} keep-alive connections, against a small Deno.serve server: directly, through the tunnel pair and relay, and through ssh -L.`,
        rows,
      });
    }
  } finally {
    await stopAll([relay, web, tunnels, secretTunnels, ssh, socat]);
    if (secretDir) await Deno.remove(secretDir, { recursive: true }).catch(() => {});
  }
  return results;
}

/** Name of the encrypted tunnel's row. */
export const SECRET_TUNNEL = "tunnel --secret-file";

async function httpGet(port: number): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2_000) });
  await res.body?.cancel();
  if (!res.ok) throw new Error(`HTTP ${res.status} through the tunnel`);
}

/** wrk takes whole seconds. */
function wrkSeconds(ms: number): number {
  return Math.max(1, Math.round(ms / 1000));
}

async function runWrk(
  wrk: string,
  target: { port: number; pids: number[] },
  options: SuiteOptions,
): Promise<Sample> {
  const url = `http://127.0.0.1:${target.port}/`;
  const base = ["-t1", `-c${options.httpConnections}`, "--timeout", "5s"];
  if (!options.smoke) {
    // Warm up the JIT and open every stream before counting.
    await new Deno.Command(wrk, {
      args: [...base, `-d${wrkSeconds(options.warmupMs)}s`, url],
      stdout: "null",
      stderr: "null",
    }).output();
  }
  const cpu = new CpuMeter(target.pids);
  cpu.start();
  const out = await new Deno.Command(wrk, {
    args: [...base, `-d${wrkSeconds(options.durationMs)}s`, "--latency", url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const serverCpu = cpu.stop();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const rps = text.match(/Requests\/sec:\s+([\d.]+)/);
  if (!out.success || !rps) throw new Error(`wrk failed: ${text.trim()}`);
  const errors = text.match(/Socket errors: (.*)/) ?? text.match(/Non-2xx or 3xx responses: (\d+)/);
  if (errors) throw new Error(`wrk saw errors: ${errors[0]}`);
  return {
    value: Number(rps[1]),
    detail: { p50Ms: wrkLatencyMs(text, "50%"), p99Ms: wrkLatencyMs(text, "99%"), serverCpu },
  };
}

const WRK_UNITS_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function wrkLatencyMs(text: string, percentile: string): number | undefined {
  const m = text.match(new RegExp(`^\\s*${percentile}\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m"));
  return m ? Number(m[1]) * WRK_UNITS_MS[m[2]] : undefined;
}

/** Runs the selected groups in order and returns every scenario's rows. */
export async function runSuite(
  gen: GeneratorProcess,
  options: SuiteOptions,
): Promise<ScenarioResult[]> {
  const results: ScenarioResult[] = [];
  const want = (g: Group) => options.groups.has(g);
  const timed = async (name: string, run: () => Promise<ScenarioResult[]>) => {
    const t0 = performance.now();
    results.push(...await run());
    options.log(`  ${name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  };
  if (want("msgs")) await timed("msgs", () => runMessages(gen, options));
  if (want("bulk")) await timed("bulk", () => runBulk(gen, options));
  if (want("latency")) await timed("latency", () => runLatency(gen, options));
  if (want("idle")) await timed("idle", () => runIdle(gen, options));
  if (want("register")) await timed("register", () => runRegister(gen, options));
  if (want("scaling")) await timed("scaling", () => runScaling(gen, options));
  if (want("tunnel") || want("http")) {
    await timed(
      "tunnel",
      () => runTunnel(gen, options, want("tunnel"), want("http")),
    );
  }
  // Cluster mode (scripts/bench/cluster.ts): loaded only when asked for, with the NATS client.
  if (want("cluster")) {
    await timed("cluster", async () => (await import("./cluster.ts")).runCluster(options));
  }
  return results;
}
