/**
 * Telling JetStream KV's compare-and-swap failures from unavailability: a CAS failure means
 * someone else wrote the key (a definite answer), anything else means the cluster could not
 * answer (retry, or fence when the lease runs out).
 * @module
 */

import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";

/** Whether `error` is KV's "wrong last sequence": the key changed since the given revision. */
export function isWrongRevision(error: unknown): boolean {
  return error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
}
