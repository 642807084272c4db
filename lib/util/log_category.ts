/**
 * Logger categories that the core and the CLI agree on.
 * @module
 */

/** Logger category whose records are written at any `--log-level` (the listening address). */
export const ANNOUNCE_CATEGORY: string[] = ["relay", "announce"];
