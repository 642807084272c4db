/**
 * The {@linkcode Mesh} of one worker of a multi-threaded relay in cluster mode
 * (`relay serve --cluster … --threads N`): the process is ONE cluster node, `<node>`. The
 * worker's names are unique in the process through the shared name table (the
 * {@linkcode WorkerMesh}) and in the cluster through the KV claims, which worker 0 alone makes,
 * for the whole process, under the node's one lease (cluster_door.ts). A name on a sibling
 * worker is reached through the shared-memory rings, never through NATS; a name on another
 * process through NATS, on worker 0's one connection.
 *
 * ```
 * claim     name table (this worker) ─► worker 0: claims.claim(name) as <node> ─► ok | refused
 *           (a refusal gives the table entry back)
 * holder    a sibling (name table) ─► "w<j>" │ another node (directory, via worker 0) ─► node
 * route     to "w<j>"  ─ ring ─────────────────────────────────────────▶ w<j>'s outbox
 *           to a node, from worker 0: streams.open(node, key) ─ NATS ─▶ that node
 *           to a node, from worker i: stream pair "|node|key" ─▶ worker 0 ─ bridge ─ NATS ─▶
 * receive   a pair from a node (worker 0's subject relay.node.<node>) for a name on
 *           worker 0 ─▶ its outbox; on w<j> ─ bridge ─ ring ─▶ w<j>'s outbox
 * presence  worker 0 alone says who holds a name (a worker, once the cluster took its claim;
 *           another node), in one order, to every worker: `who`, `watch` and the events
 * fenced    worker 0's lease lost ─► every worker closes its clients (cluster_unavailable)
 * ```
 *
 * Why one door (worker 0) and not a NATS connection per worker: the node has one lease, one
 * epoch and one set of claims; worker 0 renews the lease and every claim points at it, so a
 * SIGKILLed process frees all its names within one lease time, and no other node ever sees
 * the process's workers. A worker that dies stops the whole relay (threaded_relay.ts), so the
 * lease never outlives the workers it speaks for. The price: traffic between a worker other
 * than 0 and another node takes one more in-process hop (a stream pair between the two
 * workers, reassembled into whole messages by the bridge; the bridges together hold at most
 * an eighth of `--max-memory`, set aside from it at start, a message that does not fit holding
 * its sender back: bridge_allowance.ts), and one NATS connection carries
 * all of the process's cross-node traffic, as for a single-threaded node.
 * @module
 */

import type { Mesh, MeshClaim, MeshEvents, MeshPair } from "../relay/mesh.ts";
import type { ClusterMesh } from "../cluster/mesh.ts";
import type { PairReceiver } from "../cluster/pair_receiver.ts";
import { type WorkerMesh, workerNode } from "./worker_mesh.ts";
import { DoorClient, DoorServer, type PresenceHolder } from "./cluster_door.ts";
import type { Logger } from "@logtape/logtape";
import { type ClusterSettings, joinCluster } from "../cluster/join.ts";
import { CLUSTER_JOIN_TIMEOUT_MS } from "../limits.ts";
import { BridgeAllowance } from "./bridge_allowance.ts";
import { concat } from "../util/bytes.ts";

/**
 * How long a worker other than 0 waits for worker 0 to have joined: worker 0's whole join
 * (retried for `CLUSTER_JOIN_TIMEOUT_MS`), and a margin for its start.
 */
const DOOR_OPEN_TIMEOUT_MS = CLUSTER_JOIN_TIMEOUT_MS + 10_000;

/**
 * How long worker 0, leaving, waits for the other workers' servers to have closed before it
 * leaves the cluster: below the main thread's margin for a worker to stop after its grace
 * (threaded_relay.ts, 5 s), since the workers close together.
 */
const DOOR_BYE_TIMEOUT_MS = 3_000;

/** What {@linkcode joinThreadCluster} needs of a worker. */
export interface ThreadClusterOptions {
  /** The worker's index: 0 joins the cluster. */
  index: number;
  /** The cluster and the process's node name. */
  settings: ClusterSettings;
  /** The worker's mesh of its siblings. */
  workers: WorkerMesh;
  /** The ports between worker 0 and the others (`StartMessage.gather`). */
  gather: Record<number, MessagePort>;
  /** Where the join and rejoins are logged (worker 0). */
  log: Logger;
  /** Bytes worker 0's bridges may hold together (undefined: no budget, no limit). */
  bridgeBytes?: number;
}

/**
 * The worker's mesh in cluster mode: worker 0 joins the cluster as the process's node (and
 * opens the door for the others), another worker waits until worker 0 has.
 * @throws {Error} when the cluster could not be joined (`ClusterJoinError`) or worker 0 did
 *   not open the door in time
 */
export async function joinThreadCluster(
  options: ThreadClusterOptions,
): Promise<ThreadClusterMesh> {
  const { index, settings, workers, gather } = options;
  if (index === 0) {
    const cluster = await joinCluster(settings, options.log);
    // The mesh follows the cluster from here on (its names now, then every change).
    const doors = new DoorServer(cluster, gather);
    const mesh = ThreadClusterMesh.first(workers, cluster, doors, options.bridgeBytes);
    await doors.othersOpened(DOOR_OPEN_TIMEOUT_MS);
    return mesh;
  }
  const door = await DoorClient.open(gather[0], DOOR_OPEN_TIMEOUT_MS);
  return ThreadClusterMesh.other(workers, index, settings.node, door);
}

/** What the composed mesh needs from the cluster, on worker 0 and on the others alike. */
interface Elsewhere {
  claim(name: string): Promise<MeshClaim>;
  release(name: string): void;
  holder(name: string): string | undefined;
  readonly generation: number;
}

/** A worker's mesh in cluster mode: siblings through the rings, other nodes through NATS. */
export class ThreadClusterMesh implements Mesh {
  /** The process's node name (the same on every worker). */
  readonly node: string;
  readonly #workers: WorkerMesh;
  /** Worker 0: the process's cluster membership. */
  readonly #cluster: ClusterMesh | undefined;
  /** Worker 0: the other workers' way to it. */
  readonly #doors: DoorServer | undefined;
  readonly #elsewhere: Elsewhere;
  /** Workers other than 0: the cluster through worker 0. */
  readonly #door: DoorClient | undefined;
  #events: MeshEvents | undefined;
  /** This worker's index. */
  readonly #index: number;
  /**
   * Who holds each name online, as worker 0 told it (cluster_door.ts): a worker's index or
   * another node. The name table's changes are not presence here: a claim there is tentative
   * until the cluster took it.
   */
  readonly #online = new Map<string, number | string>();
  #closing: Promise<void> | undefined;
  /** Bridges moving messages between a pair and another (worker 0). */
  #bridges = 0;
  /** What the bridges may hold together, reserved a whole message at a time (worker 0). */
  #allowance = new BridgeAllowance(Infinity);

  private constructor(
    workers: WorkerMesh,
    index: number,
    node: string,
    parts: { cluster: ClusterMesh; doors: DoorServer } | { door: DoorClient },
  ) {
    this.#workers = workers;
    this.#index = index;
    this.node = node;
    if ("cluster" in parts) {
      this.#cluster = parts.cluster;
      this.#doors = parts.doors;
      const doors = parts.doors;
      this.#elsewhere = {
        claim: (name) => doors.claim(0, name),
        release: (name) => doors.release(0, name),
        holder: (name) => parts.cluster.holder(name),
        get generation() {
          return parts.cluster.generation;
        },
      };
      doors.listen((name, holder) => this.#presence(name, holder));
      parts.cluster.listen({
        pair: (receiver) => this.#fromNode(receiver),
        changed: (name, node) => doors.changed(name, node),
        fenced: (reason) => {
          doors.fenced(reason);
          this.#events?.fenced(reason);
        },
        local: (name) => this.#events?.local?.(name),
        count: (event, bytes) => this.#events?.count?.(event, bytes),
      });
    } else {
      this.#door = parts.door;
      this.#elsewhere = parts.door;
      parts.door.listen({
        presence: (name, holder) => this.#presence(name, holder),
        fenced: (reason) => this.#events?.fenced(reason),
      });
    }
  }

  /** Worker 0's mesh: it is the process's member of the cluster and serves the others' doors. */
  static first(
    workers: WorkerMesh,
    cluster: ClusterMesh,
    doors: DoorServer,
    bridgeBytes?: number,
  ): ThreadClusterMesh {
    const mesh = new ThreadClusterMesh(workers, 0, cluster.node, { cluster, doors });
    if (bridgeBytes !== undefined) mesh.#allowance = new BridgeAllowance(bridgeBytes);
    return mesh;
  }

  /** Another worker's mesh: the cluster through worker 0's door. */
  static other(
    workers: WorkerMesh,
    index: number,
    node: string,
    door: DoorClient,
  ): ThreadClusterMesh {
    return new ThreadClusterMesh(workers, index, node, { door });
  }

  /** Claims `name` in the process (name table), then in the cluster (through worker 0). */
  async claim(name: string): Promise<MeshClaim> {
    if (this.#closing) return { ok: false, reason: "cluster_unavailable" };
    const local = await this.#workers.claim(name);
    if (!local.ok) return local;
    const claim = await this.#elsewhere.claim(name);
    if (!claim.ok) this.#workers.release(name);
    return claim;
  }

  /** Frees `name` in the process and in the cluster. */
  release(name: string): void {
    this.#workers.release(name);
    this.#elsewhere.release(name);
  }

  /**
   * The other node or the sibling (`w<j>`) holding `name`. Another node first: a name the
   * cluster shows elsewhere can be in the name table only as a sibling's tentative claim (the
   * cluster will refuse it), and its messages go on to the real holder meanwhile, as on a
   * single-threaded node whose registry holds a name it has not yet claimed in the cluster.
   */
  holder(name: string): string | undefined {
    return this.#elsewhere.holder(name) ?? this.#workers.holder(name);
  }

  /** Moves whenever a name changes hands in the process or in the cluster. */
  get generation(): number {
    return this.#workers.generation + this.#elsewhere.generation;
  }

  /** A pair to a sibling (ring) or to another node (NATS, through worker 0 if need be). */
  open(node: string, key: string): MeshPair {
    const dest = key.slice(key.indexOf("|") + 1);
    // By the name's holder, not the node's name: a node elsewhere may be called "w1".
    if (this.#workers.holder(dest) === node) return this.#workers.open(node, key);
    if (this.#cluster) return this.#cluster.open(node, key);
    return this.#workers.openStream(workerNode(0), forwardKey(node, key));
  }

  /** Whether the events told so far say a sibling or another node holds `name`. */
  announced(name: string): boolean {
    const holder = this.#online.get(name);
    return holder !== undefined && holder !== this.#index;
  }

  /**
   * Every name held elsewhere: a sibling's under this node's name (it is on this node, for
   * `who` and the status page), another node's under that node.
   */
  *remoteNames(): Iterable<[name: string, node: string]> {
    for (const [name, holder] of this.#online) {
      if (holder !== this.#index) yield [name, this.#label(holder)];
    }
  }

  #label(holder: number | string): string {
    return typeof holder === "number" ? this.node : holder;
  }

  /**
   * Sets who gets the events of the siblings and of the cluster (the cluster's are followed
   * from the start: names, presence and fencing before this are in the mesh already).
   */
  listen(events: MeshEvents): void {
    this.#events = events;
    this.#workers.listen({
      ...events,
      pair: (receiver) => this.#fromSibling(receiver),
      changed: () => {}, // presence comes from worker 0 (see #online)
    });
  }

  /**
   * Worker 0 says who holds `name` now: told to the server as online or offline elsewhere
   * when that changed (this worker's own names are its server's to tell). A name that moved
   * from one holder elsewhere to another (a hand-over between workers, a takeover of a dead
   * node's claim) left and came back.
   */
  #presence(name: string, holder: PresenceHolder): void {
    const events = this.#events;
    const before = this.#online.get(name) ?? null;
    if (holder === null) this.#online.delete(name);
    else this.#online.set(name, holder);
    const was = before !== null && before !== this.#index;
    const is = holder !== null && holder !== this.#index;
    if (was && is && before !== holder) events?.changed(name, null);
    if (is && (!was || before !== holder)) events?.changed(name, this.#label(holder));
    else if (was && !is) events?.changed(name, null);
  }

  /** A stream pair from a sibling: for a name here, or (worker 0) to forward to a node. */
  #fromSibling(receiver: PairReceiver): void {
    const forward = parseForwardKey(receiver.key);
    if (forward === undefined) {
      return this.#events ? this.#events.pair(receiver) : receiver.close("receiver_closed");
    }
    if (!this.#cluster) return receiver.close("cluster_unavailable");
    let out: MeshPair;
    try {
      out = this.#cluster.open(forward.node, forward.key);
    } catch {
      return receiver.close("cluster_unavailable"); // not in the cluster now (rejoining)
    }
    this.#bridge(receiver, out);
  }

  /** A pair from another node (worker 0): for a name here, or on a sibling. */
  #fromNode(receiver: PairReceiver): void {
    const dest = receiver.key.slice(receiver.key.indexOf("|") + 1);
    const sibling = this.#workers.holder(dest);
    if (sibling === undefined) {
      return this.#events ? this.#events.pair(receiver) : receiver.close("receiver_closed");
    }
    this.#bridge(receiver, this.#workers.open(sibling, receiver.key));
  }

  /**
   * Moves whole messages from `receiver` to `out` in order, one at a time: a message is read
   * (its credit goes back) only once the one before it was taken by `out`, so the bridge holds
   * at most one message. Each is counted as delivered here, once, as by a receiving node.
   */
  async #bridge(receiver: PairReceiver, out: MeshPair): Promise<void> {
    this.#bridges++;
    out.closed.then((reason) => receiver.close(reason));
    try {
      // Chunks already queued are taken without awaiting (one await per burst, not per message).
      const next = async () => receiver.tryRead() ?? await receiver.read();
      for (;;) {
        let chunk = receiver.tryRead();
        if (chunk === undefined) chunk = await receiver.read();
        if (chunk === null) break;
        let message = chunk.bytes;
        let reserved = 0;
        try {
          if (!chunk.last) {
            // The whole message is reserved before the rest of it is read (its credit
            // returned): one that does not fit waits here, holding its sender back.
            reserved = chunk.total;
            await this.#allowance.take(reserved);
            const parts = [chunk.bytes];
            do {
              chunk = await next();
              if (chunk === null) return; // ended mid-message: nothing of it goes on
              parts.push(chunk.bytes);
            } while (!chunk.last);
            message = concat(parts);
          }
          if (!out.trySend(message)) await out.send(message);
        } finally {
          if (reserved > 0) this.#allowance.give(reserved);
        }
        this.#events?.count?.("delivered", message.length);
      }
    } catch {
      // The pair in failed (its sender counts the drop) or the pair out did (closes the other).
    } finally {
      out.end();
      this.#bridges--;
    }
  }

  /** Whether data is on its way between workers here. */
  get busy(): boolean {
    return this.#bridges > 0 || this.#workers.busy;
  }

  /**
   * Leaves (after the server closed): a worker other than 0 says bye to worker 0; worker 0
   * waits for every bye (at most `DOOR_BYE_TIMEOUT_MS`), forwarding for them meanwhile, then
   * ends the siblings' pairs and leaves the cluster, freeing the process's names there last.
   * Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#door?.bye();
      await this.#doors?.othersGone(DOOR_BYE_TIMEOUT_MS);
      await this.#workers.close();
      this.#doors?.close();
      await this.#cluster?.close();
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * The key of a stream pair that asks worker 0 to forward to `node`: `|node|sender|dest`. A
 * relay name never holds `|`, so an ordinary key (`sender|dest`) never starts with one.
 */
export function forwardKey(node: string, key: string): string {
  return `|${node}|${key}`;
}

/** The node and key of a forwarding pair's key, or undefined for an ordinary key. */
export function parseForwardKey(key: string): { node: string; key: string } | undefined {
  if (!key.startsWith("|")) return undefined;
  const bar = key.indexOf("|", 1);
  if (bar < 0) return undefined;
  return { node: key.slice(1, bar), key: key.slice(bar + 1) };
}
