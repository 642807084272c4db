/**
 * The sending side of the ring path between two workers (see ring.ts for the ring itself,
 * ring_inbox.ts for the receiving side). One {@linkcode RingLink} per other worker; one
 * {@linkcode RingPair} per sender connection and receiving name on that worker, as a cluster
 * pair, with the same surface the router uses (`trySend`, `send`, `reason`, `closed`, `end`,
 * and the streaming `begin`, `append`, `abandon`).
 *
 * ```
 * open     id from the link's free list, cell[id] = epoch·OPEN ─► OPEN record (key, epoch)
 * message  cell[id] OPEN and room in the ring ─► DATA record(s) FIRST … LAST (one copy)
 * stream   begin(len), append(piece)… ─► records FIRST … LAST as pieces come, each as large
 *          as the ring's room; what does not fit stays the caller's view until it is copied
 *          abandon (the sender left mid-message) ─► END, the receiver is closed sender_aborted
 *          cell[id] BLOCKED (receiver over its share) ─► wait on the cell (Atomics.waitAsync)
 *          ring full ─► wait for the reader to move (Atomics.waitAsync on its head)
 *          end of the task's writes ─► one doorbell to the receiving worker
 * end      END record ─► id back on the free list (records stay in ring order, so a record
 *          of the old pair is always read before the OPEN of the next one with that id)
 * closed   cell[id] CLOSED (receiver let go of the name) ─► reason receiver_closed
 * released cell[id] | RELEASED (it let go mid-message) ─► that message finishes, no new one
 * ```
 *
 * Pair cells are Int32 in shared memory, `epoch << 2 | state`, written by the sender when it
 * opens a pair and by the receiver (compare-and-exchange on the epoch it bound) afterwards: a
 * receiver's late write for a pair that ended never touches the next pair with the same id.
 * @module
 */

import { RingWriter } from "./ring.ts";
import { PairClosedError, type PairCloseReason } from "../cluster/reasons.ts";

/** Pairs open at once on one link (cells per ring; 16 KiB of shared memory per ring). */
export const MAX_RING_PAIRS = 4096;
/** Upper bound of one wait for room or for a blocked receiver before it checks again. */
export const RING_WAIT_MS = 50;

/** State of a pair cell: the receiver takes data. */
export const CELL_OPEN = 0;
/** State of a pair cell: the receiver is over its share; senders wait. */
export const CELL_BLOCKED = 1;
/** State of a pair cell: the receiver let go of the pair. */
export const CELL_CLOSED = 2;
/**
 * Flag of a pair cell (beside OPEN or BLOCKED): the receiver let go of its name while a message
 * on this pair was part-way through; that message still finishes there, and no other starts.
 */
export const CELL_RELEASED = 1 << 30;

/**
 * Record flag: opens pair `id` (payload: u32 the name table's generation when the sender
 * looked the name up, then the key; aux: the epoch).
 */
export const REC_OPEN = 1 << 16;
/** Record flag: the first record of a message (aux: the message's length). */
export const REC_FIRST = 1 << 17;
/** Record flag: the last record of a message. */
export const REC_LAST = 1 << 18;
/** Record flag: the sender ended pair `id`. */
export const REC_END = 1 << 19;
/** Mask of the pair id in a record's tag. */
export const REC_ID = 0xffff;

/** A cell value. */
export function cellValue(epoch: number, state: number): number {
  return ((epoch & 0x0fffffff) << 2) | state;
}

/** The epoch of a cell value. */
export function cellEpoch(value: number): number {
  return (value >>> 2) & 0x0fffffff;
}

/**
 * Bytes a streamed message waits for rather than write a smaller record (unless less is left):
 * a record per few hundred bytes of free ring would cost more than it moves.
 */
const MIN_STREAM_RECORD_BYTES = 4096;

const encoder = new TextEncoder();
const RESOLVED = Promise.resolve();

/** What a link shares with the worker it sends to. */
export interface RingLinkBuffers {
  /** The ring (made by the receiving worker). */
  ring: SharedArrayBuffer;
  /** `MAX_RING_PAIRS` Int32 pair cells. */
  cells: SharedArrayBuffer;
  /** The receiving worker's doorbell (one Int32, shared by all its incoming rings). */
  bell: SharedArrayBuffer;
}

/** The sending end of the ring to one other worker. */
export class RingLink {
  /** The receiving worker's node name. */
  readonly to: string;
  readonly writer: RingWriter;
  readonly cells: Int32Array;
  readonly #bell: Int32Array;
  readonly #free: number[] = [];
  readonly #epochs = new Int32Array(MAX_RING_PAIRS);
  readonly #open = new Set<RingPair>();
  #ringing = false;
  #closed = false;

  constructor(to: string, buffers: RingLinkBuffers) {
    this.to = to;
    this.writer = new RingWriter(buffers.ring);
    this.cells = new Int32Array(buffers.cells);
    this.#bell = new Int32Array(buffers.bell);
    for (let id = MAX_RING_PAIRS - 1; id >= 0; id--) this.#free.push(id);
  }

  /** Largest record payload (longer messages go in several records). */
  get maxChunkBytes(): number {
    return this.writer.maxPayloadBytes;
  }

  /** Whether sends are on their way (queued, or waiting for room). */
  get busy(): boolean {
    for (const pair of this.#open) if (pair.waiting) return true;
    return false;
  }

  /**
   * Opens a pair, or undefined when every id is in use (the caller takes another path).
   * @param generation the name table's generation when the receiving name was looked up
   */
  open(key: string, generation: number): RingPair | undefined {
    if (this.#closed) return undefined;
    const id = this.#free.pop();
    if (id === undefined) return undefined;
    const epoch = (this.#epochs[id] = (this.#epochs[id] + 1) & 0x0fffffff);
    Atomics.store(this.cells, id, cellValue(epoch, CELL_OPEN));
    const text = encoder.encode(key);
    const payload = new Uint8Array(4 + text.length);
    new DataView(payload.buffer).setUint32(0, generation >>> 0, true);
    payload.set(text, 4);
    const pair = new RingPair(this, id, epoch, payload);
    this.#open.add(pair);
    return pair;
  }

  /** Gives `id` back (its pair ended). */
  free(pair: RingPair): void {
    if (this.#open.delete(pair)) this.#free.push(pair.id);
  }

  /** Rings the receiving worker's doorbell once, at the end of this task's writes. */
  ring(): void {
    if (this.#ringing) return;
    this.#ringing = true;
    queueMicrotask(() => {
      this.#ringing = false;
      this.writer.publish();
      Atomics.add(this.#bell, 0, 1);
      Atomics.notify(this.#bell, 0);
    });
  }

  /** Ends every pair (`closed`); nothing more is written. Safe to call twice. */
  close(): void {
    this.#closed = true;
    for (const pair of [...this.#open]) pair.abort("closed");
  }
}

/** The sending end of one pair on a {@linkcode RingLink}. */
export class RingPair {
  /** The pair's id on its link. */
  readonly id: number;
  readonly #link: RingLink;
  readonly #epoch: number;
  #key: Uint8Array | undefined;
  #reason: PairCloseReason | undefined;
  #tail: Promise<void> = RESOLVED;
  #pending = 0;
  /** The batch of {@linkcode RingPair.queue} that new messages join, while it is last in line. */
  #backlog: Backlog | undefined;
  /** A message is part-way into the ring (its FIRST record written, not its LAST). */
  #midMessage = false;
  /** The streamed message being appended: its length (0: none) and bytes handed over. */
  #streamLength = 0;
  #streamAt = 0;
  /** Number of the streamed message (begin), and the last one given up (abandon). */
  #stream = 0;
  #abandoned = 0;
  readonly #closed: Promise<PairCloseReason>;
  #resolveClosed!: (reason: PairCloseReason) => void;

  constructor(link: RingLink, id: number, epoch: number, key: Uint8Array) {
    this.#link = link;
    this.id = id;
    this.#epoch = epoch;
    this.#key = key;
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** Resolves with the reason once the pair has ended, from either side. */
  get closed(): Promise<PairCloseReason> {
    return this.#closed;
  }

  /**
   * Why the pair ended, or undefined while it is open (reads the shared cell). A pair whose
   * receiver let go of its name mid-message says `receiver_closed` at once, so no new message
   * is sent on it, while that message still finishes.
   */
  get reason(): PairCloseReason | undefined {
    if (this.#ended()) return this.#reason;
    return (Atomics.load(this.#link.cells, this.id) & CELL_RELEASED) !== 0
      ? "receiver_closed"
      : undefined;
  }

  /** Whether the pair has ended (notes a close seen in the cell). */
  #ended(): boolean {
    if (this.#reason === undefined && this.#state() === CELL_CLOSED) this.abort("receiver_closed");
    return this.#reason !== undefined;
  }

  /** Whether a message is part-way through (it may finish on a released pair). */
  get midMessage(): boolean {
    return this.#midMessage;
  }

  /** Whether sends wait for room or for the receiver. */
  get waiting(): boolean {
    return this.#pending > 0;
  }

  /**
   * The cell's state for this pair: CLOSED once the receiver let go of it, or of its name
   * (RELEASED) when no message is part-way through (one that is still finishes there).
   */
  #state(): number {
    const value = Atomics.load(this.#link.cells, this.id);
    if (cellEpoch(value) !== this.#epoch) return CELL_CLOSED;
    if ((value & CELL_RELEASED) !== 0 && !this.#midMessage) return CELL_CLOSED;
    return value & 3;
  }

  /** Writes the OPEN record if it is not written yet; false when the ring has no room. */
  #opened(): boolean {
    const key = this.#key;
    if (key === undefined) return true;
    if (!this.#link.writer.tryPut(this.id | REC_OPEN, this.#epoch, key)) return false;
    this.#key = undefined;
    return true;
  }

  /**
   * Sends `message` now if nothing waits before it, the receiver takes data and the ring has
   * room for it whole: its bytes are copied into the ring before this returns, so it may be a
   * view of a read buffer that is reused next. Otherwise sends nothing and returns false.
   */
  trySend(message: Uint8Array, start = 0, length = message.length - start): boolean {
    const link = this.#link;
    if (
      this.#pending !== 0 || this.#reason !== undefined || length > link.maxChunkBytes
    ) return false;
    // A plain read of the cell, not `Atomics.load` (a call of 25-50 ns, per message here): one
    // that misses a block or close made this instant writes what the receiving worker takes
    // from senders that had not seen it yet (held aside, or dropped and counted).
    const value = link.cells[this.id];
    if (value !== cellValue(this.#epoch, CELL_OPEN)) {
      this.reason; // notes a close
      return false;
    }
    // An OPEN written without its data is harmless: the data follows through `send`.
    if (
      !this.#opened() ||
      !link.writer.tryPut(this.id | REC_FIRST | REC_LAST, length, message, start, length)
    ) return false;
    link.ring();
    return true;
  }

  /** {@linkcode RingPair.trySend} of `source[start, start + length)`: no view made for it. */
  trySendAt(source: Uint8Array, start: number, length: number): boolean {
    return this.trySend(source, start, length);
  }

  /**
   * Sends a copy of `message` (at most {@linkcode RingLink.maxChunkBytes}): now when it can,
   * else behind what waits, from a backlog holding the waiting messages back to back. A sender
   * that finds the ring full or its receiver blocked queues the rest of its read this way: one
   * copy per message and one promise per batch (a promise chain and a copy with its own buffer
   * per 64 B message made most of the garbage, and the costly scavenges, at 256 pairs).
   * @returns undefined when sent now; else a promise, shared by the messages queued together,
   *   that settles (never rejects) once they are in the ring or the pair has ended
   */
  queue(message: Uint8Array): Promise<void> | undefined {
    if (this.#pending === 0 && this.trySend(message)) return undefined;
    let backlog = this.#backlog;
    // Only the batch last in line may grow: anything chained after it must stay after it.
    if (backlog === undefined || this.#tail !== backlog.done) {
      const b = backlog = new Backlog();
      this.#backlog = b;
      this.#pending++;
      b.done = this.#tail.then(() => this.#flush(b)).catch(() => {}).finally(() => {
        this.#pending--;
      });
      this.#tail = b.done;
    }
    backlog.add(message);
    return backlog.done;
  }

  /** Writes a backlog into the ring as room comes, in order; drops it once the pair ended. */
  async #flush(b: Backlog): Promise<void> {
    const link = this.#link;
    const writer = link.writer;
    try {
      for (;;) {
        while (b.at < b.end && this.reason === undefined) {
          if ((Atomics.load(link.cells, this.id) & 3) === CELL_BLOCKED || !this.#opened()) break;
          const length = b.length();
          if (!writer.tryPut(this.id | REC_FIRST | REC_LAST, length, b.bytes, b.at + 4, length)) {
            break;
          }
          b.at += 4 + length;
        }
        link.ring();
        if (b.at >= b.end || this.reason !== undefined) return;
        const value = Atomics.load(link.cells, this.id);
        if ((value & 3) === CELL_BLOCKED) {
          const waited = Atomics.waitAsync(link.cells, this.id, value, RING_WAIT_MS);
          if (waited.async) await waited.value;
        } else await writer.waitForRoom(RING_WAIT_MS);
      }
    } finally {
      if (this.#backlog === b) this.#backlog = undefined;
      b.clear(); // an idle pair keeps no buffer (4096 pairs a link)
    }
  }

  /**
   * Sends one message; messages leave in call order, and `message` must stay unchanged until
   * the promise settles.
   * @throws {PairClosedError} when the pair is or becomes closed
   */
  send(message: Uint8Array, signal?: AbortSignal): Promise<void> {
    if (this.#pending === 0 && this.trySend(message)) return RESOLVED;
    this.#pending++;
    const run = this.#tail.then(() => this.#send(message, signal)).finally(() => this.#pending--);
    this.#tail = run.catch(() => {});
    return run;
  }

  async #send(message: Uint8Array, signal?: AbortSignal): Promise<void> {
    const link = this.#link;
    const max = link.maxChunkBytes;
    let at = 0;
    do {
      const length = Math.min(max, message.length - at);
      const flags = (at === 0 ? REC_FIRST : 0) | (at + length === message.length ? REC_LAST : 0);
      for (;;) {
        if (this.#ended()) throw new PairClosedError(this.#reason!);
        if (signal?.aborted) {
          // Mid-message: the receiver cannot complete the frame; the pair ends, and its END
          // (if the ring has room; else the next OPEN of the id) gives up the frame there.
          if (at > 0) {
            if (link.writer.tryPut(this.id | REC_END, 0, new Uint8Array(0))) link.ring();
            this.abort("sender_aborted");
          }
          signal.throwIfAborted();
        }
        const value = Atomics.load(link.cells, this.id);
        if ((value & 3) === CELL_BLOCKED && cellEpoch(value) === this.#epoch) {
          const waited = Atomics.waitAsync(link.cells, this.id, value, RING_WAIT_MS);
          if (waited.async) await waited.value;
          continue;
        }
        if (
          this.#opened() &&
          link.writer.tryPut(this.id | flags, message.length, message, at, length)
        ) {
          this.#midMessage = (flags & REC_LAST) === 0;
          link.ring();
          break;
        }
        link.ring(); // what is in the ring must be read for room to come
        await link.writer.waitForRoom(RING_WAIT_MS);
      }
      at += length;
    } while (at < message.length);
  }

  /**
   * Streaming: begins a message of `length` bytes (more than 0), whose bytes follow through
   * {@linkcode RingPair.append} as they arrive from the sender, after every message handed
   * to the pair before it.
   */
  begin(length: number): void {
    this.#streamLength = length;
    this.#streamAt = 0;
    this.#stream++;
  }

  /**
   * Streaming: the next bytes of the message begun, copied into the ring now as far as the
   * ring's room and the receiver's cell allow (records of any size up to the ring's limit);
   * the rest is copied later, in order, from `bytes` itself.
   * @returns true: every byte is in the ring; false: the pair has ended (these bytes and the
   *   rest of the message are dropped); a promise of one of those when some bytes wait: then
   *   `bytes` must stay unchanged until it settles (it never rejects)
   */
  append(bytes: Uint8Array): boolean | Promise<boolean> {
    const offset = this.#streamAt;
    const total = this.#streamLength;
    this.#streamAt += bytes.length;
    if (this.#streamAt >= total) this.#streamLength = 0;
    let start = 0;
    if (this.#pending === 0) {
      start = this.#put(bytes, 0, offset, total);
      if (start < 0) return false;
      if (start === bytes.length) return true;
    }
    const stream = this.#stream;
    this.#pending++;
    const run = this.#tail.then(() => this.#pump(stream, bytes, start, offset + start, total))
      .catch(() => false).finally(() => this.#pending--);
    this.#tail = run.then(() => {});
    return run;
  }

  /**
   * Streaming: gives up the message being appended (its sender went away). What waits of it
   * is dropped; when part of it is already in the ring, an END record follows (once there is
   * room) so the receiving worker gives up the half frame, and the pair ends `sender_aborted`.
   */
  abandon(): void {
    this.#streamLength = 0;
    this.#abandoned = this.#stream;
    if (this.#reason !== undefined) return;
    const giveUp = async () => {
      const link = this.#link;
      while (this.#midMessage && !this.#ended()) {
        if (link.writer.tryPut(this.id | REC_END, 0, new Uint8Array(0))) {
          link.ring();
          this.abort("sender_aborted");
          return;
        }
        link.ring();
        await link.writer.waitForRoom(RING_WAIT_MS);
      }
    };
    if (this.#pending === 0 && !this.#midMessage) return;
    this.#pending++;
    this.#tail = this.#tail.then(giveUp).finally(() => this.#pending--);
  }

  /**
   * Writes records of `bytes[at…]` (at `offset` in a message of `total` bytes) while the ring
   * has room and the receiver takes data; rings the doorbell for what it wrote.
   * @returns the bytes written, or −1 when the pair has ended
   */
  #put(bytes: Uint8Array, at: number, offset: number, total: number): number {
    const link = this.#link;
    const writer = link.writer;
    let written = 0;
    while (at + written < bytes.length) {
      if (this.#ended()) return -1;
      if ((Atomics.load(link.cells, this.id) & 3) === CELL_BLOCKED || !this.#opened()) break;
      const left = bytes.length - at - written;
      const room = writer.room();
      if (room < left && room < MIN_STREAM_RECORD_BYTES) break;
      const length = Math.min(left, room);
      const from = offset + written;
      const flags = (from === 0 ? REC_FIRST : 0) | (from + length === total ? REC_LAST : 0);
      if (!writer.tryPut(this.id | flags, total, bytes, at + written, length)) break;
      this.#midMessage = (flags & REC_LAST) === 0;
      written += length;
    }
    if (written > 0) link.ring();
    return written;
  }

  /** Writes the rest of a streamed piece as room comes; false when the pair ended first. */
  async #pump(
    stream: number,
    bytes: Uint8Array,
    at: number,
    offset: number,
    total: number,
  ): Promise<boolean> {
    const link = this.#link;
    for (;;) {
      if (this.#abandoned === stream) return false;
      const n = this.#put(bytes, at, offset, total);
      if (n < 0) return false;
      at += n;
      offset += n;
      if (at >= bytes.length) return true;
      const value = Atomics.load(link.cells, this.id);
      if ((value & 3) === CELL_BLOCKED) {
        const waited = Atomics.waitAsync(link.cells, this.id, value, RING_WAIT_MS);
        if (waited.async) await waited.value;
      } else {
        link.ring(); // what is in the ring must be read for room to come
        await link.writer.waitForRoom(RING_WAIT_MS);
      }
    }
  }

  /** Ends the pair once every message handed to it has left (`sender_closed`). */
  end(): void {
    if (this.#reason !== undefined) return;
    const finish = async () => {
      const link = this.#link;
      while (!this.#ended()) {
        if (this.#key !== undefined) break; // never opened on the other side: nothing to end
        if (link.writer.tryPut(this.id | REC_END, 0, new Uint8Array(0))) {
          link.ring();
          break;
        }
        await link.writer.waitForRoom(RING_WAIT_MS);
      }
      this.abort("sender_closed");
    };
    if (this.#pending === 0) {
      const link = this.#link;
      if (this.#key !== undefined || this.reason !== undefined) this.abort("sender_closed");
      else if (link.writer.tryPut(this.id | REC_END, 0, new Uint8Array(0))) {
        link.ring();
        this.abort("sender_closed");
      } else this.#tail = this.#tail.then(finish);
    } else this.#tail = this.#tail.then(finish);
  }

  /** Ends the pair here with `reason` (no record written); its id goes back to the link. */
  abort(reason: PairCloseReason): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    this.#link.free(this);
    this.#resolveClosed(reason);
  }
}

/** Bytes of a backlog's first buffer (it doubles as messages come). */
const BACKLOG_START_BYTES = 4096;
const EMPTY_BACKLOG = new Uint8Array(0);

/** Messages waiting for a ring pair, back to back as `u32 length, bytes`. */
class Backlog {
  bytes: Uint8Array;
  /** Where the next message to write starts, and where the queued ones end. */
  at = 0;
  end = 0;
  done: Promise<void> = RESOLVED;
  constructor() {
    this.bytes = new Uint8Array(BACKLOG_START_BYTES);
  }

  /** Appends a copy of `message`. */
  add(message: Uint8Array): void {
    const need = this.end + 4 + message.length;
    if (need > this.bytes.length) {
      const grown = new Uint8Array(Math.max(need, this.bytes.length * 2));
      grown.set(this.bytes.subarray(this.at, this.end));
      this.end -= this.at;
      this.at = 0;
      this.bytes = grown;
    }
    const bytes = this.bytes;
    let end = this.end;
    const length = message.length;
    bytes[end] = length;
    bytes[end + 1] = length >>> 8;
    bytes[end + 2] = length >>> 16;
    bytes[end + 3] = length >>> 24;
    end += 4;
    if (length <= 32) { for (let i = 0; i < length; i++) bytes[end + i] = message[i]; }
    else bytes.set(message, end);
    this.end = end + length;
  }

  /** The length of the message at `at`. */
  length(): number {
    const b = this.bytes;
    const at = this.at;
    return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
  }

  /** Lets go of the buffer (everything in it was written, or dropped). */
  clear(): void {
    this.bytes = EMPTY_BACKLOG;
    this.at = this.end = 0;
  }
}
