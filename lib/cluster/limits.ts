/**
 * Limits and timeouts of cluster mode. They live in lib/limits.ts with every other limit (each
 * with its unit and reason); this module re-exports the cluster's for lib/cluster.
 * @module
 */

export {
  CHECK_AFTER_MS,
  CLOSE_DRAIN_MS,
  CLOSED_PAIRS_REMEMBERED,
  FENCE_MARGIN_MS,
  KV_REQUEST_TIMEOUT_MS,
  LEASE_RENEW_MS,
  LEASE_TTL_MS,
  MAX_CLUSTER_MESSAGE_BYTES,
  MAX_NODE_NAME_BYTES,
  MAX_PAIR_KEY_BYTES,
  PAIR_WINDOW_BYTES,
  PROBE_RETRY_MS,
  PROBE_TIMEOUT_MS,
  TRANSPORT_IN_FLIGHT_BYTES,
} from "../limits.ts";
