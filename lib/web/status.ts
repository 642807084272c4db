/**
 * What the status page, `/api/status` and the live event stream show: one JSON snapshot of the
 * relay, and a sampler that keeps the last minutes of message and byte rates for the chart.
 * @module
 */

import type { RelayStats } from "../relay/server.ts";
import { VERSION } from "../version.ts";

/** Seconds between samples of the rate history (and events on the live stream). */
export const SAMPLE_INTERVAL_MS = 1_000;

/** Samples kept: five minutes at one a second, enough to see a burst come and go. */
export const HISTORY_SAMPLES = 300;

/** Names listed at most on the status page and in one `/api/names` answer. */
export const MAX_LISTED_NAMES = 1_000;

/** One point of the rate history. */
export interface RateSample {
  /** Ms since the epoch. */
  t: number;
  /** Messages delivered per second over the last interval. */
  messagesPerSecond: number;
  /** Payload bytes delivered per second over the last interval. */
  bytesPerSecond: number;
  /** Connections open at the sample. */
  connections: number;
}

/** What a status snapshot is made from. */
export interface StatusSource {
  /** The relay's counters. */
  stats(): RelayStats;
  /** Registered names, sorted, at most `limit`. */
  names(prefix?: string, limit?: number): string[];
  /** WebSocket connections open now. */
  webSockets(): number;
  /** Settings in effect, shown as they are. */
  settings: Record<string, unknown>;
  /** Whether names may be listed (`--listing`). */
  listing: boolean;
  /** When the relay started, ms since the epoch. */
  startedAt: number;
  /** The relay's connection limit. */
  maxConnections: number;
  /** Bytes one receiver may have queued. */
  maxBufferBytes: number;
}

/** The JSON of `/api/status`. */
export interface StatusSnapshot extends RelayStats {
  /** The relay's version. */
  version: string;
  /** Start time, ISO 8601. */
  startedAt: string;
  /** Seconds since start. */
  uptimeSeconds: number;
  /** Settings in effect. */
  settings: Record<string, unknown>;
  /** Whether names are listed. */
  listing: boolean;
  /** The relay's connection limit. */
  maxConnections: number;
  /** Bytes one receiver may have queued before its senders wait. */
  maxBufferBytes: number;
  /** Names online (at most {@linkcode MAX_LISTED_NAMES}), absent when listing is off. */
  names?: string[];
  /** WebSocket connections open now. */
  webSockets: number;
  /** The latest rates. */
  rate: RateSample;
  /** Process memory, bytes. */
  process: { rss: number; heapUsed: number; heapTotal: number; external: number };
}

/** Samples the relay once a second and keeps the last {@linkcode HISTORY_SAMPLES}. */
export class StatusSampler implements Disposable {
  readonly #source: StatusSource;
  readonly #history: RateSample[] = [];
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #listeners = new Set<(snapshot: StatusSnapshot) => void>();
  #last: { at: number; messages: number; bytes: number };

  /** @param source the relay to sample */
  constructor(source: StatusSource) {
    this.#source = source;
    const stats = source.stats();
    this.#last = { at: Date.now(), messages: stats.messages, bytes: stats.bytes };
    this.#timer = setInterval(() => this.#sample(), SAMPLE_INTERVAL_MS);
  }

  /** The rate history, oldest first. */
  history(): RateSample[] {
    return [...this.#history];
  }

  /** Calls `listener` with a fresh snapshot after every sample; returns the unsubscribe. */
  subscribe(listener: (snapshot: StatusSnapshot) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A snapshot now. */
  snapshot(): StatusSnapshot {
    const source = this.#source;
    const stats = source.stats();
    const now = Date.now();
    const memory = Deno.memoryUsage();
    return {
      version: VERSION,
      startedAt: new Date(source.startedAt).toISOString(),
      uptimeSeconds: Math.floor((now - source.startedAt) / 1000),
      settings: source.settings,
      listing: source.listing,
      maxConnections: source.maxConnections,
      maxBufferBytes: source.maxBufferBytes,
      ...stats,
      ...(source.listing ? { names: source.names("", MAX_LISTED_NAMES) } : {}),
      webSockets: source.webSockets(),
      rate: this.#history.at(-1) ??
        { t: now, messagesPerSecond: 0, bytesPerSecond: 0, connections: stats.connections },
      process: {
        rss: memory.rss,
        heapUsed: memory.heapUsed,
        heapTotal: memory.heapTotal,
        external: memory.external,
      },
    };
  }

  #sample(): void {
    const stats = this.#source.stats();
    const now = Date.now();
    const seconds = Math.max(0.001, (now - this.#last.at) / 1000);
    this.#history.push({
      t: now,
      messagesPerSecond: Math.max(0, (stats.messages - this.#last.messages) / seconds),
      bytesPerSecond: Math.max(0, (stats.bytes - this.#last.bytes) / seconds),
      connections: stats.connections,
    });
    if (this.#history.length > HISTORY_SAMPLES) this.#history.shift();
    this.#last = { at: now, messages: stats.messages, bytes: stats.bytes };
    if (this.#listeners.size === 0) return;
    const snapshot = this.snapshot();
    for (const listener of this.#listeners) listener(snapshot);
  }

  /** Stops sampling. */
  [Symbol.dispose](): void {
    clearInterval(this.#timer);
    this.#listeners.clear();
  }
}
