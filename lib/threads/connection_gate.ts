/**
 * `--max-connections` for the whole process when it runs on several workers: one counter in a
 * `SharedArrayBuffer`, taken with a compare-and-swap at accept and given back when the
 * connection ends, so the limit means what it says however the kernel spreads connections.
 * @module
 */

import type { ConnectionGate } from "../relay/server.ts";

/** A new counter for a {@linkcode SharedConnectionGate}. */
export function connectionGateBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(4);
}

/** The process-wide connection count, seen from one thread. */
export class SharedConnectionGate implements ConnectionGate {
  readonly #count: Int32Array;
  readonly #max: number;

  /**
   * @param buffer from {@linkcode connectionGateBuffer}, shared by every worker
   * @param max connections open at once in the whole process
   */
  constructor(buffer: SharedArrayBuffer, max: number) {
    this.#count = new Int32Array(buffer);
    this.#max = max;
  }

  /** Connections open now in the whole process. */
  get count(): number {
    return Atomics.load(this.#count, 0);
  }

  /** Takes one connection; false at the limit. */
  tryAcquire(): boolean {
    for (;;) {
      const now = Atomics.load(this.#count, 0);
      if (now >= this.#max) return false;
      if (Atomics.compareExchange(this.#count, 0, now, now + 1) === now) return true;
    }
  }

  /** Gives one back. */
  release(): void {
    Atomics.sub(this.#count, 0, 1);
  }
}
