/**
 * Limits and timeouts of cluster mode, each with its unit and a reason. They live beside the
 * cluster code until cluster mode is wired into the relay; then they move to lib/limits.ts.
 * @module
 */

/**
 * How long a node's lease lives without renewal. A SIGKILLed node's names are claimable at
 * most this long after its last renewal; issue 14 allows at most 10 s. It must also outlast a
 * JetStream leader election, during which no lease can be renewed: killing the NATS server
 * that led the KV stream stopped writes for 5.8–7.8 s here (2.9's raft timeouts are fixed), so
 * a 6 s lease fenced every node of the cluster. 10 s, renewed every second, rides that out.
 */
export const LEASE_TTL_MS = 10_000;

/** How often a node renews its lease: often, so a leader election finds a fresh lease. */
export const LEASE_RENEW_MS = 1_000;

/**
 * A node fences itself this long before its lease could expire on the server, so it has closed
 * its clients before another node may take their names over (allows for clock drift).
 */
export const FENCE_MARGIN_MS = 500;

/** How long one KV request (claim, release, renew) may take before it counts as failed. */
export const KV_REQUEST_TIMEOUT_MS = 1_500;

/** Longest node name in bytes; node names are NATS subject tokens and KV keys. */
export const MAX_NODE_NAME_BYTES = 64;

/** Longest pair key in bytes (a sender name, a separator and a receiver name). */
export const MAX_PAIR_KEY_BYTES = 1024;

/**
 * Default credit window per sender→receiver pair, in payload bytes: enough to keep a LAN link
 * busy, small enough that a thousand stalled pairs stay far below NATS's 64 MiB pending limit
 * per connection only when the relay also caps the total (see docs/CLUSTER.md).
 */
export const PAIR_WINDOW_BYTES = 2 * 1024 * 1024;

/** Largest message carried between nodes: the relay's own limit. */
export const MAX_CLUSTER_MESSAGE_BYTES = 16 * 1024 * 1024;

/**
 * Bytes a NATS transport publishes before it waits for the server to acknowledge them (a
 * flush round trip). nats.js ignores socket backpressure, so this bounds its outbound buffer.
 */
export const TRANSPORT_IN_FLIGHT_BYTES = 8 * 1024 * 1024;

/** Recently closed pairs remembered per node, so frames still in flight for them are dropped. */
export const CLOSED_PAIRS_REMEMBERED = 4096;

/** A link probe (PING) is repeated this often until its PONG arrives. */
export const PROBE_RETRY_MS = 200;

/** A link whose probe gets no answer for this long fails: its pairs close (`transport_reset`). */
export const PROBE_TIMEOUT_MS = 5_000;

/** On close, the stream layer waits this long for END and CLOSE frames to leave. */
export const CLOSE_DRAIN_MS = 1_000;

/**
 * A pair that sent chunks and then went quiet sends CHECK with its next sequence number after
 * this long, so chunks lost at the end of a burst are seen without waiting for more traffic.
 */
export const CHECK_AFTER_MS = 1_000;
