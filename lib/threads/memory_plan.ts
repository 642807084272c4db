/**
 * How `--max-memory` covers a relay of N workers (`relay serve --threads N`). The rings between
 * workers (one per ordered pair, N·(N−1)) are memory whether used or not: they are sized from
 * the budget and the thread count, set aside from the budget at start, and a start whose budget
 * cannot hold them is refused. Everything else the workers hold is charged as it is used
 * (lib/relay/memory_budget.ts).
 *
 * ```
 * ring      largest power of two ≤ budget × RING_BUDGET_SHARE / rings (less its pair cells),
 *           within MIN_RING_BYTES … MAX_RING_BYTES
 * reserved  rings × (ring + control block + pair cells)
 * refused   when reserved > budget × MAX_RING_BUDGET_SHARE (rings at their smallest)
 * no budget (--max-memory 0): MAX_RING_BYTES each, nothing set aside
 * ```
 *
 * Pure: no I/O.
 * @module
 */

import {
  MAX_RING_BUDGET_SHARE,
  MAX_RING_BYTES,
  MIN_RING_BYTES,
  RING_BUDGET_SHARE,
} from "../limits.ts";
import { ringBytes } from "./ring.ts";
import { MAX_RING_PAIRS } from "./ring_link.ts";

/** Shared memory of one ring of `capacity` bytes with its pair cells. */
export function ringFootprintBytes(capacity: number): number {
  return ringBytes(capacity) + MAX_RING_PAIRS * Int32Array.BYTES_PER_ELEMENT;
}

/** How the budget is split at N workers. */
export interface MemoryPlan {
  /** Rings between workers. */
  rings: number;
  /** Capacity of each ring, in bytes (a power of two). */
  ringBytes: number;
  /** Bytes of the budget set aside for the rings (0 without a budget). */
  reservedBytes: number;
}

/** A budget too small for the rings of the threads asked for. */
export class MemoryPlanError extends RangeError {
  /** @param message names `--max-memory`, `--threads` and the least budget that would do */
  constructor(message: string) {
    super(message);
    this.name = "MemoryPlanError";
  }
}

const KiB = 1024;
const MiB = 1024 * KiB;

/** Bytes as `960 KiB`, `1.9 MiB`. */
function size(bytes: number): string {
  if (bytes < MiB) return `${Math.ceil(bytes / KiB)} KiB`;
  return `${(Math.ceil(bytes / MiB * 10) / 10).toFixed(1)} MiB`;
}

/**
 * The rings' size and the part of the budget set aside for them.
 * @param budgetBytes `--max-memory` (0: no budget)
 * @param threads `--threads`
 * @param rings rings between the workers (none in cluster mode, where they reach each other
 *   through the cluster)
 * @throws {MemoryPlanError} when the rings at their smallest take more than
 *   `MAX_RING_BUDGET_SHARE` of the budget
 */
export function planMemory(
  budgetBytes: number,
  threads: number,
  rings: number = threads * (threads - 1),
): MemoryPlan {
  if (rings === 0) return { rings, ringBytes: MAX_RING_BYTES, reservedBytes: 0 };
  if (budgetBytes <= 0) return { rings, ringBytes: MAX_RING_BYTES, reservedBytes: 0 };
  const cells = ringFootprintBytes(MIN_RING_BYTES) - MIN_RING_BYTES; // the same for any size
  const each = Math.min((budgetBytes * RING_BUDGET_SHARE) / rings - cells, MAX_RING_BYTES);
  let capacity = MIN_RING_BYTES;
  while (capacity * 2 <= each) capacity *= 2;
  const reservedBytes = rings * ringFootprintBytes(capacity);
  if (reservedBytes > budgetBytes * MAX_RING_BUDGET_SHARE) {
    const least = Math.ceil(reservedBytes / MAX_RING_BUDGET_SHARE / MiB) * MiB;
    const budget = size(budgetBytes);
    const share = Math.round(MAX_RING_BUDGET_SHARE * 100);
    throw new MemoryPlanError(
      `--max-memory ${budget} is too small for --threads ${threads}: the ${rings} rings between ` +
        `the workers take ${size(reservedBytes)} at their smallest, over ${share} % of it; ` +
        `give --max-memory ${least / MiB}MiB or more, or fewer --threads`,
    );
  }
  return { rings, ringBytes: capacity, reservedBytes };
}
