/**
 * The soak's random choices and self-checking payloads: a small seeded generator, so a run
 * repeats with `--seed`, and payloads a receiver can verify without keeping a copy.
 * @module
 */

/** A seeded random source: floats, integers, picks and bytes. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max]. */
  int(min: number, max: number): number;
  /** One of `items`. */
  pick<T>(items: readonly T[]): T;
  /** `n` random bytes. */
  bytes(n: number): Uint8Array;
}

/** A small fast seeded generator (mulberry32): runs repeat with `--seed`. */
export function makeRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    pick: (items) => items[Math.floor(next() * items.length)],
    bytes: (n) => {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = (next() * 256) | 0;
      return out;
    },
  };
}

/**
 * A payload that checks itself: 4 bytes of seed, then bytes derived from it, so a receiver
 * can tell a lost, cut or mixed-up byte from the right one without keeping a copy.
 */
export function makePayload(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(Math.max(4, length));
  new DataView(out.buffer).setUint32(0, seed);
  let x = seed | 1;
  for (let i = 4; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** True when `payload` is exactly what {@linkcode makePayload} made for its seed and `length`. */
export function payloadIsIntact(payload: Uint8Array, length: number): boolean {
  if (payload.length !== Math.max(4, length)) return false;
  const seed = new DataView(payload.buffer, payload.byteOffset).getUint32(0);
  const expected = makePayload(seed, length);
  for (let i = 0; i < expected.length; i++) if (expected[i] !== payload[i]) return false;
  return true;
}
