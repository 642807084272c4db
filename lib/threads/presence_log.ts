/**
 * One order of name changes for every worker of a relay process (`--threads N`): a ring of
 * records in a `SharedArrayBuffer` beside the {@linkcode NameTable}, appended under the table's
 * lock in the same step as the claim or release it records, so the log's order is the order
 * in which names really changed hands. Each worker's mesh reads it from a cursor of its own and
 * tells its presence watchers in that order, so an event of one worker is never told before an
 * earlier one of another (which, sent as a message, could still be on its way).
 *
 * ```
 * header  Int32 [head]            records appended (mod 2^32); record i is in slot i % N
 * record  Int32 [generation, owner (-1: freed), length, 0] + MAX_NAME_BYTES name bytes
 * append  (table lock held) write slot head % N → head++
 * read    (table lock held) copy records [cursor, head) out; cursor < head − N: overrun
 * ```
 *
 * Writers never wait for readers: a reader more than N records behind has lost some, sees so,
 * and resyncs from the table itself (telling its watchers the difference).
 * @module
 */

import { MAX_NAME_BYTES } from "../limits.ts";

/**
 * Records the log keeps: how far a worker may fall behind the others' registrations before it
 * resyncs from the table (each record is 272 bytes: 272 KiB shared by the process).
 */
export const PRESENCE_LOG_RECORDS = 1024;

const HEAD = 0;
const HEADER_WORDS = 1;
const GENERATION = 0;
const OWNER = 1;
const LENGTH = 2;
const RECORD_META_WORDS = 4;
/** Words per record: the metadata, then the name bytes rounded up to whole words. */
const RECORD_WORDS = RECORD_META_WORDS + Math.ceil(MAX_NAME_BYTES / 4);
/** Bytes per record. */
export const PRESENCE_RECORD_BYTES = RECORD_WORDS * 4;

/** Bytes of a log of `records` records. */
export function presenceLogBytes(records = PRESENCE_LOG_RECORDS): number {
  return (HEADER_WORDS + records * RECORD_WORDS) * 4;
}

/** One change as read back from the log. */
export interface PresenceRecord {
  /** The name table's generation right after the change. */
  generation: number;
  /** The worker holding the name now, or -1 when nobody does. */
  owner: number;
  /** The name. */
  name: string;
}

const decoder = new TextDecoder();

/** A view of the shared presence log; each thread makes its own over the same buffer. */
export class PresenceLog {
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  /** Records the ring holds. */
  readonly capacity: number;

  /** @param buffer a buffer of {@linkcode presenceLogBytes} bytes, zeroed when first shared */
  constructor(buffer: SharedArrayBuffer) {
    this.#words = new Int32Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    this.capacity = (this.#words.length - HEADER_WORDS) / RECORD_WORDS;
    // A power of two, so that slot = sequence % N stays right when the sequence wraps at 2^32.
    if (!Number.isInteger(this.capacity) || (this.capacity & (this.capacity - 1)) !== 0) {
      throw new RangeError("Presence log buffer has the wrong size");
    }
  }

  /** A new log of `records` records. */
  static create(records = PRESENCE_LOG_RECORDS): PresenceLog {
    return new PresenceLog(new SharedArrayBuffer(presenceLogBytes(records)));
  }

  /** The shared buffer, to hand to workers. */
  get buffer(): SharedArrayBuffer {
    return this.#words.buffer as SharedArrayBuffer;
  }

  /** Records appended since the start, mod 2^32 (the sequence number of the next one). */
  get head(): number {
    return Atomics.load(this.#words, HEAD) >>> 0;
  }

  /**
   * Appends a change; the caller holds the name table's lock (that is what orders the log).
   * @param name the name's UTF-8 bytes (the first `length` of them)
   * @returns the record's sequence number
   */
  append(generation: number, owner: number, name: Uint8Array, length: number): number {
    const seq = this.#words[HEAD] >>> 0;
    const at = HEADER_WORDS + (seq & (this.capacity - 1)) * RECORD_WORDS;
    this.#words[at + GENERATION] = generation;
    this.#words[at + OWNER] = owner;
    this.#words[at + LENGTH] = length;
    this.#bytes.set(name.subarray(0, length), (at + RECORD_META_WORDS) * 4);
    // Readers read under the same lock; the atomic store is for `head` read without it.
    Atomics.store(this.#words, HEAD, (seq + 1) | 0);
    return seq;
  }

  /**
   * Copies records from `cursor` on (at most `max` of them, and as many as fit in `out`, whole
   * records of {@linkcode PRESENCE_RECORD_BYTES}); the caller holds the name table's lock.
   * @returns the number of records copied, or -1 when some from `cursor` on are overwritten
   */
  copy(cursor: number, max: number, out: Uint8Array): number {
    const behind = ((this.#words[HEAD] >>> 0) - cursor) >>> 0;
    if (behind > this.capacity) return -1;
    const n = Math.min(behind, max, Math.floor(out.length / PRESENCE_RECORD_BYTES));
    const mask = this.capacity - 1;
    for (let i = 0; i < n; i++) {
      const at = (HEADER_WORDS + (((cursor + i) >>> 0) & mask) * RECORD_WORDS) * 4;
      out.set(
        this.#bytes.subarray(at, at + PRESENCE_RECORD_BYTES),
        i * PRESENCE_RECORD_BYTES,
      );
    }
    return n;
  }
}

/** Record `i` of bytes copied out by {@linkcode PresenceLog.copy}. */
export function readRecord(out: Uint8Array, i: number): PresenceRecord {
  const words = new Int32Array(out.buffer, out.byteOffset + i * PRESENCE_RECORD_BYTES, 3);
  const start = i * PRESENCE_RECORD_BYTES + RECORD_META_WORDS * 4;
  return {
    generation: words[GENERATION],
    owner: words[OWNER],
    name: decoder.decode(out.subarray(start, start + words[LENGTH])),
  };
}
