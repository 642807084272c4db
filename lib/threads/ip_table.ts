/**
 * The per-IP limits of `relay serve --threads N` for the whole process: one table of addresses
 * in a `SharedArrayBuffer` that every worker maps, so `--max-connections-per-ip`,
 * `--register-rate` and the wrong-token limit hold for an address however the kernel spreads
 * its connections over the workers (counted per worker, they would be N times the setting).
 * A count is a few memory operations under a spin lock (as in `name_table.ts`), not a round
 * trip to another thread, so accepting and registering cost what they do with one thread.
 *
 * ```
 * header  Int32 [lock, live, tombstones, full-refusals], Float64 [last rebuild for room, ms]
 * slot i  Int32 [state, key length, open connections, hash]
 *         Float64 [registration tokens, updated ms, wrong-token tokens, updated ms]
 *         MAX_IP_KEY_BYTES key bytes (the whole addressKey: two addresses never share a slot)
 *         state: 0 empty, 1 live, 2 tombstone (probes go on past it)
 * count   lock → probe from hash(key) → same key? update : take a free slot → unlock
 * forget  a live slot with no connection and both rates refilled loses nothing when dropped:
 *         it becomes a tombstone on release, and rebuilds drop such slots
 * ```
 *
 * Times are wall-clock milliseconds (`performance.timeOrigin + performance.now()`), the same
 * in every thread of the process. A full table (`MAX_TRACKED_IPS` addresses that still count)
 * refuses new addresses rather than let one through unlimited.
 * @module
 */

import { MAX_TRACKED_IPS } from "../limits.ts";
import { hashBytes, lock, unlock } from "./spin_lock.ts";
import type { ConnectionLease, IpLimits, IpLimitsOptions, IpRefusal } from "../relay/limiter.ts";

/** Longest key stored: an IPv6 /64 key (`"2001:db8:1:2::/64"`) is at most 24 bytes. */
export const MAX_IP_KEY_BYTES = 48;

const LOCK = 0;
const LIVE = 1;
const TOMBSTONES = 2;
const FULL_REFUSALS = 3;
/** Float64 field of the header: when a full table was last rebuilt to make room. */
const LAST_ROOM_REBUILD = 2;
const HEADER_BYTES = 24;
/**
 * Least time between two rebuilds of a full table to make room: a rebuild scans every slot,
 * so a flood of new addresses at a full table must not scan it for each of them.
 */
const ROOM_REBUILD_INTERVAL_MS = 100;

const STATE = 0;
const KEY_LENGTH = 1;
const CONNECTIONS = 2;
const HASH = 3;
/** Float64 fields, after the four Int32 ones. */
const REGISTER_TOKENS = 2;
const REGISTER_UPDATED = 3;
const TOKEN_TOKENS = 4;
const TOKEN_UPDATED = 5;
const KEY_OFFSET_BYTES = 48;
const SLOT_BYTES = KEY_OFFSET_BYTES + MAX_IP_KEY_BYTES;

const EMPTY = 0;
const USED = 1;
const FREED = 2;

const encoder = new TextEncoder();

/** Milliseconds on a clock that every thread of the process shares. */
export type SharedClock = () => number;
const wallClock: SharedClock = () => performance.timeOrigin + performance.now();

function slotsFor(addresses: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(16, addresses * 2)));
}

/** Bytes of a table for at most `addresses` addresses at once. */
export function ipTableBytes(addresses: number = MAX_TRACKED_IPS): number {
  return HEADER_BYTES + slotsFor(addresses) * SLOT_BYTES;
}

/** Options of a {@linkcode SharedIpLimits} view. */
export interface SharedIpLimitsOptions extends IpLimitsOptions {
  /**
   * Clock in milliseconds, shared by every thread.
   * @default {performance.timeOrigin + performance.now()}
   */
  now?: SharedClock;
}

interface Bucket {
  burst: number;
  perMs: number;
}

/** One thread's view of the shared per-IP table; implements the server's {@linkcode IpLimits}. */
export class SharedIpLimits implements IpLimits {
  readonly #words: Int32Array;
  readonly #floats: Float64Array;
  readonly #bytes: Uint8Array;
  readonly #slots: number;
  readonly #maxAddresses: number;
  readonly #maxConnections: number;
  readonly #register: Bucket | undefined;
  readonly #tokens: Bucket;
  readonly #now: SharedClock;
  readonly #scratch = new Uint8Array(MAX_IP_KEY_BYTES);

  /**
   * @param buffer a zeroed buffer of {@linkcode ipTableBytes} bytes, shared by every worker
   * @param options the limits, the same in every worker
   * @throws {RangeError} when the buffer has the wrong size
   */
  constructor(buffer: SharedArrayBuffer, options: SharedIpLimitsOptions) {
    this.#words = new Int32Array(buffer);
    this.#floats = new Float64Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    this.#slots = (buffer.byteLength - HEADER_BYTES) / SLOT_BYTES;
    if (!Number.isInteger(this.#slots) || (this.#slots & (this.#slots - 1)) !== 0) {
      throw new RangeError("IP table buffer has the wrong size");
    }
    this.#maxAddresses = this.#slots / 2;
    this.#maxConnections = options.maxConnectionsPerIp;
    const bucket = (rate: { limit: number; intervalMs: number }) => ({
      burst: rate.limit,
      perMs: rate.limit / rate.intervalMs,
    });
    this.#register = options.registerRate && bucket(options.registerRate);
    this.#tokens = bucket(options.authFailureRate);
    this.#now = options.now ?? wallClock;
  }

  /** A new zeroed buffer for at most `addresses` addresses. */
  static buffer(addresses: number = MAX_TRACKED_IPS): SharedArrayBuffer {
    return new SharedArrayBuffer(ipTableBytes(addresses));
  }

  /** Addresses tracked now (including ones that could be forgotten). */
  get size(): number {
    return Atomics.load(this.#words, LIVE);
  }

  /** New addresses refused because the table was full, since start, over every thread. */
  get fullRefusals(): number {
    return Atomics.load(this.#words, FULL_REFUSALS);
  }

  /** Open connections counted for `key` over every worker. */
  connections(key: string): number {
    const length = this.#encode(key);
    if (length < 0) return 0;
    lock(this.#words, LOCK);
    try {
      const at = this.#find(length, hashBytes(this.#scratch, length));
      return at < 0 ? 0 : this.#words[at / 4 + CONNECTIONS];
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /** Counts a connection of `key`, against the per-IP maximum when there is one. */
  tryConnect(key: string): ConnectionLease | IpRefusal {
    const length = this.#encode(key);
    if (length < 0) return this.#full();
    const hash = hashBytes(this.#scratch, length);
    lock(this.#words, LOCK);
    try {
      const at = this.#findOrAdd(length, hash);
      if (at < 0) return this.#full();
      const w = at / 4;
      if (this.#maxConnections > 0 && this.#words[w + CONNECTIONS] >= this.#maxConnections) {
        return "too_many_connections_per_ip";
      }
      this.#words[w + CONNECTIONS]++;
    } finally {
      unlock(this.#words, LOCK);
    }
    const saved = this.#scratch.slice(0, length);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#release(saved, hash);
    };
    return { key, release, [Symbol.dispose]: release };
  }

  /** Takes a registration from `key`'s rate; false over it or when the table is full. */
  tryRegister(key: string): boolean {
    const bucket = this.#register;
    if (!bucket) return true;
    return this.#take(key, bucket, REGISTER_TOKENS, REGISTER_UPDATED, true);
  }

  /** Whether `key` has wrong tokens left (an address not in the table has them all). */
  mayTryToken(key: string): boolean {
    const length = this.#encode(key);
    if (length < 0) return false;
    lock(this.#words, LOCK);
    try {
      const at = this.#find(length, hashBytes(this.#scratch, length));
      if (at < 0) return true;
      return this.#refill(at, this.#tokens, TOKEN_TOKENS, TOKEN_UPDATED, this.#now()) >= 1;
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /** Counts a wrong token from `key`. */
  countWrongToken(key: string): void {
    this.#take(key, this.#tokens, TOKEN_TOKENS, TOKEN_UPDATED, false);
  }

  #take(key: string, bucket: Bucket, tokens: number, updated: number, needed: boolean): boolean {
    const length = this.#encode(key);
    if (length < 0) return false;
    const hash = hashBytes(this.#scratch, length);
    lock(this.#words, LOCK);
    try {
      const at = this.#findOrAdd(length, hash);
      if (at < 0) {
        this.#full();
        return false;
      }
      const left = this.#refill(at, bucket, tokens, updated, this.#now());
      if (needed && left < 1) return false;
      this.#floats[at / 8 + tokens] = left >= 1 ? left - 1 : left;
      return true;
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /** Refills slot `at`'s bucket to now and returns its tokens (stored back). */
  #refill(at: number, bucket: Bucket, tokens: number, updated: number, now: number): number {
    const f = at / 8;
    const elapsed = Math.max(0, now - this.#floats[f + updated]);
    const value = Math.min(bucket.burst, this.#floats[f + tokens] + elapsed * bucket.perMs);
    this.#floats[f + tokens] = value;
    this.#floats[f + updated] = now;
    return value;
  }

  #release(key: Uint8Array, hash: number): void {
    this.#scratch.set(key);
    lock(this.#words, LOCK);
    try {
      const at = this.#find(key.length, hash);
      if (at < 0) return; // cannot happen: a slot with connections is never dropped
      const w = at / 4;
      this.#words[w + CONNECTIONS]--;
      if (this.#forgettable(at, this.#now())) {
        this.#words[w + STATE] = FREED;
        this.#words[LIVE]--;
        this.#words[TOMBSTONES]++;
      }
    } finally {
      unlock(this.#words, LOCK);
    }
  }

  /** Whether slot `at` counts nothing any more: no connection, both rates refilled. */
  #forgettable(at: number, now: number): boolean {
    if (this.#words[at / 4 + CONNECTIONS] > 0) return false;
    if (
      this.#register &&
      this.#refill(at, this.#register, REGISTER_TOKENS, REGISTER_UPDATED, now) <
        this.#register.burst
    ) return false;
    return this.#refill(at, this.#tokens, TOKEN_TOKENS, TOKEN_UPDATED, now) >= this.#tokens.burst;
  }

  #full(): IpRefusal {
    Atomics.add(this.#words, FULL_REFUSALS, 1);
    return "address_table_full";
  }

  /** The byte length of `key` in the scratch, or -1 when it is too long to store. */
  #encode(key: string): number {
    const { read, written } = encoder.encodeInto(key, this.#scratch);
    return read < key.length ? -1 : written;
  }

  /** Byte offset of the live slot holding the scratch key, or -1 (under the lock). */
  #find(length: number, hash: number): number {
    const mask = this.#slots - 1;
    for (let i = hash & mask, n = 0; n < this.#slots; i = (i + 1) & mask, n++) {
      const at = HEADER_BYTES + i * SLOT_BYTES;
      const state = this.#words[at / 4 + STATE];
      if (state === EMPTY) return -1;
      if (state === USED && this.#same(at, length, hash)) return at;
    }
    return -1;
  }

  /** The slot of the scratch key, added with full buckets when absent; -1 when full. */
  #findOrAdd(length: number, hash: number): number {
    const found = this.#find(length, hash);
    if (found >= 0) return found;
    const words = this.#words;
    const full = () => words[LIVE] + 1 > this.#maxAddresses;
    const now = this.#now();
    if (words[LIVE] + words[TOMBSTONES] + 1 > (this.#slots * 3) / 4) {
      this.#rebuild(); // probes grow long: drop tombstones (and addresses that count nothing)
    } else if (full() && now - this.#floats[LAST_ROOM_REBUILD] >= ROOM_REBUILD_INTERVAL_MS) {
      this.#floats[LAST_ROOM_REBUILD] = now;
      this.#rebuild(); // make room by dropping addresses that count nothing any more
    }
    if (full()) return -1;
    const mask = this.#slots - 1;
    let i = hash & mask;
    for (;;) {
      const state = words[(HEADER_BYTES + i * SLOT_BYTES) / 4 + STATE];
      if (state !== USED) break; // the load is at most 3/4: a free slot is always reached
      i = (i + 1) & mask;
    }
    const at = HEADER_BYTES + i * SLOT_BYTES;
    const w = at / 4;
    if (words[w + STATE] === FREED) words[TOMBSTONES]--;
    const f = at / 8;
    this.#floats[f + REGISTER_TOKENS] = this.#register?.burst ?? 0;
    this.#floats[f + REGISTER_UPDATED] = now;
    this.#floats[f + TOKEN_TOKENS] = this.#tokens.burst;
    this.#floats[f + TOKEN_UPDATED] = now;
    words[w + KEY_LENGTH] = length;
    words[w + CONNECTIONS] = 0;
    words[w + HASH] = hash;
    this.#bytes.set(this.#scratch.subarray(0, length), at + KEY_OFFSET_BYTES);
    words[w + STATE] = USED;
    words[LIVE]++;
    return at;
  }

  #same(at: number, length: number, hash: number): boolean {
    const w = at / 4;
    if (this.#words[w + HASH] !== hash || this.#words[w + KEY_LENGTH] !== length) return false;
    const start = at + KEY_OFFSET_BYTES;
    for (let j = 0; j < length; j++) {
      if (this.#bytes[start + j] !== this.#scratch[j]) return false;
    }
    return true;
  }

  /**
   * Re-inserts the slots that still count something, dropping tombstones and forgettable
   * addresses (under the lock; allocates, but only when the table has filled up).
   */
  #rebuild(): void {
    const now = this.#now();
    const kept: Uint8Array[] = [];
    for (let i = 0; i < this.#slots; i++) {
      const at = HEADER_BYTES + i * SLOT_BYTES;
      const w = at / 4;
      if (this.#words[w + STATE] === USED && !this.#forgettable(at, now)) {
        kept.push(this.#bytes.slice(at, at + SLOT_BYTES));
      }
      this.#words[w + STATE] = EMPTY;
    }
    const mask = this.#slots - 1;
    for (const slot of kept) {
      const hash = new Int32Array(slot.buffer, 0, 4)[HASH];
      let i = hash & mask;
      while (this.#words[(HEADER_BYTES + i * SLOT_BYTES) / 4 + STATE] !== EMPTY) {
        i = (i + 1) & mask;
      }
      this.#bytes.set(slot, HEADER_BYTES + i * SLOT_BYTES);
    }
    this.#words[LIVE] = kept.length;
    this.#words[TOMBSTONES] = 0;
  }
}
