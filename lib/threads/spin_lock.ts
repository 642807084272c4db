/**
 * What the shared tables (`name_table.ts`, `ip_table.ts`) have in common: a spin lock in one
 * word of their `SharedArrayBuffer`, and the hash of their keys. The holder never blocks while
 * holding the lock, so waiting is a short spin; a worker then sleeps a moment with
 * `Atomics.wait`, the main thread (which may not wait) keeps spinning.
 * @module
 */

/** Spins before a waiter yields with `Atomics.wait` for a moment (workers only). */
const SPINS_BEFORE_WAIT = 1_000;

/** Takes the lock in `words[at]` (0 free, 1 held). */
export function lock(words: Int32Array, at: number): void {
  let spins = 0;
  while (Atomics.compareExchange(words, at, 0, 1) !== 0) {
    if (++spins < SPINS_BEFORE_WAIT) continue;
    spins = 0;
    try {
      Atomics.wait(words, at, 1, 1);
    } catch {
      // Atomics.wait is not allowed on this thread: keep spinning.
    }
  }
}

/** Gives the lock in `words[at]` back. */
export function unlock(words: Int32Array, at: number): void {
  Atomics.store(words, at, 0);
}

/** FNV-1a over the first `length` bytes, signed, as the tables' Int32 words hold it. */
export function hashBytes(bytes: Uint8Array, length: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193);
  }
  return h | 0;
}
