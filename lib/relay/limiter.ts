/**
 * Per-client limits of a public relay, as pure logic with an injectable clock (no timers, no
 * I/O):
 *
 * - {@linkcode RateLimiter}: a token bucket per key (registrations per IP, wrong tokens per IP)
 *   in a map whose size is capped, so a flood of addresses cannot grow memory;
 * - {@linkcode ConnectionCounter}: open connections per key, with a lease released once;
 * - {@linkcode BandwidthLimiter}: bytes per second of one connection, answering how long to
 *   wait before the next read.
 *
 * Key by {@linkcode addressKey}, which folds an IPv6 address to its /64 so one host cannot
 * take a fresh bucket for each of its 2^64 addresses.
 * @module
 */

/** Milliseconds from a monotonic clock. */
export type Clock = () => number;

const monotonic: Clock = () => performance.now();

/**
 * Buckets a {@linkcode RateLimiter} keeps by default. Each is a small object (~100 bytes with
 * its map slot and key), so this caps the map near 6 MiB while covering far more distinct
 * addresses than are active on one relay at once.
 */
export const DEFAULT_MAX_KEYS = 65_536;

/** Options of a {@linkcode RateLimiter}: `limit` events per `intervalMs`, per key. */
export interface RateLimiterOptions {
  /** Events allowed per interval, refilled evenly over it. */
  limit: number;
  /** Length of the interval in milliseconds: 1_000 for "per second", 60_000 for "per minute". */
  intervalMs: number;
  /**
   * Events allowed at once after a quiet spell (the bucket's size).
   * @default {limit}
   */
  burst?: number;
  /**
   * Most keys tracked; past it the least recently used key is forgotten, which only makes
   * that key's limit restart from a full bucket.
   * @default {DEFAULT_MAX_KEYS}
   */
  maxKeys?: number;
  /**
   * Clock in milliseconds.
   * @default {performance.now}
   */
  now?: Clock;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/**
 * Token-bucket rate limits by key (an IP address), in bounded memory.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * let now = 0; // a fake clock, in milliseconds
 * const registrations = new RateLimiter({
 *   limit: 10, // per interval: 10 a second
 *   intervalMs: 1_000,
 *   burst: 2,
 *   now: () => now,
 * });
 * const key = addressKey("192.0.2.7");
 * assert.ok(registrations.take(key));
 * assert.ok(registrations.take(key));
 * assert.ok(!registrations.take(key)); // burst spent: refuse with "rate_limited"
 * now += 100; // 10 per second: one more every 100 ms
 * assert.ok(registrations.take(key));
 * ```
 */
export class RateLimiter {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #maxKeys: number;
  readonly #now: Clock;
  /** Buckets in least-recently-used order: every touch moves a key to the end. */
  readonly #buckets = new Map<string, Bucket>();

  /**
   * @param options the rate and bounds
   * @throws {RangeError} on a limit, interval, burst or key cap that is not positive
   */
  constructor(options: RateLimiterOptions) {
    const { limit, intervalMs } = options;
    const burst = options.burst ?? limit;
    const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    positive("limit", limit);
    positive("intervalMs", intervalMs);
    positive("burst", burst);
    positive("maxKeys", maxKeys);
    this.#burst = burst;
    this.#perMs = limit / intervalMs;
    this.#maxKeys = Math.floor(maxKeys);
    this.#now = options.now ?? monotonic;
  }

  /** Keys tracked now (never more than `maxKeys`). */
  get size(): number {
    return this.#buckets.size;
  }

  /**
   * Takes `cost` events from `key`'s bucket if it holds them.
   * @returns true when allowed (and counted), false when over the limit (nothing counted)
   */
  take(key: string, cost = 1): boolean {
    const now = this.#now();
    this.#dropOldestIfFull(now);
    const tokens = this.#tokens(key, now);
    const allowed = tokens >= cost;
    const left = allowed ? tokens - cost : tokens;
    this.#buckets.delete(key);
    if (left < this.#burst) {
      this.#buckets.set(key, { tokens: left, updatedMs: now });
      if (this.#buckets.size > this.#maxKeys) this.#buckets.delete(this.#oldestKey()!);
    }
    return allowed;
  }

  /** Whether `take(key, cost)` would succeed now; counts nothing. */
  peek(key: string, cost = 1): boolean {
    return this.#tokens(key, this.#now()) >= cost;
  }

  /** Milliseconds until `take(key, cost)` can succeed: 0 when it can now. */
  retryAfterMs(key: string, cost = 1): number {
    const missing = cost - this.#tokens(key, this.#now());
    return missing <= 0 ? 0 : ceilMs(missing / this.#perMs);
  }

  /** Forgets `key`, giving it a full bucket (e.g. after a successful login). */
  delete(key: string): void {
    this.#buckets.delete(key);
  }

  /**
   * Forgets every key whose bucket has refilled, which loses nothing. Optional: memory is
   * bounded without it, but a timer calling it now and then returns memory after a burst.
   * @returns the number of keys forgotten
   */
  prune(): number {
    const now = this.#now();
    let dropped = 0;
    for (const key of [...this.#buckets.keys()]) {
      if (this.#tokens(key, now) >= this.#burst) {
        this.#buckets.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  #tokens(key: string, now: number): number {
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) return this.#burst;
    const refill = Math.max(0, now - bucket.updatedMs) * this.#perMs;
    return Math.min(this.#burst, bucket.tokens + refill);
  }

  #oldestKey(): string | undefined {
    for (const key of this.#buckets.keys()) return key;
    return undefined;
  }

  /** Drops the least recently used key when its bucket is full again: a step of pruning. */
  #dropOldestIfFull(now: number): void {
    const oldest = this.#oldestKey();
    if (oldest !== undefined && this.#tokens(oldest, now) >= this.#burst) {
      this.#buckets.delete(oldest);
    }
  }
}

/** Options of a {@linkcode ConnectionCounter}. */
export interface ConnectionCounterOptions {
  /** Most connections open at once for one key. */
  maxPerKey: number;
}

/** One counted connection; release it when the connection ends (`using` does). */
export interface ConnectionLease extends Disposable {
  /** The key it counts against. */
  readonly key: string;
  /** Gives the slot back; calling it again does nothing. */
  release(): void;
}

/**
 * Counts open connections per key (an IP address) against a maximum. Keys with no open
 * connection are not kept, so memory follows the open connections, which the relay caps.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const perIp = new ConnectionCounter({ maxPerKey: 2 });
 * const key = addressKey("2001:db8:1:2:aaaa::1");
 * using first = perIp.tryAcquire(key)!;
 * const second = perIp.tryAcquire(key)!;
 * assert.equal(perIp.tryAcquire(key), undefined); // refuse with "too_many_connections"
 * second.release(); // when that connection closes
 * assert.equal(perIp.count(key), 1);
 * ```
 */
export class ConnectionCounter {
  readonly #max: number;
  readonly #counts = new Map<string, number>();
  #total = 0;

  /** @throws {RangeError} when `maxPerKey` is not positive */
  constructor(options: ConnectionCounterOptions) {
    positive("maxPerKey", options.maxPerKey);
    this.#max = options.maxPerKey;
  }

  /**
   * Counts a new connection for `key`.
   * @returns a lease to release when it closes, or `undefined` when `key` is at its maximum
   */
  tryAcquire(key: string): ConnectionLease | undefined {
    const count = this.#counts.get(key) ?? 0;
    if (count >= this.#max) return undefined;
    this.#counts.set(key, count + 1);
    this.#total++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#total--;
      const left = this.#counts.get(key)! - 1;
      if (left === 0) this.#counts.delete(key);
      else this.#counts.set(key, left);
    };
    return { key, release, [Symbol.dispose]: release };
  }

  /** Open connections counted for `key`. */
  count(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  /** Keys with at least one open connection. */
  get keys(): number {
    return this.#counts.size;
  }

  /** Open connections counted over all keys. */
  get total(): number {
    return this.#total;
  }
}

/** Options of a {@linkcode BandwidthLimiter}. */
export interface BandwidthLimiterOptions {
  /** Sustained rate in bytes per second. */
  bytesPerSecond: number;
  /**
   * Bytes that may pass at once after a quiet spell.
   * @default {bytesPerSecond} (one second's worth)
   */
  burstBytes?: number;
  /**
   * Clock in milliseconds.
   * @default {performance.now}
   */
  now?: Clock;
}

/**
 * Holds one connection to a byte rate. Bytes are counted after they are read (a read cannot
 * know its size beforehand), so the bucket may go into debt; the reader then waits until the
 * debt is paid before reading again, which keeps the average at the rate.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * let now = 0; // a fake clock, in milliseconds
 * const limit = new BandwidthLimiter({ bytesPerSecond: 1_000, now: () => now });
 * assert.equal(limit.consume(600), 0); // within the burst: read on at once
 * assert.equal(limit.consume(900), 500); // 500 bytes in debt: wait 500 ms before reading
 * now += 500;
 * assert.equal(limit.delayMs(), 0);
 * ```
 */
export class BandwidthLimiter {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #now: Clock;
  #tokens: number;
  #updatedMs: number;

  /** @throws {RangeError} when the rate or burst is not positive */
  constructor(options: BandwidthLimiterOptions) {
    const burst = options.burstBytes ?? options.bytesPerSecond;
    positive("bytesPerSecond", options.bytesPerSecond);
    positive("burstBytes", burst);
    this.#burst = burst;
    this.#perMs = options.bytesPerSecond / 1_000;
    this.#now = options.now ?? monotonic;
    this.#tokens = burst;
    this.#updatedMs = this.#now();
  }

  /**
   * Counts `bytes` just transferred.
   * @returns milliseconds to wait before the next read (0 when none)
   */
  consume(bytes: number): number {
    this.#refill();
    this.#tokens -= bytes;
    return this.#wait();
  }

  /** Milliseconds to wait before the next read, counting nothing (0 when none). */
  delayMs(): number {
    this.#refill();
    return this.#wait();
  }

  #refill(): void {
    const now = this.#now();
    const elapsed = Math.max(0, now - this.#updatedMs);
    this.#updatedMs = now;
    this.#tokens = Math.min(this.#burst, this.#tokens + elapsed * this.#perMs);
  }

  #wait(): number {
    return this.#tokens >= 0 ? 0 : ceilMs(-this.#tokens / this.#perMs);
  }
}

/**
 * Rounds a wait that is due up to whole milliseconds, at least 1, ignoring floating-point dust
 * (1.0000000001 is 1).
 */
function ceilMs(ms: number): number {
  return Math.max(1, Math.ceil(ms - 1e-6));
}

function positive(what: string, value: number): void {
  if (!(value > 0) || !Number.isFinite(value)) {
    throw new RangeError(`Invalid ${what} ${value}: expected a positive number`);
  }
}

/**
 * The key an address is limited by: an IPv4 address as it is (also when IPv4-mapped in
 * IPv6), an IPv6 address as its /64 prefix, since one host or home usually holds a whole /64.
 * Anything else (a Unix socket path, a name) is returned unchanged.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * assert.equal(addressKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
 * assert.equal(addressKey("::ffff:192.0.2.7"), "192.0.2.7");
 * ```
 */
export function addressKey(hostname: string): string {
  let host = hostname;
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  const zone = host.indexOf("%");
  if (zone >= 0) host = host.slice(0, zone);
  if (!host.includes(":")) return host;
  const groups = ipv6Groups(host.toLowerCase());
  if (groups === undefined) return hostname;
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) {
    return [groups[6] >> 8, groups[6] & 0xff, groups[7] >> 8, groups[7] & 0xff].join(".");
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, or `undefined` when it is not one. */
function ipv6Groups(text: string): number[] | undefined {
  let tail = text;
  const extra: number[] = [];
  const dotted = /^(.*:)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (dotted) {
    const bytes = dotted.slice(2).map(Number);
    if (bytes.some((b) => b > 255)) return undefined;
    extra.push((bytes[0] << 8) | bytes[1], (bytes[2] << 8) | bytes[3]);
    tail = dotted[1].endsWith("::") ? dotted[1] : dotted[1].slice(0, -1);
  }
  const halves = tail.split("::");
  if (halves.length > 2) return undefined;
  const parse = (part: string) => part === "" ? [] : part.split(":");
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  const hex = /^[0-9a-f]{1,4}$/;
  if (![...head, ...rest].every((g) => hex.test(g))) return undefined;
  const known = head.length + rest.length + extra.length;
  if (halves.length === 1 ? known !== 8 : known > 7) return undefined;
  const zeros = new Array(8 - known).fill(0);
  return [
    ...head.map((g) => parseInt(g, 16)),
    ...zeros,
    ...rest.map((g) => parseInt(g, 16)),
    ...extra,
  ];
}

/** Why {@linkcode IpLimits.tryConnect} refused a connection. */
export type IpRefusal =
  /** The address is at its maximum of open connections. */
  | "too_many_connections_per_ip"
  /**
   * The table of addresses is full (shared across workers, `MAX_TRACKED_IPS`): the address
   * cannot be counted, so it is refused rather than let through without a limit.
   */
  | "address_table_full";

/**
 * The per-IP limits of one relay, by {@linkcode addressKey}: open connections, registrations
 * and wrong tokens. {@linkcode LocalIpLimits} keeps them for one server; the workers of
 * `relay serve --threads N` share one table (lib/threads/ip_table.ts), so the limits hold for
 * the whole process however the kernel spreads connections.
 */
export interface IpLimits {
  /** Counts a new connection of `key`: a lease to release when it closes, or why not. */
  tryConnect(key: string): ConnectionLease | IpRefusal;
  /** Takes one registration from `key`'s rate; false when over it (or not countable). */
  tryRegister(key: string): boolean;
  /** Whether `key` may still try a token (it has not guessed wrong too often). */
  mayTryToken(key: string): boolean;
  /** Counts a wrong token from `key`. */
  countWrongToken(key: string): void;
}

/** Options of {@linkcode LocalIpLimits} (and of the shared table): the configured limits. */
export interface IpLimitsOptions {
  /** Most connections open at once per key; 0 for no limit. */
  maxConnectionsPerIp: number;
  /** Registrations per key, when limited. */
  registerRate?: { limit: number; intervalMs: number };
  /** Wrong tokens per key before its owned-name registrations are refused. */
  authFailureRate: { limit: number; intervalMs: number };
}

/** The per-IP limits of one server, in its own memory. */
export class LocalIpLimits implements IpLimits {
  readonly #connections: ConnectionCounter | undefined;
  readonly #registrations: RateLimiter | undefined;
  readonly #wrongTokens: RateLimiter;

  /** @throws {RangeError} on a rate that is not positive */
  constructor(options: IpLimitsOptions) {
    if (options.maxConnectionsPerIp > 0) {
      this.#connections = new ConnectionCounter({ maxPerKey: options.maxConnectionsPerIp });
    }
    if (options.registerRate) this.#registrations = new RateLimiter(options.registerRate);
    this.#wrongTokens = new RateLimiter(options.authFailureRate);
  }

  /** Counts a connection (always allowed without a per-IP maximum). */
  tryConnect(key: string): ConnectionLease | IpRefusal {
    if (!this.#connections) return { key, release() {}, [Symbol.dispose]() {} };
    return this.#connections.tryAcquire(key) ?? "too_many_connections_per_ip";
  }

  /** Takes a registration (always allowed without a rate). */
  tryRegister(key: string): boolean {
    return this.#registrations?.take(key) ?? true;
  }

  /** Whether `key` has wrong tokens left. */
  mayTryToken(key: string): boolean {
    return this.#wrongTokens.peek(key);
  }

  /** Counts a wrong token. */
  countWrongToken(key: string): void {
    this.#wrongTokens.take(key);
  }
}
