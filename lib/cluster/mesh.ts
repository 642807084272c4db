/**
 * The relay's {@linkcode Mesh} on a NATS cluster: a {@linkcode ClusterNode} (lease, claims,
 * directory, streams) behind the seam the relay server knows (lib/relay/mesh.ts). This is what
 * `relay serve --cluster` hands the server.
 *
 * ```
 * start    ClusterNode.start → directory loaded → lease watch (which nodes are alive)
 * claim    claims.claim(name)             → ok | name_taken | cluster_unavailable
 * holder   names of live other nodes, from memory (directory watch + lease watch)
 * open     streams.open(node, key)
 * fenced   every pair closed, clients closed by the server; then it rejoins: a new node
 *          (new epoch) is started every REJOIN_RETRY_MS until one is up
 * close    node.close(): pairs end, names released, lease deleted
 * ```
 *
 * Names of a node that died stay in the claims bucket until taken over (NATS 2.9 sends no
 * expiry events), so the mesh also watches the lease bucket: a node whose lease was not seen
 * renewed for the lease time (or that came back with a new epoch) is dead, and its names are
 * neither routed to nor listed. "For the lease time" is measured on the watch's own clock:
 * from the peer's last renewal seen to this node's own last renewal seen. A watch that went
 * silent (its consumer died with a NATS server, or JetStream is electing a leader and nobody
 * can renew) therefore ages no peer out: it knows nothing new about anyone.
 *
 * Both watches are restarted when the NATS connection reconnects (to another server, after
 * its server died: the watches' consumers may be gone without a word), and whenever this
 * node's own lease renewals stop showing in the lease watch for `WATCH_STALL_RENEWALS`
 * renewal intervals while the lease is live.
 * @module
 */

import type { KvWatchEntry } from "@nats-io/kv";
import type { QueuedIterator } from "@nats-io/transport-node";
import type { Mesh, MeshClaim, MeshEvents } from "../relay/mesh.ts";
import type { ClaimHolder } from "./claims.ts";
import { ClusterNode, type ClusterNodeOptions } from "./node.ts";
import type { PairSender } from "./pair_sender.ts";
import { LEASE_RENEW_MS, LEASE_TTL_MS, REJOIN_RETRY_MS } from "../limits.ts";
import type { FenceReason } from "./reasons.ts";

/** Options of {@linkcode ClusterMesh.start}. */
export interface ClusterMeshOptions
  extends Omit<ClusterNodeOptions, "onPair" | "onFenced" | "onNameChange"> {
  /**
   * After fencing, a new node is started this often until one is up.
   * @default {REJOIN_RETRY_MS}
   */
  rejoinMs?: number;
  /** Called when the node joins (at start and after each rejoin), for the log. */
  onJoined?: (node: ClusterNode) => void;
  /** Called when a rejoin attempt fails, for the log. */
  onRejoinFailed?: (error: unknown) => void;
}

/** Renewal intervals without this node's own renewal in the lease watch: the watch is stale. */
const WATCH_STALL_RENEWALS = 3;

/** A node's view of another: its lease epoch and when its lease was last seen renewed. */
interface Peer {
  epoch: number;
  seenAt: number;
}

/** The relay's mesh on NATS. */
export class ClusterMesh implements Mesh {
  /** This node's name. */
  readonly node: string;
  readonly #options: ClusterMeshOptions;
  #current: ClusterNode | undefined;
  #live = false;
  #events: MeshEvents | undefined;
  #generation = 0;
  #closed = false;
  /** Every name on another node and its holder, as the directory shows it. */
  readonly #claims = new Map<string, ClaimHolder>();
  /** Names on live other nodes: what `holder` and `remoteNames` answer. */
  readonly #remote = new Map<string, string>();
  readonly #peers = new Map<string, Peer>();
  #leaseWatch: QueuedIterator<KvWatchEntry> | undefined;
  #sweep: ReturnType<typeof setInterval> | undefined;
  #rejoining: Promise<void> | undefined;
  /** When this node's own lease renewal last showed in the lease watch. */
  #ownSeenAt = 0;
  /** When the lease watch was last (re)started: the stall check's grace period. */
  #watchStartedAt = 0;
  #restarting: Promise<void> | undefined;

  private constructor(options: ClusterMeshOptions) {
    this.node = options.node;
    this.#options = options;
  }

  /**
   * Joins the cluster.
   * @example
   * ```ts ignore
   * await using mesh = await ClusterMesh.start({ servers: ["nats://127.0.0.1:4222"], node: "a" });
   * await using server = await RelayServer.listen({ port: 0, mesh });
   * ```
   */
  static async start(options: ClusterMeshOptions): Promise<ClusterMesh> {
    const mesh = new ClusterMesh(options);
    await mesh.#join();
    mesh.#sweep = setInterval(() => mesh.#sweepPeers(), options.renewMs ?? LEASE_RENEW_MS);
    return mesh;
  }

  /** The cluster node now (replaced after a rejoin); undefined while rejoining. */
  get current(): ClusterNode | undefined {
    return this.#live ? this.#current : undefined;
  }

  /** Whether the node is in the cluster now (not fenced). */
  get live(): boolean {
    return this.#live && this.#current!.lease.live;
  }

  async #join(): Promise<void> {
    const started = await ClusterNode.start({
      ...this.#options,
      onPair: (receiver) => {
        if (this.#events) this.#events.pair(receiver);
        else receiver.close("receiver_closed");
      },
      onFenced: (reason) => this.#fenced(started, reason),
      onNameChange: (name, holder) => this.#nameChanged(name, holder),
    });
    const node: ClusterNode = started;
    if (this.#closed) {
      await node.close();
      return;
    }
    try {
      await node.directory.ready;
      await this.#watchLeases(node);
    } catch (error) {
      await node.close();
      throw error;
    }
    this.#current = node;
    this.#live = true;
    this.#generation++;
    this.#followStatus(node);
    this.#options.onJoined?.(node);
  }

  /** Restarts the watches after the connection reconnected (possibly to another server). */
  async #followStatus(node: ClusterNode): Promise<void> {
    try {
      for await (const status of node.nc.status()) {
        if (this.#closed || node !== this.#current) return;
        if (status.type === "reconnect") this.#restartWatches(node);
      }
    } catch {
      // The connection closed.
    }
  }

  /** Watches leases and names again from fresh snapshots; one restart at a time. */
  #restartWatches(node: ClusterNode): void {
    this.#restarting ??= (async () => {
      try {
        if (!this.#live || node !== this.#current) return;
        this.#watchStartedAt = performance.now(); // a grace period for the new watch
        this.#leaseWatch?.stop();
        await this.#watchLeases(node);
        await node.directory.restart();
      } catch {
        // NATS is away again: the next reconnect or stall check retries.
      } finally {
        this.#restarting = undefined;
      }
    })();
  }

  /** Follows the lease bucket: who is alive, with which epoch. */
  async #watchLeases(node: ClusterNode): Promise<void> {
    const watch = await node.lease.kv.watch();
    this.#leaseWatch = watch;
    this.#watchStartedAt = performance.now();
    (async () => {
      try {
        for await (const entry of watch) {
          if (entry.key === this.node) {
            this.#ownSeenAt = performance.now();
            continue;
          }
          if (entry.operation !== "PUT") {
            this.#peers.delete(entry.key);
          } else {
            try {
              const epoch = entry.json<{ epoch: number }>().epoch;
              const known = this.#peers.get(entry.key);
              if (known && known.epoch === epoch) known.seenAt = performance.now();
              else this.#peers.set(entry.key, { epoch, seenAt: performance.now() });
            } catch {
              this.#peers.delete(entry.key);
            }
          }
          this.#recompute();
        }
      } catch {
        // The watch ended with the connection.
      }
    })();
  }

  #nameChanged(name: string, holder: ClaimHolder | null): void {
    if (holder === null || holder.node === this.node) this.#claims.delete(name);
    else this.#claims.set(name, holder);
    this.#update(name);
  }

  /** The holder `name` should have in `#remote` now; emits a change when it moved. */
  #update(name: string): void {
    const claim = this.#claims.get(name);
    const peer = claim && this.#peers.get(claim.node);
    const alive = claim !== undefined && peer !== undefined && peer.epoch === claim.epoch &&
      this.#peerAlive(peer.seenAt);
    const was = this.#remote.get(name);
    const now = alive ? claim.node : undefined;
    if (was === now) return;
    if (now === undefined) this.#remote.delete(name);
    else this.#remote.set(name, now);
    this.#generation++;
    this.#events?.changed(name, now ?? null);
  }

  #recompute(): void {
    for (const name of this.#claims.keys()) this.#update(name);
    for (const name of [...this.#remote.keys()]) if (!this.#claims.has(name)) this.#update(name);
  }

  /**
   * Whether a peer last seen renewing at `seenAt` is alive: this node's own renewals have not
   * shown for a lease time past it (see the module documentation).
   */
  #peerAlive(seenAt: number): boolean {
    return this.#ownSeenAt - seenAt < (this.#options.leaseMs ?? LEASE_TTL_MS);
  }

  /** Runs every renewal interval: peers whose lease aged out take their names with them. */
  #sweepPeers(): void {
    const now = performance.now();
    const renewMs = this.#options.renewMs ?? LEASE_RENEW_MS;
    const node = this.#current;
    // Our own renewals stopped showing while the lease is live: the watch is stale.
    if (
      node !== undefined && this.live &&
      now - Math.max(this.#ownSeenAt, this.#watchStartedAt) > WATCH_STALL_RENEWALS * renewMs
    ) {
      this.#restartWatches(node);
    }
    let changed = false;
    for (const [node, peer] of this.#peers) {
      if (!this.#peerAlive(peer.seenAt)) {
        this.#peers.delete(node);
        changed = true;
      }
    }
    if (changed) this.#recompute();
  }

  #fenced(node: ClusterNode, reason: FenceReason): void {
    if (node !== this.#current || !this.#live) return;
    this.#live = false;
    this.#generation++;
    this.#leaseWatch?.stop();
    // Names elsewhere are not routed while fenced (pairs are closed anyway).
    for (const name of [...this.#remote.keys()]) {
      this.#remote.delete(name);
      this.#events?.changed(name, null);
    }
    this.#claims.clear();
    this.#peers.clear();
    this.#events?.fenced(reason);
    this.#rejoining ??= this.#rejoin(node).finally(() => this.#rejoining = undefined);
  }

  async #rejoin(fenced: ClusterNode): Promise<void> {
    // The fenced node forgot its claims; closing it deletes its lease (if NATS answers).
    await Promise.race([fenced.close().catch(() => {}), sleepFor(2_000)]);
    const every = this.#options.rejoinMs ?? REJOIN_RETRY_MS;
    while (!this.#closed) {
      try {
        await this.#join();
        return;
      } catch (error) {
        this.#options.onRejoinFailed?.(error);
        await sleepFor(every);
      }
    }
  }

  /** {@linkcode Mesh.generation}. */
  get generation(): number {
    return this.#generation;
  }

  /** {@linkcode Mesh.claim}. */
  async claim(name: string): Promise<MeshClaim> {
    const node = this.current;
    if (node === undefined) return { ok: false, reason: "cluster_unavailable" };
    const claim = await node.claims.claim(name);
    if (claim.ok) return { ok: true };
    if (claim.reason === "name_taken") {
      // A claim by a node that is gone is taken over inside claims.claim; one that stays is live.
      return { ok: false, reason: "name_taken" };
    }
    return { ok: false, reason: "cluster_unavailable" };
  }

  /** {@linkcode Mesh.release}. */
  release(name: string): void {
    const node = this.#current;
    if (node === undefined) return;
    node.claims.release(name).catch(() => {}); // retried inside until done or fenced
  }

  /** {@linkcode Mesh.holder}. */
  holder(name: string): string | undefined {
    return this.#live ? this.#remote.get(name) : undefined;
  }

  /** {@linkcode Mesh.open}. */
  open(node: string, key: string): PairSender {
    return this.#current!.streams.open(node, key);
  }

  /** {@linkcode Mesh.remoteNames}. */
  remoteNames(): Iterable<[name: string, node: string]> {
    return this.#remote.entries();
  }

  /** The other nodes seen alive now, with their names held. */
  nodes(): Map<string, number> {
    const nodes = new Map<string, number>();
    for (const node of this.#peers.keys()) nodes.set(node, 0);
    for (const node of this.#remote.values()) nodes.set(node, (nodes.get(node) ?? 0) + 1);
    return nodes;
  }

  /** {@linkcode Mesh.listen}. */
  listen(events: MeshEvents): void {
    this.#events = events;
  }

  /** {@linkcode Mesh.close}. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    this.#leaseWatch?.stop();
    await this.#restarting;
    await this.#rejoining;
    await this.#current?.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function sleepFor(ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    Deno.unrefTimer(timer);
  });
}
