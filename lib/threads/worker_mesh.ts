/**
 * The {@linkcode Mesh} of one worker of a multi-threaded relay (`relay serve --threads N`):
 * names come from the process-wide {@linkcode NameTable} in shared memory, data goes to other
 * workers through one shared-memory ring per ordered pair of workers (ring.ts, ring_link.ts,
 * ring_inbox.ts).
 *
 * ```
 * claim    table.claim(name, me)          (shared memory, no round trip) → change to the others
 * holder   table.holder(name)             (shared memory)
 * route    links["w2"].open(key) ─ ring w1→w2 (records, one doorbell a task) ─▶ w2's outboxes
 *          (before w2's ring is here, or with every pair id in use: streams.open("w2", key)
 *           ─ WorkerTransport (ArrayBuffers, one message a task) ─▶ w2, as between nodes)
 * changed  presence log (presence_log.ts, appended under the table's lock) read in order at
 *          each claim, release, sync() and doorbell (a change message from the main thread)
 *          → events.changed(name, node)
 * ```
 *
 * Why a ring and not the cluster's stream layer: between workers nothing is lost or reordered
 * on the way, so sequence numbers, credit frames, packets and a chunk object per message
 * bought nothing, and cost most of a crossing message's CPU (profiled: a third of each
 * worker's busy time in the stream layer, 17 % making chunk objects, 15 % posting messages,
 * GC 14–21 %). The ring copies a message once into shared memory from the sender's read
 * buffer and once out of it into the receiver's queue; backpressure is a word per pair in
 * shared memory that the receiving worker sets while the receiver is over its share. The
 * stream path stays for the moments the ring cannot serve (startup, pair ids used up).
 *
 * Changes from different workers are told to the listener in the one order of the shared
 * presence log, the order in which names really changed hands; the change messages through the
 * main thread are only a doorbell. The log is read before this worker's own change is told
 * (claim, release) and whenever the server calls `sync()` (before a pong or a watch reply),
 * so no event of this worker is told before an earlier one of another worker, and a pong
 * follows every change made before its ping. A worker that fell more than the log's length
 * behind resyncs from the table and tells the difference.
 * @module
 */

import type { Mesh, MeshClaim, MeshEvents, MeshPair } from "../relay/mesh.ts";
import type { Chunk, PairReceiver } from "../cluster/pair_receiver.ts";
import { ClusterStreams } from "../cluster/streams.ts";
import { WorkerTransport } from "./worker_transport.ts";
import { NameTable } from "./name_table.ts";
import type { NameChange } from "./messages.ts";
import { MESSAGE_SIZE_BUCKETS_BYTES } from "../relay/server.ts";
import { RingLink, type RingLinkBuffers } from "./ring_link.ts";
import { RingInbox } from "./ring_inbox.ts";
import { HeldMeter, type SharedBudget } from "../relay/memory_budget.ts";
import { WORKER_PAIR_WINDOW_BYTES } from "../limits.ts";
import { PRESENCE_RECORD_BYTES, readRecord } from "./presence_log.ts";

/** Presence-log records copied out per hold of the table's lock (68 KiB). */
const PRESENCE_BATCH_RECORDS = 256;

/**
 * Messages this worker took from pairs of other workers. The sending server counts them as
 * delivered when it routes them (as for a local receiver), and the receiving one again when it
 * queues them: the process's total counts them once, when routed. Messages on the ring path
 * (ring_inbox.ts) are counted by the sending worker only; those the ring path drops here
 * (their receiver ended) are counted here, as dropped, and in these counters.
 */
export interface CrossedStats {
  /** Messages taken from pairs (their last chunk). */
  messages: number;
  /** Their payload bytes. */
  bytes: number;
  /** Their sizes, in the buckets of `RelayStats.messageSizes`. */
  messageSizes: number[];
}

/** The node name of worker `index`. */
export function workerNode(index: number): string {
  return `w${index}`;
}

/** Options of a {@linkcode WorkerMesh}. */
export interface WorkerMeshOptions {
  /** This worker's index (0 … threads − 1). */
  index: number;
  /** The process's name table. */
  table: SharedArrayBuffer;
  /** One port per other worker, keyed by its node name. */
  peers: Map<string, MessagePort>;
  /** Posts a change of a name here (to the main thread, which tells the other workers). */
  hint(change: NameChange): void;
  /** The process's presence log (presence_log.ts), written with the name table. */
  presenceLog: SharedArrayBuffer;
  /** Largest message between workers (the relay's message limit). */
  maxMessageBytes: number;
  /**
   * Capacity of each ring into this worker, sized from the budget (memory_plan.ts).
   * @default {RING_CAPACITY_BYTES}
   */
  ringBytes?: number;
  /**
   * This worker's slots of the process's memory budget: what it holds for its receivers
   * outside their queues is charged there (ring records held aside, stream-layer chunks).
   */
  budget?: SharedBudget;
}

/** A worker's view of the other workers' names, and the way to reach them. */
export class WorkerMesh implements Mesh {
  /** This worker's node name. */
  readonly node: string;
  readonly #index: number;
  readonly #table: NameTable;
  readonly #transport: WorkerTransport;
  readonly #streams: ClusterStreams;
  readonly #hint: (change: NameChange) => void;
  /** The presence log's sequence number of the next change to tell the listener. */
  #cursor: number;
  /** Presence-log records copied out under the table's lock, decoded after. */
  readonly #records = new Uint8Array(PRESENCE_RECORD_BYTES * PRESENCE_BATCH_RECORDS);
  /** Names held by other workers as last told to the listener. */
  readonly #known = new Map<string, string>();
  #events: MeshEvents | undefined;
  #closing: Promise<void> | undefined;
  /** Pairs from other workers that are open or still hold bytes. */
  readonly #receivers = new Set<PairReceiver>();
  /** Sends to other workers not yet copied into packets. */
  #sending = 0;
  /** The ring path: the sending end of the ring to each other worker, once it shared it. */
  readonly #links = new Map<string, RingLink>();
  /** The ring path: the rings into this worker. */
  readonly #inbox: RingInbox;
  /** What this worker holds for its receivers outside their queues, charged to the budget. */
  readonly #held: HeldMeter | undefined;
  /** Bytes of stream-layer chunks waiting here to be queued, as charged to `#held`. */
  #streamHeld = 0;
  /** The table generation each name held here was claimed at (ring pairs bind only older). */
  readonly #claimedAt = new Map<string, number>();
  /** Messages taken from pairs (see {@linkcode CrossedStats}). */
  readonly crossed: CrossedStats = {
    messages: 0,
    bytes: 0,
    messageSizes: new Array<number>(MESSAGE_SIZE_BUCKETS_BYTES.length + 1).fill(0),
  };

  constructor(options: WorkerMeshOptions) {
    this.#index = options.index;
    this.node = workerNode(options.index);
    this.#table = new NameTable(options.table, options.presenceLog);
    this.#hint = options.hint;
    // Earlier changes are in the table already (no listener yet: nothing is told).
    this.#cursor = this.#resync();
    this.#transport = new WorkerTransport(this.node, options.peers);
    this.#held = options.budget && new HeldMeter(options.budget);
    this.#transport.onBatch = () => this.#meterStreams();
    this.#streams = new ClusterStreams(this.#transport, {
      maxMessageBytes: options.maxMessageBytes,
      windowBytes: WORKER_PAIR_WINDOW_BYTES, // charged to the budget while it waits here
      onPair: (receiver) => this.#pair(receiver),
    });
    this.#inbox = new RingInbox({
      local: (name) => this.#events?.local?.(name),
      claimedAt: (name) => this.#claimedAt.get(name) ?? 0,
      hold: (bytes) => this.#held?.add(bytes),
      gone: (bytes) => {
        this.#count(bytes); // the sending worker counted it as delivered
        this.#events?.count?.("receiver_gone", bytes);
      },
    }, options.ringBytes);
    // Each worker makes the rings into it and hands each to its writer; until a peer's ring
    // is here, pairs to that peer go through the stream layer.
    this.#transport.onSignal = (from, signal) => {
      const ring = (signal as { ring?: RingLinkBuffers }).ring;
      if (ring && !this.#closing) this.#links.set(from, new RingLink(from, ring));
    };
    for (const peer of options.peers.keys()) {
      this.#transport.signal(peer, { ring: this.#inbox.ringFrom(peer) });
    }
  }

  /** Bytes of shared memory held by the rings into this worker. */
  get ringBytes(): number {
    return this.#inbox.ringBytes;
  }

  /** Claims `name` process-wide; answers at once (shared memory). */
  claim(name: string): Promise<MeshClaim> {
    if (this.#closing) return Promise.resolve({ ok: false, reason: "cluster_unavailable" });
    if (!this.#table.claim(name, this.#index)) {
      return Promise.resolve({ ok: false, reason: "name_taken" });
    }
    this.#claimedAt.set(name, this.#table.lastChange);
    this.#made([{ generation: this.#table.lastChange, name, owner: this.#index }]);
    return Promise.resolve({ ok: true });
  }

  /** Frees `name` process-wide, if this worker holds it. */
  release(name: string): void {
    this.#inbox.release(name);
    this.#claimedAt.delete(name);
    if (this.#table.release(name, this.#index)) {
      this.#made([{ generation: this.#table.lastChange, name, owner: -1 }]);
    }
  }

  /** The worker holding `name`, when it is another worker. */
  holder(name: string): string | undefined {
    const owner = this.#table.holder(name);
    return owner === undefined || owner === this.#index ? undefined : workerNode(owner);
  }

  /** Moves on every claim and release in any worker. */
  get generation(): number {
    return this.#table.generation;
  }

  /** Opens a pair to another worker: on its ring, or (no ring yet, or no id free) a stream. */
  open(node: string, key: string): MeshPair {
    const fast = this.#links.get(node)?.open(key, this.#table.generation);
    if (fast !== undefined) return fast;
    return this.openStream(node, key);
  }

  /**
   * Opens a pair to another worker on the stream layer, never the ring: its receiving worker
   * gets the pair itself (cluster mode: worker 0 forwards it to another node, cluster_mesh.ts).
   */
  openStream(node: string, key: string): MeshPair {
    const pair = this.#streams.open(node, key);
    // Followed so that a shutdown can wait for data on its way between workers (`busy`).
    const send = pair.send.bind(pair);
    pair.send = (message, signal) => {
      this.#sending++;
      const sent = send(message, signal);
      sent.then(() => this.#sending--, () => this.#sending--);
      return sent;
    };
    return pair;
  }

  /** Whether data is on its way to or from another worker here (pairs not yet drained). */
  get busy(): boolean {
    if (this.#sending > 0 || this.#inbox.busy) return true;
    for (const link of this.#links.values()) if (link.busy) return true;
    for (const r of this.#receivers) {
      if (r.bufferedBytes > 0) return true;
      if (r.reason !== undefined) this.#receivers.delete(r);
    }
    return false;
  }

  #counted<T extends Chunk | null | undefined>(chunk: T): T {
    if (chunk?.last) this.#count(chunk.total);
    if (chunk && this.#held) {
      // Off the pair, into a queue (charged there).
      this.#held.add(-chunk.bytes.length);
      this.#streamHeld -= chunk.bytes.length;
    }
    return chunk;
  }

  /**
   * Charges the budget for the chunks of stream-layer pairs waiting here (after packets came,
   * or a pair closed), so a stalled receiver's pairs count like its queue; each of their
   * senders passes the budget by at most one window (`WORKER_PAIR_WINDOW_BYTES`).
   */
  #meterStreams(): void {
    if (this.#held === undefined) return;
    let bytes = 0;
    for (const r of this.#receivers) {
      if (r.reason !== undefined && r.bufferedBytes === 0) this.#receivers.delete(r);
      else bytes += r.bufferedBytes;
    }
    this.#held.add(bytes - this.#streamHeld);
    this.#streamHeld = bytes;
  }

  #count(bytes: number): void {
    const f = this.crossed;
    f.messages++;
    f.bytes += bytes;
    let bucket = 0;
    while (
      bucket < MESSAGE_SIZE_BUCKETS_BYTES.length && bytes > MESSAGE_SIZE_BUCKETS_BYTES[bucket]
    ) {
      bucket++;
    }
    f.messageSizes[bucket]++;
  }

  /** Every name held by the other workers. */
  remoteNames(): Iterable<[name: string, node: string]> {
    return this.#table.entries(this.#index).map(([name, owner]) => [name, workerNode(owner)]);
  }

  /** Whether the changes told to the listener so far say another worker holds `name`. */
  announced(name: string): boolean {
    return this.#known.has(name);
  }

  /** Sets who gets pairs and name changes. */
  listen(events: MeshEvents): void {
    this.#events = events;
  }

  /**
   * Changes made by other workers (the main thread's doorbell): the presence log is read, and
   * its changes told in its order (the messages' own order does not count).
   */
  changed(_changes: readonly NameChange[]): void {
    this.sync();
  }

  /**
   * Tells the listener every change made anywhere so far, in the order they were made: called
   * before a reply that must follow them (a pong, a watch reply) and before a change of this
   * worker's own is told.
   */
  sync(): void {
    this.#follow(Infinity);
  }

  /** A change made here: told to the others; the log is read up to it (not past it). */
  #made(changes: NameChange[]): void {
    for (const change of changes) this.#hint(change);
    if (changes.length > 0) this.#follow((this.#table.lastRecord + 1 - this.#cursor) >>> 0);
  }

  /** Tells the next `max` changes of the log (all there are, at most). */
  #follow(max: number): void {
    const out = this.#records;
    while (max > 0 && this.#table.logHead !== this.#cursor) {
      const n = this.#table.readLog(this.#cursor, max, out);
      if (n < 0) {
        this.#cursor = this.#resync();
        return;
      }
      if (n === 0) return;
      this.#cursor = (this.#cursor + n) >>> 0;
      max -= n;
      for (let i = 0; i < n; i++) {
        const { name, owner } = readRecord(out, i);
        this.#tell(name, owner < 0 || owner === this.#index ? null : workerNode(owner));
      }
    }
  }

  /** Tells the listener `name` is now on `node` (null: not on another worker), if news. */
  #tell(name: string, node: string | null): void {
    const before = this.#known.get(name) ?? null;
    if (node === before) return;
    if (before !== null && node !== null) this.#tell(name, null); // moved: gone, then back
    if (node === null) this.#known.delete(name);
    else this.#known.set(name, node);
    this.#events?.changed(name, node);
  }

  /**
   * Starts again from the table (this worker fell more than the log's length behind, or has
   * just started): tells the listener the difference from what it was told.
   * @returns the log's head at the snapshot
   */
  #resync(): number {
    const { head, entries } = this.#table.logSnapshot(this.#index);
    const now = new Map(entries.map(([name, owner]) => [name, workerNode(owner)]));
    for (const name of [...this.#known.keys()]) if (!now.has(name)) this.#tell(name, null);
    for (const [name, node] of now) this.#tell(name, node);
    return head;
  }

  /** Pairs open in each direction (for tests and stats). */
  get openPairs(): { sending: number; receiving: number } {
    return this.#streams.openPairs;
  }

  #pair(receiver: PairReceiver): void {
    // Each message read off the pair is counted, so the process's total can leave it out once
    // (the server queues it right after reading; one read after its receiver left is the
    // only one not queued, and then it is not counted by the receiving server either).
    const read = receiver.read.bind(receiver);
    const tryRead = receiver.tryRead.bind(receiver);
    receiver.read = async (signal) => this.#counted(await read(signal));
    receiver.tryRead = () => this.#counted(tryRead());
    const close = receiver.close.bind(receiver);
    receiver.close = (reason) => {
      close(reason); // its chunks are dropped: no longer charged
      this.#meterStreams();
    };
    this.#receivers.add(receiver);
    if (this.#events && !this.#closing) this.#events.pair(receiver);
    else receiver.close("receiver_closed");
  }

  /** Ends every pair, frees this worker's names; safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const link of this.#links.values()) link.close();
      await this.#inbox.close();
      await this.#streams.close();
      await this.#transport.close();
      const freed = this.#table.releaseAll(this.#index);
      const generation = this.#table.lastChange;
      this.#made(freed.map((name) => ({ generation, name, owner: -1 })));
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
