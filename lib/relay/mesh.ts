/**
 * The seam between one relay server and the names it does not hold itself: names held by
 * other relay nodes (cluster mode on NATS, issue 14) or by other worker threads of the same
 * process (`--threads`, issue 15). The server holds at most one `Mesh`; without one, nothing
 * changes. Both implementations run the same stream layer (`lib/cluster/streams.ts`: pairs,
 * credit, sequence numbers) over a different `NodeTransport` (NATS or MessagePorts) and a
 * different claim authority (JetStream KV, or the main thread).
 *
 * ```
 * register  local registry.claim ─► mesh.claim(name) ─► ok | name_taken | cluster_unavailable
 * route     local holder?  ─► outbox (never touches the mesh)
 *           mesh.holder(name) ─► open(node, key) ─► PairSender.send (credit = backpressure)
 * receive   events.pair(receiver) ─► bound to the local holder at open ─► its outbox
 * leave     registry.release ─► mesh.release(name)
 * fenced    events.fenced(reason) ─► every client closed with that reason
 * ```
 *
 * Rules every implementation keeps:
 * - `holder()` answers from memory (no round trip per message) and never returns this node.
 * - `generation` moves whenever any name changes hands anywhere, so a sender's cached
 *   destination is checked against it exactly as against the local registry's generation.
 * - A pair is bound to the receiving connection that held the name when the pair opened; when
 *   that connection ends the pair closes (`receiver_closed`): data never reaches a later
 *   holder of the name through an old pair.
 * @module
 */

import type { PairReceiver } from "../cluster/pair_receiver.ts";
import type { PairCloseReason } from "../wire/reasons.ts";
import type { Connection } from "./connection.ts";

/**
 * The sending end of a pair as the router uses it: a cluster `PairSender`, or a worker's ring
 * pair (lib/threads/ring_link.ts).
 */
export interface MeshPair {
  /** Why the pair ended, or undefined while it is open. */
  readonly reason: PairCloseReason | undefined;
  /** Resolves with the reason once the pair has ended. */
  readonly closed: Promise<PairCloseReason>;
  /** Sends one message (order kept); `message` stays unchanged until the promise settles. */
  send(message: Uint8Array, signal?: AbortSignal): Promise<void>;
  /** Sends now if it can, copying `message` before it returns; false: nothing sent. */
  trySend(message: Uint8Array): boolean;
  /** Like `trySend`, of `source[start, start + length)`; optional (the ring between workers). */
  trySendAt?(source: Uint8Array, start: number, length: number): boolean;
  /**
   * Sends a copy of `message` now, or queued behind what waits; optional (the ring between
   * workers, which holds waiting small messages back to back). Undefined: sent now; else a
   * promise shared by the messages queued together, settled (never rejected) once they left
   * or the pair ended.
   */
  queue?(message: Uint8Array): Promise<void> | undefined;
  /** Ends the pair once what was handed to it has left. */
  end(): void;
  /**
   * Streaming, optional (the ring between workers; cluster pairs take whole messages only):
   * begins a message of `length` bytes, after every message handed to the pair before it,
   * whose payload follows through {@linkcode MeshPair.append} as the sender's reads bring it.
   */
  begin?(length: number): void;
  /**
   * Streaming: the next bytes of the message begun, copied now as far as the pair has room.
   * @returns true: all taken; false: the pair has ended (the rest of the message is dropped);
   *   a promise of one of those when some wait: `bytes` stays unchanged until it settles
   */
  append?(bytes: Uint8Array): boolean | Promise<boolean>;
  /** Streaming: gives up the message being appended (its sender left part-way through). */
  abandon?(): void;
}

/** The outcome of a mesh-wide claim. */
export type MeshClaim =
  | { ok: true }
  | { ok: false; reason: "name_taken" | "cluster_unavailable" };

/** What a mesh tells the server it belongs to. */
export interface MeshEvents {
  /** Another node opened a pair to a name held here: deliver it, or close it. */
  pair(receiver: PairReceiver): void;
  /** This node may no longer serve its names: close every client with `reason`. */
  fenced(reason: "cluster_unavailable" | "lease_lost"): void;
  /** A name held on another node came or went (`node` null: gone), for presence and `who`. */
  changed(name: string, node: string | null): void;
  /**
   * The registered connection holding `name` here, for a mesh that delivers into outboxes
   * itself (the ring path between workers); optional.
   */
  local?(name: string): Connection | undefined;
  /** Counts a message such a mesh delivered here, or dropped (its receiver ended); optional. */
  count?(event: "delivered" | "receiver_gone", bytes: number): void;
}

/** Names held elsewhere, and the way to reach them. */
export interface Mesh extends AsyncDisposable {
  /** This node's name: the cluster node name, or `w<i>` for a worker of the process. */
  readonly node: string;
  /** Claims `name` mesh-wide for a connection here (after the local registry took it). */
  claim(name: string): Promise<MeshClaim>;
  /** Frees `name` mesh-wide; never throws (retries on its own until done or fenced). */
  release(name: string): void;
  /** The node holding `name`, if another node holds it; from memory. */
  holder(name: string): string | undefined;
  /** Moves whenever any name changes hands on any node. */
  readonly generation: number;
  /** Opens a sender→receiver pair to `node`; `key` names both ends (see the server). */
  open(node: string, key: string): MeshPair;
  /**
   * Whether the `changed` events told so far say `name` is held elsewhere. A `watch` reply is
   * answered from this, not from {@linkcode holder}, so that it and the events that follow it
   * tell one story: an event still on its way when the watch is answered is neither missed
   * nor told twice. Absent: `holder` is used.
   */
  announced?(name: string): boolean;
  /**
   * Tells the listener every `changed` event for changes made anywhere so far, at once, in
   * the order they were made; optional (the workers' shared presence log). The server calls it
   * before a reply that must follow those events (a pong, a watch reply) and before it tells
   * a name of its own going, so presence keeps one order across workers.
   */
  sync?(): void;
  /** Every name held on other nodes, with its node (for `who` and the status page). */
  remoteNames(): Iterable<[name: string, node: string]>;
  /** Sets who gets the events (one listener; set before the server accepts clients). */
  listen(events: MeshEvents): void;
  /** Leaves: ends pairs, frees this node's names; safe to call twice. */
  close(): Promise<void>;
}
