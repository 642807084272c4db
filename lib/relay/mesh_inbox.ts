/**
 * The receiving side of the mesh (lib/relay/mesh.ts): each pair another node opens to a name
 * held here is bound to the connection holding that name when it opens, and drained into that
 * connection's {@linkcode Outbox} one message at a time, framed `sender|len|payload` (or the
 * payload only, `--deliver payload`).
 *
 * ```
 * pair opens (key "sender|dest") ─► the local holder of dest now? no ─► close receiver_closed
 * small, one chunk ─► pushHeaded (copied into the queue, like a small local frame)
 * otherwise         ─► begin(header) … append(chunk) … append(last, end)  (views of the
 *                      packets, no copy; never interleaved)
 * queue over budget ─► stop reading the pair until it drains: credit goes back only as the
 *                      client takes bytes, so the sender on the other node waits
 * holder lets go    ─► its pairs close receiver_closed (a later holder gets new pairs)
 * pair fails        ─► a message half written: the receiver is closed sender_aborted;
 *                      otherwise only the pair ends (its sender counts the drop)
 * ```
 * @module
 */

import type { Outbox, OutFrame } from "../io/outbox.ts";
import type { PairReceiver } from "../cluster/pair_receiver.ts";
import { HeaderCache } from "../wire/relay.ts";
import { COPY_BELOW_BYTES } from "../limits.ts";
import type { Connection } from "./connection.ts";

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();

/** What the inbox needs from its server. */
export interface MeshInboxHost {
  /** The registered connection holding `name` now, if any. */
  holder(name: string): Connection | undefined;
  /** Counts a message delivered into a local queue. */
  delivered(bytes: number): void;
}

/** Delivers pairs from other nodes to local connections. */
export class MeshInbox {
  readonly #host: MeshInboxHost;
  readonly #byConnection = new Map<Connection, Set<PairReceiver>>();

  /** @param host the server */
  constructor(host: MeshInboxHost) {
    this.#host = host;
  }

  /** Pairs open into this node now. */
  get size(): number {
    let n = 0;
    for (const pairs of this.#byConnection.values()) n += pairs.size;
    return n;
  }

  /** A pair another node opened: bound to the local holder of its receiving name, or closed. */
  accept(receiver: PairReceiver): void {
    const bar = receiver.key.indexOf("|");
    if (bar < 0) return receiver.close("protocol_error");
    const sender = receiver.key.slice(0, bar);
    const dest = receiver.key.slice(bar + 1);
    const conn = this.#host.holder(dest);
    if (conn === undefined || conn.closed || conn.name !== dest) {
      return receiver.close("receiver_closed");
    }
    let pairs = this.#byConnection.get(conn);
    if (pairs === undefined) this.#byConnection.set(conn, pairs = new Set());
    pairs.add(receiver);
    this.#drain(receiver, conn, encoder.encode(sender)).finally(() => {
      pairs.delete(receiver);
      if (pairs.size === 0 && this.#byConnection.get(conn) === pairs) {
        this.#byConnection.delete(conn);
      }
    });
  }

  /**
   * `conn` let go of its name or ended: its pairs close (`receiver_closed`), so nothing sent
   * to the name from now on can reach it, and a later holder of the name gets pairs of its own.
   */
  release(conn: Connection): void {
    const pairs = this.#byConnection.get(conn);
    if (pairs === undefined) return;
    this.#byConnection.delete(conn);
    for (const pair of pairs) pair.close("receiver_closed");
  }

  async #drain(receiver: PairReceiver, conn: Connection, sender: Uint8Array): Promise<void> {
    const outbox: Outbox = conn.outbox;
    let frame: OutFrame | undefined;
    let total = 0;
    const headers = new HeaderCache(sender);
    try {
      for (;;) {
        let chunk = receiver.tryRead();
        if (chunk === undefined) chunk = await receiver.read();
        if (chunk === null) return;
        if (conn.closed) return receiver.close("receiver_closed");
        if (chunk.first && chunk.last && chunk.total < COPY_BELOW_BYTES) {
          // Small and whole: copied into the queue's buffer, like a small local frame.
          if (conn.framed) outbox.pushHeaded(headers.of(chunk.total), chunk.bytes);
          else outbox.pushFrame(undefined, chunk.bytes);
          this.#host.delivered(chunk.total);
        } else {
          // Larger: queued as views of the packets (no copy), a chunk at a time.
          if (chunk.first) {
            total = chunk.total;
            frame = outbox.begin(receiver, conn.framed ? headers.of(total) : EMPTY);
          }
          outbox.append(frame!, chunk.bytes, chunk.last);
          if (chunk.last) {
            frame = undefined;
            this.#host.delivered(total);
          }
        }
        if (outbox.overBudget(receiver)) {
          await outbox.waitForRoom(receiver);
          if (conn.closed) return receiver.close("receiver_closed");
        }
      }
    } catch {
      // The pair failed (its reason is on it; the sending side counts the drop). A message
      // already partly written cannot be repaired: the receiver is closed, as for a local
      // sender that leaves mid-message.
      if (frame !== undefined && !outbox.abort(frame)) {
        conn.close(
          "sender_aborted",
          `A pair from another node ended mid-message (${receiver.reason})`,
        );
      }
    }
  }
}
