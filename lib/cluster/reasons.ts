/**
 * The cluster's typed reasons (defined in lib/wire/reasons.ts with every other reason) and the
 * error a closed pair throws.
 * @module
 */

import { PAIR_CLOSE_REASONS, type PairCloseReason } from "../wire/reasons.ts";

export {
  FENCE_REASONS,
  type FenceReason,
  PAIR_CLOSE_REASONS,
  type PairCloseReason,
} from "../wire/reasons.ts";

/** Whether `text` is a pair close reason. */
export function isPairCloseReason(text: string): text is PairCloseReason {
  return Object.hasOwn(PAIR_CLOSE_REASONS, text);
}

/** A pair ended; `reason` says why. */
export class PairClosedError extends Error {
  /** Machine-readable reason. */
  readonly reason: PairCloseReason;
  /**
   * An error for a pair that ended.
   * @param reason why the pair ended
   */
  constructor(reason: PairCloseReason) {
    super(`Pair closed: ${PAIR_CLOSE_REASONS[reason]}`);
    this.name = "PairClosedError";
    this.reason = reason;
  }
}
