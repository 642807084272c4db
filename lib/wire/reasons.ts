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
