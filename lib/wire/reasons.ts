/**
 * Every reason the relay and the tunnel give, typed, with one line each on what it means.
 * Stats, logs, metrics labels, the control channel and docs/PROTOCOL.md all use these names.
 * A reason is never renamed: operators alert on them.
 * @module
 */

/** Why a relay connection ended. */
export const DISCONNECT_REASONS = {
  /** The client closed its side and everything queued for it went out. */
  client_closed: "The client closed the connection",
  /** The socket failed (reset, broken pipe, TLS error). */
  connection_error: "The connection failed",
  /** No registration within the register timeout (3 s by default). */
  register_timeout: "No name within the register timeout",
  /** The first bytes were not a valid registration. */
  bad_registration: "The registration was not valid",
  /** Another client holds the name. */
  name_taken: "The name is already registered",
  /** The name is owned (auth file) and the token was missing or wrong. */
  unauthorized: "The name needs a valid token",
  /** Too many registrations or wrong tokens from this IP. */
  rate_limited: "Too many attempts from this address",
  /** Nothing received for the idle timeout (30 s by default). */
  idle_timeout: "Nothing sent within the idle timeout",
  /** Bytes after registration that are not frames, or a frame over the message limit. */
  protocol_error: "The client broke the protocol",
  /** A receiver accepted no bytes for the write timeout while data waited for it. */
  slow_consumer: "The client did not read for the write timeout",
  /** A sender left in the middle of a message already partly written to this receiver. */
  sender_aborted: "A sender left in the middle of a message to this client",
  /** The relay is shutting down. */
  server_shutdown: "The relay is shutting down",
  /**
   * With the write timeout off, a sender was held back by a receiver that did not read for
   * longer than the idle timeout (with a write timeout the receiver is dropped instead).
   */
  held_back: "The client was held back by a receiver that did not read",
  /**
   * Cluster mode: the node could not reach the cluster (its lease could not be renewed, or a
   * name claim got no answer), so it stopped serving names rather than risk duplicates.
   */
  cluster_unavailable: "The relay cannot reach its cluster",
} as const;

/** Why a relay connection ended; counted per reason. */
export type DisconnectReason = keyof typeof DISCONNECT_REASONS;

/** Why a connection was refused at accept, before it could register. */
export const REFUSAL_REASONS = {
  /** The relay is at `--max-connections`. */
  too_many_connections: "The relay has too many connections",
  /** This IP (or IPv6 /64) is at `--max-connections-per-ip`. */
  too_many_connections_per_ip: "Too many connections from this address",
  /** Accepted just as the relay began to shut down. */
  server_shutdown: "The relay is shutting down",
} as const;

/** Why a connection was refused at accept; counted per reason. */
export type RefusalReason = keyof typeof REFUSAL_REASONS;

/** Why a message was not delivered (the sender stays connected). */
export const DROP_REASONS = {
  /** No client holds the destination name. */
  unknown_destination: "No client has that name",
  /** The receiver ended while the message was arriving (its name may have a new holder). */
  receiver_gone: "The receiver left before the message was complete",
} as const;

/** Why a message was not delivered; counted per reason. */
export type DropReason = keyof typeof DROP_REASONS;

/**
 * Why the relay refused a registration, sent to an opted-in client as
 * `{"op":"refused","reason":…}` before it closes the connection (docs/PROTOCOL.md, "Register").
 */
export const REGISTRATION_REASONS = {
  /** Another client holds the name. */
  name_taken: "The name is already registered",
  /** Not 1–255 bytes of UTF-8 without `|`, `:` or control characters. */
  invalid_name: "The name is not valid",
  /** The name is owned (auth file) or `--require-auth` is on, and no token was sent. */
  auth_required: "The name needs a token",
  /** The token is wrong (or not a valid token). */
  bad_token: "The token is wrong",
  /** Too many registrations or wrong tokens from this address. */
  rate_limited: "Too many attempts from this address",
  /** The relay is at `--max-connections`. */
  too_many_connections: "The relay has too many connections",
  /** This address is at `--max-connections-per-ip`. */
  too_many_connections_per_ip: "Too many connections from this address",
  /** The hello's `v` is not a version the relay speaks. */
  unsupported_version: "The relay does not speak this control channel version",
  /** No registration within the register timeout. */
  register_timeout: "No registration within the register timeout",
  /** Cluster mode: the name could not be claimed cluster-wide (the cluster did not answer). */
  cluster_unavailable: "The relay cannot reach its cluster",
} as const;

/** Why a registration was refused. */
export type RegistrationReason = keyof typeof REGISTRATION_REASONS;

/**
 * Reasons of the control channel's `error` replies and events, and the `bye` reason for a
 * broken control payload (docs/PROTOCOL.md, "Control channel").
 */
export const CONTROL_ERROR_REASONS = {
  /** The request's `op` is not one the relay knows (the connection stays open). */
  unknown_op: "Unknown request",
  /** A field of the request has the wrong type or value. */
  bad_request: "The request is not valid",
  /** The request needs a registered name. */
  not_registered: "Register first",
  /** `who` is turned off on this relay (`--listing off`). */
  listing_disabled: "Listing names is turned off on this relay",
  /** The client would watch more names than allowed. */
  too_many_watches: "Too many watched names",
  /** A message went to a name nobody holds (event; the sender stays connected). */
  unknown_destination: "No client has that name",
  /** A message was over the relay's message limit (event; then `bye` and close). */
  message_too_large: "The message is larger than the relay's limit",
  /** A control payload that is not a JSON object with a string `op`, or too large (`bye`). */
  bad_control: "The control request could not be read",
} as const;

/** Reason of a control-channel `error`. */
export type ControlErrorReason = keyof typeof CONTROL_ERROR_REASONS;

// ---- Cluster (lib/cluster/, docs/CLUSTER.md) ----

/** Why a sender→receiver pair between two relay nodes (or worker threads) ended. */
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

/** Why a node fenced itself (stopped serving its names and closed its clients). */
export const FENCE_REASONS = {
  /** The lease could not be renewed before it expired (NATS or JetStream unreachable). */
  cluster_unavailable: "The lease could not be renewed in time",
  /** Another process took this node's lease (same node name) or it expired and was recreated. */
  lease_lost: "Another process holds this node's lease",
} as const;

/** Why a node fenced itself. */
export type FenceReason = keyof typeof FENCE_REASONS;

// ---- Tunnel (lib/tunnel/) ----

/**
 * Why a tunnel stream was reset. A RESET frame carries the code of the reason
 * (`RESET_CODES` in lib/wire/tunnel.ts) and a sentence; the keys are counted in the
 * session's stats.
 */
export const TUNNEL_RESET_REASONS = {
  /** The peer did not accept the stream within the open timeout. */
  open_timeout: "The peer did not accept the stream in time",
  /** The exposed target refused the connection or did not answer within the dial timeout. */
  dial_failed: "The exposed target could not be connected",
  /** The opener is not in this tunnel's `--allow` list. */
  not_allowed: "The peer is not allowed to open streams",
  /** This tunnel exposes no service of that name. */
  unknown_service: "No such service is exposed",
  /** The peer already has the most streams a peer may have open at once. */
  too_many_streams: "Too many streams with this peer",
  /** A frame broke the protocol: credit exceeded, data after FIN, a bad or doubled frame. */
  protocol_violation: "A frame broke the tunnel protocol",
  /** The local connection (socket, stdin or stdout) failed. */
  local_failed: "The local connection failed",
  /** The peer was not heard from for three keepalive intervals. */
  peer_silent: "The peer was not heard from for three keepalives",
  /** A packet that carried the stream's frames could not be built or sent. */
  send_failed: "A packet of the stream could not be sent",
  /** The peer reset the stream (its RESET frame gives its own reason). */
  peer_reset: "The peer reset the stream",
  /** The relay reports that no client holds the peer's name (control channel). */
  peer_offline: "The peer is not connected to the relay",
  /** The peer came back with a new session (it restarted or reconnected). */
  peer_restarted: "The peer restarted",
  /** The peer ended its session (BYE). */
  peer_ended: "The peer ended its session",
  /** This tunnel is closing, or lost its relay connection. */
  shutdown: "The tunnel is shutting down",
} as const;

/** Why a tunnel stream was reset; counted per reason. */
export type TunnelResetReason = keyof typeof TUNNEL_RESET_REASONS;

/** Why a whole tunnel packet was dropped (the session and its other streams go on). */
export const TUNNEL_DROP_REASONS = {
  /** Bytes that are not a tunnel packet: short, another version, unknown kind, bad framing. */
  malformed: "The packet is not a valid tunnel packet",
  /** A sealed packet that failed authentication, was replayed, or was refused unopened. */
  rejected: "The sealed packet was refused",
  /** A plain packet to a tunnel that requires encryption (`--secret-file`). */
  not_encrypted: "The packet is not encrypted",
  /** A sealed packet to a tunnel without a secret. */
  encrypted: "The packet is encrypted and this tunnel has no secret",
  /** Addressed to an earlier session of this tunnel (the sender is told the current one). */
  stale_session: "The packet is for an earlier session of this tunnel",
  /** From a session of the peer that has ended. */
  retired_session: "The packet is from an ended session of the peer",
  /** Stream frames from a peer that does not know this session yet. */
  unaddressed: "Frames were sent before the handshake",
  /** This tunnel already knows the most peers it may. */
  too_many_peers: "Too many peers",
} as const;

/** Why a tunnel packet was dropped; counted per reason. */
export type TunnelDropReason = keyof typeof TUNNEL_DROP_REASONS;

/** Why one tunnel frame was rejected (the rest of its packet is still acted on). */
export const TUNNEL_REJECT_REASONS = {
  /** A frame for a stream that does not exist (DATA is answered with a RESET). */
  unknown_stream: "No such stream",
  /** OPEN from a peer outside `--allow`. */
  not_allowed: "The peer is not allowed to open streams",
  /** OPEN to a service this tunnel does not expose. */
  unknown_service: "No such service is exposed",
  /** OPEN past the per-peer stream limit. */
  too_many_streams: "Too many streams with this peer",
  /** A known frame type with wrong fields. */
  invalid: "The frame is not valid",
  /** A frame type this version does not know (skipped, for forward compatibility). */
  unknown_type: "Unknown frame type",
} as const;

/** Why a tunnel frame was rejected; counted per reason. */
export type TunnelRejectReason = keyof typeof TUNNEL_REJECT_REASONS;
