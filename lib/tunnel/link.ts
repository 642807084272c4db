/**
 * The relay connection a tunnel session runs over, as the session sees it: named messages
 * in, named messages out, and word of destinations that are offline. `relayLinkFactory`
 * (tunnel.ts) makes one from a `RelayClient`; tests use an in-memory relay.
 * @module
 */

/** The relay connection a session runs over. */
export interface TunnelLink {
  /** The name this end registered. */
  readonly name: string;
  /** Whether the relay owns names (an auth file), when the link knows; `--allow` relies on it. */
  readonly namesOwned?: boolean;
  /** Sends one message to `dest`; resolves when the link has taken it. */
  send(dest: string, payload: Uint8Array): Promise<void>;
  /**
   * Sends one message to `dest` (its encoded name) without copying a large payload: the
   * link keeps `payload` until it is written (or dropped) and then calls `release`; the
   * `headroom` bytes in front of `payload` in its buffer are free for the link's own
   * header. Resolves once the link has room for more, not when this message is written.
   * Links without it are given {@linkcode send}, and buffers are reused once it resolves.
   */
  post?(
    dest: Uint8Array,
    payload: Uint8Array,
    release: () => void,
    headroom: number,
  ): Promise<void>;
  /** The next message, or `undefined` once the link has ended. */
  receive(): Promise<{ from: string; payload: Uint8Array } | undefined>;
  /** Ends the link (safe twice). */
  close(): Promise<void>;
  /**
   * Set by the session: the link calls it when the relay reports that a message to `dest`
   * found nobody holding that name (the peer is offline). Links that cannot tell (a relay
   * without the control channel) never call it; the session then waits for its timeouts.
   */
  onUndeliverable?: (dest: string, message: string) => void;
}
