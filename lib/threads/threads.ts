/**
 * How many worker threads `relay serve` runs by default (`--threads`, `RELAY_THREADS`): one per
 * core, as many as the memory budget holds the rings between workers for.
 * @module
 */

import { MemoryPlanError, planMemory } from "./memory_plan.ts";

/** The cores of this machine, as the runtime reports them (at least 1). */
export const CORES: number = Math.max(1, navigator.hardwareConcurrency || 1);

/**
 * Threads when `--threads` is not given: the cores of the machine, fewer when `--max-memory`
 * cannot hold the rings between that many workers (they grow as N·(N−1); the default 256 MiB
 * holds them for 40 workers, see lib/threads/memory_plan.ts). `--threads 1` keeps the
 * single-thread relay, with no workers at all.
 * @param budgetBytes `--max-memory` (0: no budget)
 * @param cores the machine's cores
 */
export function defaultThreads(budgetBytes: number, cores: number = CORES): number {
  for (let threads = cores; threads > 1; threads--) {
    try {
      planMemory(budgetBytes, threads);
      return threads;
    } catch (error) {
      if (!(error instanceof MemoryPlanError)) throw error;
    }
  }
  return 1;
}
