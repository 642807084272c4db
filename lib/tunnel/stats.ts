/**
 * What a tunnel session counts, by typed reason (lib/wire/reasons.ts), and how it logs
 * drops: once per peer and reason at warning level, so a flood cannot flood the log.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { TunnelDropReason, TunnelRejectReason, TunnelResetReason } from "../wire/reasons.ts";
import { TUNNEL_MAX_PEERS } from "../limits.ts";
import { errorText } from "../util/async.ts";

/** Counters of a session, for tests and logs. */
export interface TunnelSessionStats {
  /** Streams this side opened. */
  streamsOpened: number;
  /** Streams peers opened that were accepted. */
  streamsAccepted: number;
  /** Streams ended by a reset or abort, either side. */
  streamsReset: number;
  /** Streams ended early, by reason. */
  resets: Partial<Record<TunnelResetReason, number>>;
  /** Peers seen coming back with a new session (restarted or reconnected). */
  peerRestarts: number;
  /** Packets dropped, by reason. */
  packetsDropped: Partial<Record<TunnelDropReason, number>>;
  /** Frames rejected (invalid, unknown, unauthorised or for no stream), by reason. */
  framesRejected: Partial<Record<TunnelRejectReason, number>>;
  /** Packets that could not be built or sent; the streams they carried were reset. */
  packetsFailed: number;
}

/** Fresh counters, all zero. */
export function newStats(): TunnelSessionStats {
  return {
    streamsOpened: 0,
    streamsAccepted: 0,
    streamsReset: 0,
    resets: {},
    peerRestarts: 0,
    packetsDropped: {},
    framesRejected: {},
    packetsFailed: 0,
  };
}

/** Adds one to `table[key]`. */
export function count<K extends string>(table: Partial<Record<K, number>>, key: K): void {
  table[key] = (table[key] ?? 0) + 1;
}

const log = getLogger(["relay", "tunnel"]);

/** Logs a kind of event at warning level once per peer and key, at debug level after that. */
export class OnceLog {
  readonly #seen = new Set<string>();

  /**
   * Logs `message` with `{peer}` and `{reason}` filled in.
   * @param peer the peer's name
   * @param key what kind of event this is (one warning per peer and key)
   * @param message a logtape message template using `{peer}` and `{reason}`
   * @param detail a sentence or an error
   */
  warn(peer: string, key: string, message: string, detail: unknown): void {
    const id = `${peer}\u0000${key}`;
    const reason = typeof detail === "string" ? detail : errorText(detail);
    // Past the peer limit the set stops growing: every further event is logged at debug.
    if (this.#seen.has(id) || this.#seen.size > TUNNEL_MAX_PEERS * 4) {
      log.debug(message, { peer, reason });
    } else {
      this.#seen.add(id);
      log.warn(message, { peer, reason });
    }
  }
}
