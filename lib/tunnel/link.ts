/**
 * The relay connection a tunnel session runs over, as the session sees it: named messages
 * in, named messages out. `RelayClient` is one; tests use an in-memory relay.
 * @module
 */

/** The relay connection a session runs over; `RelayClient` is one. */
export interface TunnelLink {
  /** The name this end registered. */
  readonly name: string;
  /** Sends one message to `dest`; resolves when the link has taken it. */
  send(dest: string, payload: Uint8Array): Promise<void>;
  /** The next message, or `undefined` once the link has ended. */
  receive(): Promise<{ from: string; payload: Uint8Array } | undefined>;
  /** Ends the link (safe twice). */
  close(): Promise<void>;
}
