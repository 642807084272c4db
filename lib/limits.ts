/**
 * Every limit and timeout of the relay in one place. Each name carries its unit; each value
 * says why it is what it is. The server options default to these.
 * @module
 */

/** Longest name, in UTF-8 bytes: names travel in every frame header, so they stay short. */
export const MAX_NAME_BYTES = 255;

/** Most decimal digits in a length field: 20 digits hold any 64-bit length. */
export const MAX_LENGTH_DIGITS = 20;

/** Longest auth token after `:` in a registration, in bytes (SHA-256 hex is 64; room to spare). */
export const MAX_TOKEN_BYTES = 255;

/** A client must register within this time after connecting (the original protocol's 3 s). */
export const REGISTER_TIMEOUT_MS = 3_000;

/** A client that sends nothing for this long is dropped (the original protocol's 30 s). */
export const IDLE_TIMEOUT_MS = 30_000;

/** A receiver that accepts no bytes for this long while data waits is a slow consumer. */
export const WRITE_TIMEOUT_MS = 30_000;

/** Largest payload of one message: big enough for files, small enough to bound a frame. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Bytes buffered for one receiver before its senders are paused (backpressure). */
export const MAX_BUFFER_BYTES = 8 * 1024 * 1024;

/**
 * Bytes queued for receivers and in flight to them, over all connections, before senders are
 * paused (`--max-memory`): with the per-receiver cap alone, 64 receivers that never read grew
 * the relay by half a gigabyte in seconds. 256 MiB fits a small VPS with room to spare.
 */
export const MAX_MEMORY_BYTES = 256 * 1024 * 1024;

/**
 * Bytes each receiver may always have queued while the memory budget is not spent: one full
 * read of a busy sender, so a receiver that reads never holds its senders back.
 */
export const GUARANTEED_QUEUE_BYTES = 256 * 1024;

/** Open connections at once; past it new connections are refused. */
export const MAX_CONNECTIONS = 16_384;

/**
 * Addresses (an IPv4 address or an IPv6 /64) the per-IP limits of `--threads N` track at once,
 * shared by every worker: 65,536 like a single-thread relay's rate buckets. A table this full
 * refuses new addresses (`too_many_connections`, `rate_limited`) rather than let one through
 * uncounted; an address is forgotten once it has no connection and its rates have refilled.
 * About 12 MiB of shared memory (96 bytes a slot, twice as many slots as addresses).
 */
export const MAX_TRACKED_IPS = 65_536;

/** First read buffer of a connection: small, so idle clients stay cheap (at least a registration). */
export const MIN_READ_BYTES = 1024;

/** Largest read buffer: a busy sender's reads grow to this, so one read carries many frames. */
export const MAX_READ_BYTES = 256 * 1024;

/**
 * Payload pieces below this size are copied into a send queue (the relay's and a RelayClient's);
 * larger ones are queued as
 * views of the buffer they arrived in (no copy). Copying small pieces lets read buffers be
 * reused and keeps a slow receiver from pinning a large buffer for a few bytes.
 */
export const COPY_BELOW_BYTES = 16 * 1024;

/** Most bytes gathered into one socket write: many small frames, one syscall. */
export const MAX_WRITE_BATCH_BYTES = 256 * 1024;

/**
 * Interval of the relay's activity summary at info level (connections, registrations and
 * disconnects since the last one): per-connection lines are at debug, since two info lines
 * per connection were a third of the time of accepting connections one after another.
 */
export const LOG_SUMMARY_INTERVAL_MS = 10_000;

/** Default client keepalive: well inside the idle timeout, so one lost beat does not drop it. */
export const KEEPALIVE_MS = 10_000;

/** Default TCP port of the relay (the original README's). */
export const DEFAULT_PORT = 8080;

// Control channel (docs/PROTOCOL.md, "Control channel"): every bound an opted-in client can reach.

/** Largest control payload either way: a JSON object, never a file; bounds every reply too. */
export const MAX_CONTROL_BYTES = 64 * 1024;

/** Names one client may watch: enough for a contact list, small enough to bound presence. */
export const MAX_WATCHED_NAMES = 256;

/** Watches over all clients: caps presence memory (names ≤ 255 B) whatever the client count. */
export const MAX_TOTAL_WATCHES = 256 * 1024;

/** Most names in one `who` page (a page is also cut at `MAX_CONTROL_BYTES` of JSON). */
export const MAX_WHO_LIMIT = 1_000;

/** Names in a `who` page when the request gives no `limit`. */
export const DEFAULT_WHO_LIMIT = 100;

/** Window of the delivery-error rate limit: one event per destination per window. */
export const ERROR_EVENT_INTERVAL_MS = 1_000;

/** Destinations one client gets error events about per window; the rest count in `dropped`. */
export const MAX_ERROR_DESTINATIONS = 64;

/** Time a closing opted-in connection waits for its `bye` or `refused` to go out. */
export const BYE_LINGER_MS = 500;

/** Time a connection refused at accept has to show its first byte (`|` earns a `refused`). */
export const REFUSE_PEEK_MS = 250;

/** Connections refused at accept that may wait for their first byte at once; others just close. */
export const MAX_REFUSE_PEEKS = 32;

// Tunnel (lib/tunnel/): the tunnel's keepalive (PING interval) is KEEPALIVE_MS above.

/** Time for a peer tunnel to answer HELLO and to accept a stream, and for the link to return. */
export const TUNNEL_OPEN_TIMEOUT_MS = 10_000;

/** Time for an exposed target to take a connection: a local service answers in far less. */
export const TUNNEL_DIAL_TIMEOUT_MS = 5_000;

/** Peers one tunnel session knows at once; past it, idle ones are forgotten and new ones dropped. */
export const TUNNEL_MAX_PEERS = 1024;

/** Streams with one peer at once, each direction: bounds what a peer claims (each has a window). */
export const TUNNEL_MAX_STREAMS_PER_PEER = 1024;

/** Ended sessions remembered per peer, so that their packets are refused rather than replayed. */
export const TUNNEL_MAX_RETIRED_SESSIONS = 16;

/**
 * Packets a tunnel's relay link queues before its writer waits: four full DATA packets keep
 * the socket busy, and a stream behind a bulk transfer waits for no more than these.
 */
export const TUNNEL_LINK_BUFFER_BYTES = 1024 * 1024;

// Threads (`relay serve --threads N`, lib/threads/memory_plan.ts): how --max-memory covers the
// memory between workers.

/**
 * Largest ring between two workers (one per ordered pair): 1 MiB holds 13 k messages of 64 B or
 * 15 of 64 KiB, enough to keep a busy pair moving; there are N·(N−1) rings, so not more.
 */
export const MAX_RING_BYTES = 1024 * 1024;

/**
 * Smallest ring between two workers: still 1,000 messages of 64 B, and records of 32 KiB (half
 * a ring), so a large message crosses in pieces of that size.
 */
export const MIN_RING_BYTES = 64 * 1024;

/**
 * Share of --max-memory the rings between workers are sized to (each ring the largest power of
 * two that fits, within MIN_RING_BYTES … MAX_RING_BYTES): the rings are memory whether used or
 * not, so they are set aside from the budget at start; an eighth leaves the queues the rest
 * (256 MiB: 1 MiB rings up to 6 threads, 512 KiB at 8, 64 KiB at 16).
 */
export const RING_BUDGET_SHARE = 1 / 8;

/**
 * Share of --max-memory set aside, in cluster mode with --threads, for the messages worker 0's
 * bridges hold whole between a sibling worker and another node (lib/threads/bridge_allowance.ts):
 * at the default 256 MiB, 32 MiB, two 16 MiB messages at once; a message that does not fit waits,
 * holding its sender back.
 */
export const BRIDGE_BUDGET_SHARE = 1 / 8;

/**
 * Most of --max-memory the rings may take at their smallest before a start is refused (the
 * queues would get less than the other half).
 */
export const MAX_RING_BUDGET_SHARE = 1 / 2;

/**
 * Credit window of a stream-layer pair between two workers (the path for a pair opened before
 * the other worker's ring is here, or with every ring pair id in use): its chunks are charged to
 * --max-memory while they wait here, and a pair can pass the budget by at most one window, as a
 * sender by one read (`MAX_READ_BYTES`).
 */
export const WORKER_PAIR_WINDOW_BYTES = 256 * 1024;

// Cluster mode (lib/cluster/, docs/CLUSTER.md) and the mesh seam (lib/relay/mesh.ts).

/**
 * Pairs one sender keeps open to names on other nodes (each has a credit window on the far
 * side); past it, the oldest is ended cleanly and reopened when used again.
 */
export const MAX_PAIRS_PER_SENDER = 64;

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

/** A fenced node tries to join the cluster again this often (a new lease, a new epoch). */
export const REJOIN_RETRY_MS = 1_000;

/**
 * How long `serve --cluster` keeps trying to join at start: NATS started beside it (a compose
 * file) takes a few seconds to elect its JetStream leader.
 */
export const CLUSTER_JOIN_TIMEOUT_MS = 30_000;
