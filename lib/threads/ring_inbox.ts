/**
 * The receiving side of the ring path between workers (ring_link.ts is the sending side): one
 * ring per other worker, made here and shared with it, drained into the outboxes of the local
 * connections, like a local sender streaming into them (`pushHeaded` for a whole message,
 * `begin`/`append` for one in several records, so frames from several senders never
 * interleave on a receiver's socket).
 *
 * ```
 * doorbell (one Int32 for every ring into this worker) ─► every ring drained ─► yield a task
 * OPEN(id, epoch, "sender|dest") ─► bound to the local holder of dest now, or cell CLOSED
 * DATA(id)    bound ─► the holder's outbox; over its share ─► cell BLOCKED until it drains
 *             unbound, or the holder ended ─► dropped, counted receiver_gone (never a later
 *             holder: a new holder gets new pairs, each bound at its OPEN)
 * END(id)     unbound (a message half written: the receiver is closed sender_aborted)
 * release     the holder let go of its name ─► its pairs' cells CLOSED at once; one with a
 *             message part-way onto the holder's queue RELEASED: that message finishes there,
 *             then CLOSED (its sender starts no other on it)
 * ```
 *
 * The reader never waits for a receiver: a stalled one only stops the pairs into it (their
 * cells), and what its senders wrote before they saw the cell is taken into its outbox (at
 * most one ring's worth), so the ring keeps moving for every other receiver on this worker.
 * @module
 */

import type { Outbox, OutFrame } from "../io/outbox.ts";
import type { Connection } from "../relay/connection.ts";
import { HeaderCache } from "../wire/relay.ts";
import { createRing, RingReader } from "./ring.ts";
import {
  CELL_BLOCKED,
  CELL_CLOSED,
  CELL_OPEN,
  CELL_RELEASED,
  cellValue,
  MAX_RING_PAIRS,
  REC_END,
  REC_FIRST,
  REC_ID,
  REC_LAST,
  REC_OPEN,
  RING_WAIT_MS,
  type RingLinkBuffers,
} from "./ring_link.ts";

const EMPTY = new Uint8Array(0);
/** Record flags that matter to the fast path of a drain, and their value for a whole message. */
const WHOLE_FLAGS = REC_OPEN | REC_END | REC_FIRST | REC_LAST;
const WHOLE = REC_FIRST | REC_LAST;
const decoder = new TextDecoder();
/** A cell's flags a state change keeps. */
const FLAGS = [0, CELL_RELEASED];

/**
 * Bytes of each ring into a worker when not sized from the memory budget: the most a worker's
 * senders can have on the way to one other worker (1 MiB holds 13 k messages of 64 B, or 15 of
 * 64 KiB). `relay serve --threads N` sizes them from `--max-memory` (lib/threads/memory_plan.ts).
 */
export const RING_CAPACITY_BYTES = 1 << 20;

/** What the inbox needs from its worker. */
export interface RingInboxHost {
  /** The registered connection holding `name` here now, if any. */
  local(name: string): Connection | undefined;
  /** The name table's generation when `name` was claimed here (0 if not held here). */
  claimedAt(name: string): number;
  /**
   * Counts a message dropped here because its receiver ended (`receiver_gone`). One queued
   * for its receiver is not counted here: the sending worker counted it as delivered, once
   * for the process, when it routed it.
   */
  gone(bytes: number): void;
  /**
   * Charges `bytes` held aside for a blocked receiver to the memory budget (negative: gives
   * them back).
   */
  hold?(bytes: number): void;
}

/** One pair bound to a local connection. */
class Binding {
  frame: OutFrame | undefined;
  blocked = false;
  closed = false;
  /** The receiver let go of its name mid-message: that message finishes, then the pair ends. */
  released = false;
  /** Records that came while blocked (written before the senders saw the cell), copied. */
  held: { tag: number; aux: number; bytes: Uint8Array }[] = [];
  /** Bytes of `held` as last charged to the budget. */
  heldBytes = 0;
  constructor(
    readonly slots: (Binding | undefined)[],
    readonly cells: Int32Array,
    readonly id: number,
    readonly epoch: number,
    /** The receiving connection (undefined once unbound: a closed one is not kept alive). */
    public conn: Connection | undefined,
    sender: Uint8Array,
  ) {
    this.headers = new HeaderCache(sender);
  }

  /** `sender|len|`, encoded once per size. */
  readonly headers: HeaderCache;

  /**
   * Sets the cell from `from` to `to` for this binding's epoch, keeping its RELEASED flag
   * (dropped when closing); false if it moved on.
   */
  move(from: number, to: number): boolean {
    for (const flag of FLAGS) {
      const want = cellValue(this.epoch, from) | flag;
      const next = cellValue(this.epoch, to) | (to === CELL_CLOSED ? 0 : flag);
      if (Atomics.compareExchange(this.cells, this.id, want, next) === want) return true;
    }
    return false;
  }

  /** Sets the RELEASED flag on this binding's cell; false if it moved on. */
  release(): boolean {
    for (const state of [CELL_OPEN, CELL_BLOCKED]) {
      const want = cellValue(this.epoch, state);
      if (Atomics.compareExchange(this.cells, this.id, want, want | CELL_RELEASED) === want) {
        return true;
      }
    }
    return false;
  }
}

/** One ring into this worker. */
class Incoming {
  readonly reader: RingReader;
  readonly cells: Int32Array;
  readonly bindings: (Binding | undefined)[] = new Array(MAX_RING_PAIRS);
  constructor(readonly from: string, readonly buffers: RingLinkBuffers) {
    this.reader = new RingReader(buffers.ring);
    this.cells = new Int32Array(buffers.cells);
  }
}

/** Drains the rings from the other workers into local connections. */
export class RingInbox {
  readonly #host: RingInboxHost;
  readonly #bell = new SharedArrayBuffer(4);
  readonly #bellWord = new Int32Array(this.#bell);
  readonly #incoming: Incoming[] = [];
  readonly #byName = new Map<string, Set<Binding>>();
  readonly #tick = new MessageChannel();
  #closed = false;
  #running: Promise<void> | undefined;

  readonly #ringBytes: number;

  /**
   * @param host the worker
   * @param ringBytes capacity of each ring into this worker (a power of two)
   */
  constructor(host: RingInboxHost, ringBytes: number = RING_CAPACITY_BYTES) {
    this.#host = host;
    this.#ringBytes = ringBytes;
  }

  /** Makes the ring from worker `from` (to hand to it) and starts reading it. */
  ringFrom(from: string): RingLinkBuffers {
    const buffers: RingLinkBuffers = {
      ring: createRing(this.#ringBytes),
      cells: new SharedArrayBuffer(MAX_RING_PAIRS * 4),
      bell: this.#bell,
    };
    this.#incoming.push(new Incoming(from, buffers));
    this.#running ??= this.#run();
    return buffers;
  }

  /** Bytes of shared memory this inbox's rings hold. */
  get ringBytes(): number {
    return this.#incoming.reduce((n, r) => n + r.buffers.ring.byteLength, 0);
  }

  /** Pairs bound here now. */
  get size(): number {
    let n = 0;
    for (const set of this.#byName.values()) n += set.size;
    return n;
  }

  /** Whether records wait in a ring. */
  get busy(): boolean {
    return this.#incoming.some((r) => !r.reader.empty);
  }

  /**
   * `name` left this worker: its pairs close at once (senders see the cell), but one with a
   * message part-way onto the receiver's queue finishes that message first (as a local
   * sender finishes a frame begun to a name's old holder); its sender starts no other there.
   */
  release(name: string): void {
    const set = this.#byName.get(name);
    if (set === undefined) return;
    this.#byName.delete(name);
    for (const b of set) {
      // (A receiver that ended gets nothing more: its pairs close now, so senders know; and
      // so do they if it ends before the message is written.)
      const frame = b.frame;
      if (frame !== undefined && b.conn?.closed === false && b.release()) {
        b.released = true;
        frame.done = (written) => {
          if (!written) this.#unbind(b, CELL_CLOSED);
        };
      } else this.#unbind(b, CELL_CLOSED);
    }
  }

  /** Drains once more, then stops; safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#drain();
      Atomics.add(this.#bellWord, 0, 1);
      Atomics.notify(this.#bellWord, 0);
    }
    await this.#running;
  }

  async #run(): Promise<void> {
    const tick = this.#tick;
    let wake: (() => void) | undefined;
    tick.port2.onmessage = () => wake?.();
    const yieldTask = () =>
      new Promise<void>((resolve) => {
        wake = resolve;
        tick.port1.postMessage(0);
      });
    try {
      while (!this.#closed) {
        const seen = Atomics.load(this.#bellWord, 0);
        if (this.#drain() > 0) {
          await yieldTask(); // lets the outboxes write before the next drain
          continue;
        }
        const waited = Atomics.waitAsync(this.#bellWord, 0, seen, RING_WAIT_MS);
        if (waited.async) await waited.value;
      }
    } finally {
      tick.port1.close();
      tick.port2.close();
    }
  }

  /** Reads every ring once; returns the records read. */
  #drain(): number {
    let n = 0;
    for (const incoming of this.#incoming) {
      const bindings = incoming.bindings;
      n += incoming.reader.readInPlace((tag, aux, bytes, start, length) => {
        // The usual record, a whole message to a bound receiver that takes data, is copied
        // straight from the ring into its queue: no view made per record (a view per 64 B
        // message was a third of the ring path's garbage). Any other goes through #record.
        const b = (tag & WHOLE_FLAGS) === WHOLE ? bindings[tag & REC_ID] : undefined;
        const conn = b?.conn;
        if (
          b === undefined || conn === undefined || b.closed || b.blocked || b.released ||
          conn.closed || !conn.framed
        ) {
          return this.#record(incoming, tag, aux, bytes.subarray(start, start + length));
        }
        conn.outbox.pushHeaded(b.headers.of(aux), bytes, start, length);
        if (conn.outbox.overBudget(b)) this.#block(b, conn.outbox);
      });
    }
    return n;
  }

  #record(incoming: Incoming, tag: number, aux: number, payload: Uint8Array): void {
    const id = tag & REC_ID;
    if (tag & REC_OPEN) return this.#open(incoming, id, aux, payload);
    const b = incoming.bindings[id];
    if (tag & REC_END) {
      incoming.bindings[id] = undefined;
      if (b !== undefined) this.#unbind(b, -1);
      return;
    }
    const conn = b?.conn;
    if (b === undefined || b.closed || conn === undefined || conn.closed) {
      if (b !== undefined && !b.closed) this.#unbind(b, CELL_CLOSED);
      if (tag & REC_LAST) this.#host.gone(aux);
      return;
    }
    if (b.blocked) {
      // Kept aside, not queued: the receiver's queue stays within its share, and the ring
      // keeps moving for the others (at most what its senders wrote before they saw the cell).
      b.held.push({ tag, aux, bytes: payload.slice() });
      b.heldBytes += payload.length;
      this.#host.hold?.(payload.length);
      return;
    }
    this.#deliver(b, conn, tag, aux, payload);
    if (!b.closed && conn.outbox.overBudget(b)) this.#block(b, conn.outbox);
  }

  #deliver(b: Binding, conn: Connection, tag: number, aux: number, payload: Uint8Array): void {
    const outbox: Outbox = conn.outbox;
    if ((tag & (REC_FIRST | REC_LAST)) === (REC_FIRST | REC_LAST)) {
      // Whole: copied out of the ring into the queue, like a local frame.
      if (conn.framed) outbox.pushHeaded(b.headers.of(aux), payload);
      else outbox.pushFrame(undefined, payload);
    } else {
      if (tag & REC_FIRST) b.frame = outbox.begin(b, conn.framed ? b.headers.of(aux) : EMPTY);
      if (b.frame === undefined) return; // a piece after a lost start: never happens in order
      outbox.append(b.frame, payload.slice(), (tag & REC_LAST) !== 0);
      if (tag & REC_LAST) b.frame = undefined;
    }
    // Released mid-message: that message is done, and so is the pair.
    if (b.released && (tag & REC_LAST) !== 0) this.#unbind(b, CELL_CLOSED);
  }

  #open(incoming: Incoming, id: number, epoch: number, payload: Uint8Array): void {
    const old = incoming.bindings[id];
    if (old !== undefined) this.#unbind(old, -1);
    const looked = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true);
    const text = decoder.decode(payload.subarray(4));
    const bar = text.indexOf("|");
    const dest = text.slice(bar + 1);
    const conn = bar < 0 ? undefined : this.#host.local(dest);
    // A holder that claimed the name after the sender looked it up is a later holder: what
    // was sent to the earlier one never reaches it (dropped, counted receiver_gone).
    const bound = conn !== undefined && !conn.closed && conn.name === dest && !this.#closed &&
      this.#host.claimedAt(dest) >>> 0 <= looked;
    const b = new Binding(
      incoming.bindings,
      incoming.cells,
      id,
      epoch,
      bound ? conn : undefined,
      new TextEncoder().encode(text.slice(0, bar)),
    );
    incoming.bindings[id] = b;
    if (!bound) {
      b.closed = true;
      b.move(CELL_OPEN, CELL_CLOSED);
      return;
    }
    let set = this.#byName.get(dest);
    if (set === undefined) this.#byName.set(dest, set = new Set());
    set.add(b);
  }

  /** The receiver is over its share for this pair: its senders stop until it drains. */
  #block(b: Binding, outbox: Outbox): void {
    b.blocked = true;
    b.move(CELL_OPEN, CELL_BLOCKED);
    outbox.waitForRoom(b).then(() => this.#resume(b));
  }

  /** The receiver drained: what was held goes in first, then its senders may go on. */
  #resume(b: Binding): void {
    const conn = b.conn!;
    if (b.closed || conn.closed) return this.#unbind(b, CELL_CLOSED);
    const outbox = conn.outbox;
    let i = 0;
    while (i < b.held.length && !outbox.overBudget(b)) {
      const { tag, aux, bytes } = b.held[i++];
      if (b.released && (tag & REC_LAST) !== 0) b.held.splice(0, i), i = 0; // not counted gone
      this.#deliver(b, conn, tag, aux, bytes);
      if (b.closed) return;
    }
    b.held.splice(0, i);
    this.#recharge(b);
    if (b.held.length > 0 || outbox.overBudget(b)) {
      outbox.waitForRoom(b).then(() => this.#resume(b));
      return;
    }
    b.blocked = false;
    if (b.move(CELL_BLOCKED, CELL_OPEN)) Atomics.notify(b.cells, b.id);
  }

  /** Charges the budget for what `b` holds aside now (after records left `held`). */
  #recharge(b: Binding): void {
    let bytes = 0;
    for (const record of b.held) bytes += record.bytes.length;
    if (bytes !== b.heldBytes) this.#host.hold?.(bytes - b.heldBytes);
    b.heldBytes = bytes;
  }

  /** Lets go of a pair; `cell` ≥ 0: the state its senders see (CLOSED), −1: leave it. */
  #unbind(b: Binding, cell: number): void {
    if (b.closed) return;
    b.closed = true;
    if (cell >= 0) {
      if (!b.move(CELL_OPEN, cell)) b.move(CELL_BLOCKED, cell);
      Atomics.notify(b.cells, b.id);
    }
    for (const { tag, aux } of b.held) if (tag & REC_LAST) this.#host.gone(aux);
    b.held = [];
    this.#recharge(b);
    const frame = b.frame;
    b.frame = undefined;
    const conn = b.conn;
    b.conn = undefined;
    // Its later records find no binding and are counted as dropped; the next OPEN of the id
    // binds afresh.
    if (b.slots[b.id] === b) b.slots[b.id] = undefined;
    if (conn !== undefined) {
      const name = conn.name;
      const set = name === undefined ? undefined : this.#byName.get(name);
      set?.delete(b);
      if (set?.size === 0) this.#byName.delete(name!);
      if (frame !== undefined && !conn.outbox.abort(frame)) {
        conn.close("sender_aborted", "A sender on another worker ended mid-message");
      }
    }
  }
}
