/**
 * One namespace for the workers of a relay process (`--threads N`): a hash table of names in a
 * `SharedArrayBuffer` that every worker maps. A claim or a release is a few memory operations
 * under a spin lock, not a round trip to another thread, so registering stays as cheap as with
 * one thread; `holder()` reads memory, and `generation` moves on every change anywhere.
 *
 * ```
 * header  Int32 [lock, generation, live, tombstones]
 * slot i  Int32 [state, owner, hash, length] + MAX_NAME_BYTES name bytes (padded to 4)
 *         state: 0 empty, 1 live, 2 tombstone (a freed name; probes go on past it)
 * claim   lock → probe from hash(name) → live & same bytes? taken : write slot → generation++
 * release lock → find live slot owned by the caller → tombstone → generation++
 * ```
 *
 * The lock is held for one probe sequence (no allocation, no await), so a worker never waits
 * for long; open addressing with linear probing, rebuilt in place when tombstones pile up.
 * @module
 */

import { MAX_NAME_BYTES } from "../limits.ts";
import { hashBytes, lock, unlock } from "./spin_lock.ts";
import { PresenceLog } from "./presence_log.ts";

const LOCK = 0;
const GENERATION = 1;
const LIVE = 2;
const TOMBSTONES = 3;
const HEADER_WORDS = 4;

const STATE = 0;
const OWNER = 1;
const HASH = 2;
const LENGTH = 3;
const SLOT_META_WORDS = 4;
/** Words per slot: the metadata, then the name bytes rounded up to whole words. */
const SLOT_WORDS = SLOT_META_WORDS + Math.ceil(MAX_NAME_BYTES / 4);

const EMPTY = 0;
const USED = 1;
const FREED = 2;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes of a table for at most `names` names at once (twice as many slots: short probes). */
export function nameTableBytes(names: number): number {
  return (HEADER_WORDS + slotsFor(names) * SLOT_WORDS) * 4;
}

function slotsFor(names: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(16, names * 2)));
}

/** A view of the shared name table; each thread makes its own over the same buffer. */
export class NameTable {
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #slots: number;
  readonly #scratch = new Uint8Array(MAX_NAME_BYTES * 3 + 3);
  /** Every change, in generation order, for the workers' presence events (presence_log.ts). */
  readonly #log: PresenceLog | undefined;

  /**
   * @param buffer a buffer of {@linkcode nameTableBytes} bytes, zeroed when first shared
   * @param log the process's presence log, written under this table's lock on every change
   */
  constructor(buffer: SharedArrayBuffer, log?: SharedArrayBuffer) {
    this.#log = log && new PresenceLog(log);
    this.#words = new Int32Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    this.#slots = (this.#words.length - HEADER_WORDS) / SLOT_WORDS;
    if (!Number.isInteger(this.#slots) || (this.#slots & (this.#slots - 1)) !== 0) {
      throw new RangeError("Name table buffer has the wrong size");
    }
  }

  /** A new table for at most `names` names at once. */
  static create(names: number): NameTable {
    return new NameTable(new SharedArrayBuffer(nameTableBytes(names)));
  }

  /** The shared buffer, to hand to workers. */
  get buffer(): SharedArrayBuffer {
    return this.#words.buffer as SharedArrayBuffer;
  }

  /**
   * The generation this view's last successful claim or release moved the table to: changes
   * are numbered 1, 2, 3… in the order they happened, over every thread.
   */
  lastChange = 0;

  /** The presence log's sequence number of this view's last change (with a log). */
  lastRecord = -1;

  /**
   * Moves on every claim and release by any thread. A plain read, not `Atomics.load`: senders
   * check it per frame to know their cached destination still holds, and `Atomics.load` is a
   * call of 25-50 ns here (a plain read about 1 ns), a sixth of a 64 B message's whole cost. A
   * read that misses a change made this instant by another thread is as late as one made just
   * after it; it is never torn (an aligned word), and what the cache then looks up (`holder`)
   * is read under the lock.
   */
  get generation(): number {
    return this.#words[GENERATION];
  }

  /** Names held now, over all owners. */
  get size(): number {
    return Atomics.load(this.#words, LIVE);
  }

  /**
   * Claims `name` for `owner`; false when any owner holds it already (or the table is full).
   * @throws {RangeError} when the name is longer than `MAX_NAME_BYTES`
   */
  claim(name: string, owner: number): boolean {
    const length = this.#encode(name);
    const hash = hashBytes(this.#scratch, length);
    lock(this.#words, LOCK);
    try {
      const live = this.#words[LIVE];
      if (live + 1 > this.#slots / 2) return false; // full: refuse rather than probe forever
      if (live + this.#words[TOMBSTONES] + 1 > (this.#slots * 3) / 4) this.#rebuild();
      let free = -1;
      for (
        let i = hash & (this.#slots - 1), n = 0;
        n < this.#slots;
        i = (i + 1) & (this.#slots - 1), n++
      ) {
        const at = HEADER_WORDS + i * SLOT_WORDS;
        const state = this.#words[at + STATE];
        if (state === EMPTY) {
          if (free < 0) free = at;
          break;
        }
        if (state === FREED) {
          if (free < 0) free = at;
          continue;
        }
        if (this.#same(at, hash, length)) return false;
      }
      if (free < 0) return false;
      if (this.#words[free + STATE] === FREED) this.#words[TOMBSTONES]--;
      this.#words[free + OWNER] = owner;
      this.#words[free + HASH] = hash;
      this.#words[free + LENGTH] = length;
      this.#bytes.set(this.#scratch.subarray(0, length), (free + SLOT_META_WORDS) * 4);
      this.#words[free + STATE] = USED;
      this.#words[LIVE]++;
      this.lastChange = Atomics.add(this.#words, GENERATION, 1) + 1;
      if (this.#log) {
        this.lastRecord = this.#log.append(this.lastChange, owner, this.#scratch, length);
      }
      return true;
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /** Frees `name` if `owner` holds it; returns whether it did. */
  release(name: string, owner: number): boolean {
    const length = this.#encode(name);
    const hash = hashBytes(this.#scratch, length);
    lock(this.#words, LOCK);
    try {
      const at = this.#find(hash, length);
      if (at < 0 || this.#words[at + OWNER] !== owner) return false;
      this.#words[at + STATE] = FREED;
      this.#words[LIVE]--;
      this.#words[TOMBSTONES]++;
      this.lastChange = Atomics.add(this.#words, GENERATION, 1) + 1;
      if (this.#log) {
        this.lastRecord = this.#log.append(this.lastChange, -1, this.#scratch, length);
      }
      return true;
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /** Frees every name of `owner` (a worker that stopped); returns the names freed. */
  releaseAll(owner: number): string[] {
    const freed: string[] = [];
    const slots: number[] = [];
    lock(this.#words, LOCK);
    try {
      for (let i = 0; i < this.#slots; i++) {
        const at = HEADER_WORDS + i * SLOT_WORDS;
        if (this.#words[at + STATE] !== USED || this.#words[at + OWNER] !== owner) continue;
        freed.push(this.#nameAt(at));
        slots.push(at);
        this.#words[at + STATE] = FREED;
        this.#words[LIVE]--;
        this.#words[TOMBSTONES]++;
      }
      if (freed.length > 0) this.lastChange = Atomics.add(this.#words, GENERATION, 1) + 1;
      for (const at of this.#log ? slots : []) {
        // A freed slot keeps its bytes until it is reused, which needs this lock.
        const name = this.#bytes.subarray((at + SLOT_META_WORDS) * 4);
        this.lastRecord = this.#log!.append(this.lastChange, -1, name, this.#words[at + LENGTH]);
      }
    } finally {
      unlock(this.#words, LOCK);
    }
    return freed;
  }

  /** The owner holding `name`, if any. */
  holder(name: string): number | undefined {
    let length: number;
    try {
      length = this.#encode(name);
    } catch {
      return undefined; // too long to be anyone's name
    }
    const hash = hashBytes(this.#scratch, length);
    lock(this.#words, LOCK);
    try {
      const at = this.#find(hash, length);
      return at < 0 ? undefined : this.#words[at + OWNER];
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /** Every name and its owner (for `who` across workers); skips `except`'s names. */
  entries(except = -1): [name: string, owner: number][] {
    const out: [string, number][] = [];
    lock(this.#words, LOCK);
    try {
      for (let i = 0; i < this.#slots; i++) {
        const at = HEADER_WORDS + i * SLOT_WORDS;
        if (this.#words[at + STATE] !== USED) continue;
        const owner = this.#words[at + OWNER];
        if (owner !== except) out.push([this.#nameAt(at), owner]);
      }
    } finally {
      unlock(this.#words, LOCK);
    }
    return out;
  }

  /** The presence log's head (records appended so far, mod 2^32), read without the lock. */
  get logHead(): number {
    return this.#log?.head ?? 0;
  }

  /**
   * Copies presence-log records from `cursor` on into `out`, under the lock (at most `max`).
   * @returns the number copied, or -1 when some were overwritten (see `PresenceLog.copy`)
   * @throws {TypeError} when this view has no presence log
   */
  readLog(cursor: number, max: number, out: Uint8Array): number {
    if (!this.#log) throw new TypeError("This name table has no presence log");
    lock(this.#words, LOCK);
    try {
      return this.#log.copy(cursor, max, out);
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /**
   * Under one hold of the lock, the presence log's head and every name with its owner except
   * `except`'s: where a presence reader that fell behind the log starts again.
   */
  logSnapshot(except: number): { head: number; entries: [name: string, owner: number][] } {
    lock(this.#words, LOCK);
    try {
      const head = this.#log?.head ?? 0;
      const entries: [string, number][] = [];
      for (let i = 0; i < this.#slots; i++) {
        const at = HEADER_WORDS + i * SLOT_WORDS;
        if (this.#words[at + STATE] !== USED) continue;
        const owner = this.#words[at + OWNER];
        if (owner !== except) entries.push([this.#nameAt(at), owner]);
      }
      return { head, entries };
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  #encode(name: string): number {
    const { read, written } = encoder.encodeInto(name, this.#scratch);
    if (read < name.length || written > MAX_NAME_BYTES) {
      throw new RangeError(`Name is longer than ${MAX_NAME_BYTES} bytes`);
    }
    return written;
  }

  #find(hash: number, length: number): number {
    for (
      let i = hash & (this.#slots - 1), n = 0;
      n < this.#slots;
      i = (i + 1) & (this.#slots - 1), n++
    ) {
      const at = HEADER_WORDS + i * SLOT_WORDS;
      const state = this.#words[at + STATE];
      if (state === EMPTY) return -1;
      if (state === USED && this.#same(at, hash, length)) return at;
    }
    return -1;
  }

  #same(at: number, hash: number, length: number): boolean {
    if (this.#words[at + HASH] !== hash || this.#words[at + LENGTH] !== length) return false;
    const start = (at + SLOT_META_WORDS) * 4;
    const bytes = this.#bytes;
    const scratch = this.#scratch;
    for (let j = 0; j < length; j++) if (bytes[start + j] !== scratch[j]) return false;
    return true;
  }

  #nameAt(at: number): string {
    const start = (at + SLOT_META_WORDS) * 4;
    // decode() does not take shared memory: copy the name out first.
    return decoder.decode(this.#bytes.slice(start, start + this.#words[at + LENGTH]));
  }

  /** Re-inserts the live slots so tombstones stop lengthening probes (under the lock). */
  #rebuild(): void {
    const live: { owner: number; hash: number; bytes: Uint8Array }[] = [];
    for (let i = 0; i < this.#slots; i++) {
      const at = HEADER_WORDS + i * SLOT_WORDS;
      if (this.#words[at + STATE] === USED) {
        const start = (at + SLOT_META_WORDS) * 4;
        live.push({
          owner: this.#words[at + OWNER],
          hash: this.#words[at + HASH],
          bytes: this.#bytes.slice(start, start + this.#words[at + LENGTH]),
        });
      }
      this.#words[at + STATE] = EMPTY;
    }
    for (const { owner, hash, bytes } of live) {
      let i = hash & (this.#slots - 1);
      while (this.#words[HEADER_WORDS + i * SLOT_WORDS + STATE] !== EMPTY) {
        i = (i + 1) & (this.#slots - 1);
      }
      const at = HEADER_WORDS + i * SLOT_WORDS;
      this.#words[at + OWNER] = owner;
      this.#words[at + HASH] = hash;
      this.#words[at + LENGTH] = bytes.length;
      this.#bytes.set(bytes, (at + SLOT_META_WORDS) * 4);
      this.#words[at + STATE] = USED;
    }
    this.#words[TOMBSTONES] = 0;
  }
}
