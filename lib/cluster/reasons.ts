/**
 * Why a cluster pair, claim or node ended, typed, one line each. They join
 * lib/wire/reasons.ts when cluster mode is wired into the relay.
 * @module
 */

/** Why a sender→receiver pair between two nodes ended. */
export const PAIR_CLOSE_REASONS = {
  /** A chunk went missing between the nodes (sequence numbers skipped). */
  sequence_gap: "A chunk between the nodes went missing",
  /** The sender ended the pair in the middle of a message. */
  sender_aborted: "The sender left in the middle of a message",
  /** The receiving side closed the pair (its client left or was slow). */
  receiver_closed: "The receiver closed the pair",
  /** The sender ended the pair (its client left). */
  sender_closed: "The sender closed the pair",
  /** The other node broke the cluster protocol (bad frame, over credit, over size). */
  protocol_error: "The other node broke the cluster protocol",
  /** The link to the other node was lost and may have dropped data. */
  transport_reset: "The link between the nodes was reset",
  /** The other node left the cluster or restarted. */
  peer_gone: "The other node left the cluster",
  /** This node is fenced: it could not renew its lease. */
  cluster_unavailable: "The cluster is unavailable",
  /** The local stream layer was closed. */
  closed: "The stream layer was closed",
} as const;

/** Why a pair ended. */
export type PairCloseReason = keyof typeof PAIR_CLOSE_REASONS;

/** Why a node fenced itself (stopped serving its names). */
export const FENCE_REASONS = {
  /** The lease could not be renewed before it expired (NATS or JetStream unreachable). */
  cluster_unavailable: "The lease could not be renewed in time",
  /** Another process took this node's lease (same node name) or it expired and was recreated. */
  lease_lost: "Another process holds this node's lease",
} as const;

/** Why a node fenced itself. */
export type FenceReason = keyof typeof FENCE_REASONS;

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
