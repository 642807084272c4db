/**
 * `/metrics`: the relay's counters in the Prometheus text format, through `prom-client` (the
 * usual Node library; it runs under Deno unchanged). Every value is read from one
 * `RelayServer.stats()` snapshot at scrape time, so scraping costs nothing between scrapes and
 * the hot path only keeps its plain counters.
 *
 * Reasons are labels, from the reasons module (all of them, at 0 until they happen, so alerts
 * and rate() see a series from the start).
 * @module
 */

import { Counter, Gauge, Registry } from "prom-client";
import { DISCONNECT_REASONS, DROP_REASONS, REFUSAL_REASONS } from "../wire/reasons.ts";
import { MESSAGE_SIZE_BUCKETS_BYTES, type RelayStats } from "../relay/server.ts";
import { VERSION } from "../version.ts";

/** The `Content-Type` of the exposition format served. */
export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;

/** What the metrics read at scrape time. */
export interface MetricsSource {
  /** A stats snapshot of the relay. */
  stats(): RelayStats;
  /** WebSocket connections open now. */
  webSockets(): number;
  /** Bytes in WebSocket send buffers now. */
  webSocketBufferedBytes(): number;
  /** WebSockets closed for sending more than the relay read. */
  webSocketOverflows(): number;
  /** The per-receiver buffer budget in bytes. */
  maxBufferBytes: number;
  /** Most connections at once. */
  maxConnections: number;
  /** When the relay started, ms since the epoch. */
  startedAt: number;
}

/** A Prometheus registry over one relay. */
export class RelayMetrics {
  readonly #registry = new Registry();
  readonly #source: MetricsSource;
  #snapshot: RelayStats | undefined;

  /** @param source where the values come from */
  constructor(source: MetricsSource) {
    this.#source = source;
    const registers = [this.#registry];
    const stat = () => this.#snapshot!;
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(value());
        },
      });
    const counter = (name: string, help: string, value: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(value());
        },
      });
    const byReason = (
      name: string,
      help: string,
      known: Record<string, string>,
      value: () => Partial<Record<string, number>>,
    ) =>
      new Counter({
        name,
        help,
        labelNames: ["reason"],
        registers,
        collect() {
          this.reset();
          const counts = value();
          for (const reason of new Set([...Object.keys(known), ...Object.keys(counts)])) {
            this.inc({ reason }, counts[reason] ?? 0);
          }
        },
      });

    new Gauge({
      name: "relay_info",
      help: "Always 1; the version is a label",
      labelNames: ["version"],
      registers,
      collect() {
        this.set({ version: VERSION }, 1);
      },
    });
    // Cluster mode: which node this is, and the names its peers hold (by node).
    new Gauge({
      name: "relay_node_info",
      help: "Always 1 in cluster mode; this node's name is a label",
      labelNames: ["node"],
      registers,
      collect() {
        this.reset();
        const mesh = stat().mesh;
        if (mesh) this.set({ node: mesh.node }, 1);
      },
    });
    new Gauge({
      name: "relay_cluster_remote_names",
      help: "Names held on other cluster nodes, as this node sees them, by node",
      labelNames: ["node"],
      registers,
      collect() {
        this.reset();
        const mesh = stat().mesh;
        if (mesh) {
          for (const [node, n] of Object.entries(mesh.remoteNames)) this.set({ node }, n);
        }
      },
    });
    new Gauge({
      name: "relay_cluster_pairs_in",
      help: "Pairs from other cluster nodes delivering to clients here now",
      registers,
      collect() {
        this.set(stat().mesh?.pairsIn ?? 0);
      },
    });
    gauge(
      "relay_start_time_seconds",
      "When the relay started, seconds since the Unix epoch",
      () => source.startedAt / 1000,
    );
    gauge(
      "relay_connections",
      "Connections open now (TCP, TLS and WebSocket)",
      () => stat().connections,
    );
    gauge(
      "relay_websocket_connections",
      "WebSocket connections open now",
      () => source.webSockets(),
    );
    gauge(
      "relay_websocket_buffered_bytes",
      "Bytes in WebSocket send buffers now",
      () => source.webSocketBufferedBytes(),
    );
    counter(
      "relay_websocket_overflows_total",
      "WebSockets closed for sending more than the relay read (4 MiB unread)",
      () => source.webSocketOverflows(),
    );
    gauge(
      "relay_max_connections",
      "Most connections open at once (--max-connections)",
      () => source.maxConnections,
    );
    gauge("relay_registered_names", "Names registered now", () => stat().registered);
    counter(
      "relay_connections_accepted_total",
      "Connections accepted since start",
      () => stat().accepted,
    );
    counter(
      "relay_messages_received_total",
      "Messages received from clients with a destination (delivered or dropped)",
      () => stat().messages + sum(stat().dropped),
    );
    counter(
      "relay_messages_delivered_total",
      "Messages queued for their receiver",
      () => stat().messages,
    );
    counter(
      "relay_delivered_bytes_total",
      "Payload bytes queued for receivers",
      () => stat().bytes,
    );
    gauge("relay_queued_bytes", "Bytes waiting in receivers' queues now", () => stat().queuedBytes);
    gauge(
      "relay_buffer_budget_bytes",
      "Bytes one receiver may have queued before its senders wait (--max-buffer)",
      () => source.maxBufferBytes,
    );
    const budget = () => (stat() as { memory?: { usedBytes: number; budgetBytes: number } }).memory;
    gauge(
      "relay_memory_budget_bytes",
      "The relay's global memory budget for queued data (--max-memory); 0 when there is none",
      () => budget()?.budgetBytes ?? 0,
    );
    gauge(
      "relay_memory_budget_used_bytes",
      "Bytes of the global memory budget in use: queued for receivers and in flight to them",
      () => budget()?.usedBytes ?? stat().queuedBytes,
    );
    byReason(
      "relay_disconnects_total",
      "Connections ended, by reason",
      DISCONNECT_REASONS,
      () => stat().disconnects,
    );
    byReason(
      "relay_refused_total",
      "Connections refused at accept, by reason",
      REFUSAL_REASONS,
      () => stat().refused,
    );
    byReason(
      "relay_dropped_total",
      "Messages not delivered, by reason",
      DROP_REASONS,
      () => stat().dropped,
    );
    gauge(
      "process_resident_memory_bytes",
      "Resident memory size in bytes",
      () => Deno.memoryUsage().rss,
    );
    gauge(
      "process_heap_used_bytes",
      "JavaScript heap in use, in bytes",
      () => Deno.memoryUsage().heapUsed,
    );
    gauge(
      "process_heap_total_bytes",
      "JavaScript heap reserved, in bytes",
      () => Deno.memoryUsage().heapTotal,
    );
    gauge(
      "process_external_memory_bytes",
      "Memory outside the heap (buffers), in bytes",
      () => Deno.memoryUsage().external,
    );
    this.#registry.registerMetric(sizeHistogram(stat) as never);
  }

  /** The exposition text of every metric now. */
  async text(): Promise<string> {
    this.#snapshot = this.#source.stats();
    try {
      return await this.#registry.metrics();
    } finally {
      this.#snapshot = undefined;
    }
  }
}

/** The message-size histogram, built from the relay's pre-bucketed counts. */
function sizeHistogram(stat: () => RelayStats) {
  const name = "relay_message_size_bytes";
  return {
    name,
    help: "Payload sizes of delivered messages",
    type: "histogram",
    get() {
      const { messageSizes, bytes } = stat();
      const values = [];
      let cumulative = 0;
      for (let i = 0; i < messageSizes.length; i++) {
        cumulative += messageSizes[i];
        const le = i < MESSAGE_SIZE_BUCKETS_BYTES.length
          ? String(MESSAGE_SIZE_BUCKETS_BYTES[i])
          : "+Inf";
        values.push({ metricName: `${name}_bucket`, labels: { le }, value: cumulative });
      }
      values.push({ metricName: `${name}_sum`, labels: {}, value: bytes });
      values.push({ metricName: `${name}_count`, labels: {}, value: cumulative });
      return { name, help: this.help, type: "histogram", values, aggregator: "sum" };
    },
  };
}

function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
