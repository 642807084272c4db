/**
 * The messages between the main thread of a multi-threaded relay and its workers, over each
 * worker's own `postMessage` channel (data between workers goes over their MessagePorts, never
 * through here).
 *
 * ```
 * main ─ start ──────────▶ worker    (options, shared buffers, ports to the other workers)
 * main ◀───────── ready ── worker    (or failed: the reason it could not listen)
 * main ◀─────── changes ── worker ─▶ main ─ changes ─▶ every other worker (batched, numbered)
 * main ─ stats / reload ─▶ worker ─▶ main ◀ stats / reloaded (answered by id)
 * main ◀─────────── log ── worker    (records written once, by the main thread)
 * main ─ close ──────────▶ worker ─▶ main ◀ closed
 * ```
 * @module
 */

import type { RelayServerOptions, RelayStats, TlsCertificate } from "../relay/server.ts";
import type { CrossedStats } from "./worker_mesh.ts";
import type { WebServerOptions } from "../web/server.ts";
import type { ClusterSettings } from "../cluster/join.ts";
import type { AuthSnapshot } from "../relay/auth.ts";

/** Server options that cross to a worker (plain data; the auth policy goes apart). */
export type WorkerServerOptions = Omit<
  RelayServerOptions,
  "auth" | "sharedMemory" | "reusePort" | "connectionGate" | "mesh" | "ipLimits"
>;

/** The first message to a worker. */
export interface StartMessage {
  type: "start";
  /** This worker's index. */
  index: number;
  /** Its server's options (with the port already chosen by the main thread). */
  options: WorkerServerOptions;
  /** The auth file to load, if any. */
  auth?: { path: string; requireAuth: boolean };
  /** An auth policy to rebuild (`AuthPolicy.fromSnapshot`), when there is no file to load. */
  authPolicy?: AuthSnapshot;
  /** Lowest level of the log records to send to the main thread. */
  logLevel: string;
  /** The process's name table. */
  table: SharedArrayBuffer;
  /** The process's presence log (presence_log.ts): every name change, in one order. */
  presenceLog: SharedArrayBuffer;
  /** The process's memory budget slots. */
  budget: SharedArrayBuffer;
  /** Bytes of the budget set aside for the rings between workers (memory_plan.ts). */
  reservedBytes: number;
  /** Capacity of each ring into this worker (memory_plan.ts). */
  ringBytes: number;
  /**
   * Cluster mode: bytes worker 0's bridges may hold together (bridge_allowance.ts), set aside
   * from the budget with the rings; undefined without a budget.
   */
  bridgeBytes?: number;
  /** The process's connection count (`--max-connections` for all workers together). */
  connections: SharedArrayBuffer;
  /** The process's per-IP counts (see `ip_table.ts`), so per-IP limits hold for all workers. */
  ipTable: SharedArrayBuffer;
  /** One port per other worker, keyed by node name. */
  peers: Record<string, MessagePort>;
  /** Where the worker writes its answer to `statsNow` (see `reply_box.ts`). */
  replyBox: SharedArrayBuffer;
  /** Every worker's box for the web side's counters (worker 0 reads the others'). */
  webBoxes: SharedArrayBuffer[];
  /**
   * Worker 0: a port to each other worker, by index, to ask for its counters; the others: the
   * port they are asked on. Straight between workers, so the web side never waits on the main
   * thread (which may itself be waiting in `statsNow`).
   */
  gather: Record<number, MessagePort>;
  /** The HTTP side, served by worker 0 alone (`--http-port`). */
  web?: Omit<WebServerOptions, "relay">;
  /** Cluster mode: the cluster and the process's node name (worker 0 joins it for all). */
  cluster?: ClusterSettings;
}

/** What the main thread sends a running worker. */
export type ToWorker =
  | StartMessage
  | { type: "changed"; changes: NameChange[] }
  | { type: "stats"; id: number }
  | { type: "statsNow" }
  | { type: "quiet"; id: number }
  | { type: "reload"; id: number; tls?: TlsCertificate; auth: boolean }
  /** A connection accepted elsewhere, to serve over `port` (conn_bridge.ts). */
  | { type: "serve"; port: MessagePort; remoteAddr: Deno.NetAddr }
  /** The first step of a shutdown: listeners closed, open connections served on. */
  | { type: "stopAccepting" }
  | { type: "close" }
  /** Tests only: fail with an uncaught error, as a bug would. */
  | { type: "crash" };

/** A worker's counters, with its mesh's. */
export interface WorkerStats {
  /** The server's counters. */
  relay: RelayStats;
  /** Pairs open to and from other workers. */
  pairs: { sending: number; receiving: number };
  /** Messages taken from other workers (counted as delivered by both workers' servers). */
  crossed: CrossedStats;
}

/** What a worker sends the main thread. */
export type FromWorker =
  | { type: "ready"; port: number; tlsPort?: number }
  | { type: "failed"; error: string; code?: string }
  | { type: "changed"; changes: NameChange[] }
  | { type: "stats"; id: number; stats: WorkerStats }
  | { type: "quiet"; id: number; quiet: boolean }
  | { type: "reloaded"; id: number; error?: string; errorName?: string; authNames?: number }
  | { type: "log"; record: WorkerLogRecord }
  | { type: "closed" }
  | { type: "webReady"; scheme: string; hostname: string; port: number };

/** A name that changed hands: the table's generation after the change, and its new holder. */
export interface NameChange {
  /** The change's number (the name table's generation right after it). */
  generation: number;
  /** The name. */
  name: string;
  /** The worker holding it now, or -1 when nobody does. */
  owner: number;
}

/** A log record as it crosses threads. */
export interface WorkerLogRecord {
  /** The logger's category. */
  category: readonly string[];
  /** Its level. */
  level: "trace" | "debug" | "info" | "warning" | "error" | "fatal";
  /** The message template. */
  rawMessage: string;
  /** The message with its values in place: text and values in turn (plain data). */
  message: unknown[];
  /** The template's values and other properties (plain data). */
  properties: Record<string, unknown>;
  /** When it was logged, in ms since the epoch. */
  timestamp: number;
}
