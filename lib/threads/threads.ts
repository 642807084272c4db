/**
 * How many worker threads `relay serve` runs by default (`--threads`, `RELAY_THREADS`).
 * @module
 */

/** The cores of this machine, as the runtime reports them (at least 1). */
export const CORES: number = Math.max(1, navigator.hardwareConcurrency || 1);

/**
 * Threads by default: 1, today's single-thread relay with no workers at all. Give
 * `--threads N` (or `RELAY_THREADS`) to run N workers; see docs/SELF_HOSTING.md.
 */
export const DEFAULT_THREADS = 1;
