/**
 * The cluster door of a multi-threaded relay node (`relay serve --cluster … --threads N`):
 * worker 0 is the process's one member of the cluster (one NATS connection, one lease, one
 * set of claims under the process's node name); every other worker reaches the cluster's
 * claims and names through it, over a MessagePort of its own.
 *
 * ```
 * worker i                                  worker 0 (ClusterMesh, node <node>)
 * hello                        ──────────▶  snapshot {names on other nodes, names online},
 *                              ◀──────────  then every changed {name, node|null} (routing) and
 *                                           presence {name, holder} (worker, node, or null)
 * claim {id, name}             ──────────▶  cluster.claim(name) (KV, as <node>)
 *                              ◀──────────  claimed {id, result}
 * release {name}               ──────────▶  cluster.release(name)
 *                              ◀──────────  fenced {reason}   (the lease is gone: close clients)
 * bye (its server has closed)  ──────────▶  worker 0 leaves the cluster once every worker said
 *                                           it (or after a deadline), so no name of a worker
 *                                           still closing is freed in the cluster under it
 * ```
 *
 * Data does not go through here: lib/threads/cluster_mesh.ts opens pairs (a stream pair to
 * worker 0, forwarded onto NATS there). The port is made by worker i and handed to worker 0
 * over the port worker 0 asks it for counters on (`StartMessage.gather`), which worker 0
 * never listens on otherwise.
 * @module
 */

import type { MeshClaim } from "../relay/mesh.ts";
import type { ClusterMesh } from "../cluster/mesh.ts";
import { waitAtMost } from "../util/async.ts";

/** Messages from a worker to worker 0. */
export type ToDoor =
  | { door: "hello" }
  | { door: "claim"; id: number; name: string }
  | { door: "release"; name: string }
  | { door: "bye" };

/**
 * Who holds a name, for presence: a worker of this node (its index, once the cluster took its
 * claim), another node (its name), or nobody (null).
 */
export type PresenceHolder = number | string | null;

/** Messages from worker 0 to a worker. */
export type FromDoor =
  | {
    door: "snapshot";
    names: [name: string, node: string][];
    presence: [name: string, holder: number | string][];
  }
  | { door: "claimed"; id: number; result: MeshClaim }
  | { door: "changed"; name: string; node: string | null }
  | { door: "presence"; name: string; holder: PresenceHolder }
  | { door: "fenced"; reason: "cluster_unavailable" | "lease_lost" };

/** What a {@linkcode DoorClient} tells its worker. */
export interface DoorEvents {
  /** Who holds `name` now, for presence (see {@linkcode DoorServer}). */
  presence(name: string, holder: PresenceHolder): void;
  /** The node lost the cluster: close every client with `reason`. */
  fenced(reason: "cluster_unavailable" | "lease_lost"): void;
}

/**
 * Worker 0's side: makes every worker's claims with its {@linkcode ClusterMesh}, and tells
 * every worker the cluster's names and fencing.
 *
 * It remembers which worker each claim is for. The shared name table lets worker j take a
 * name the moment worker k let go of it, but their messages come on different ports: j's
 * claim can arrive before k's release. The node still holds the name in KV then, so j's claim
 * is a hand-over (ok, nothing asked of KV), and k's late release, no longer the holder's, is
 * ignored rather than deleting j's claim.
 *
 * It is also the node's one source of presence: a name is online on this node once the
 * cluster took a worker's claim (not when the name table did: a claim there is tentative until
 * then, and the name may be held on another node), and online elsewhere while the cluster shows
 * it on another node. Both kinds of change happen here, in one order, and go to every worker in
 * that order, so no worker tells a watcher that a name held elsewhere went offline because a
 * sibling tried it, nor tells one change twice.
 */
export class DoorServer {
  readonly #cluster: ClusterMesh;
  readonly #ports: MessagePort[] = [];
  /** The worker each name claimed (or being claimed) in the cluster is for. */
  readonly #owners = new Map<string, number>();
  /** Names whose cluster claim is in, and the worker each is for. */
  readonly #confirmed = new Map<string, number>();
  /** Who holds each name online, as told to every worker. */
  readonly #told = new Map<string, number | string>();
  /** Worker 0's own listener of presence. */
  #onPresence: ((name: string, holder: PresenceHolder) => void) | undefined;
  /** Workers not served their snapshot yet. */
  readonly #unopened = new Set<number>();
  readonly #allOpened = Promise.withResolvers<void>();
  /** Workers that have not said bye yet. */
  readonly #staying = new Set<number>();
  readonly #allGone = Promise.withResolvers<void>();
  #closed = false;

  /**
   * @param cluster worker 0's cluster mesh (joined)
   * @param asked the ports worker 0 asks the other workers for counters on, by worker index:
   *   each brings a door
   */
  constructor(cluster: ClusterMesh, asked: Record<number, MessagePort>) {
    this.#cluster = cluster;
    // The names on other nodes when worker 0 joined; changes come through `changed`.
    for (const [name] of cluster.remoteNames()) this.#recompute(name);
    for (const [index, port] of Object.entries(asked)) {
      this.#staying.add(Number(index));
      this.#unopened.add(Number(index));
      port.onmessage = (event: MessageEvent<{ door?: MessagePort }>) => {
        const door = event.data?.door;
        if (door instanceof MessagePort) this.#serve(Number(index), door);
      };
    }
  }

  /** Sets worker 0's own listener of presence; told every name online first. */
  listen(onPresence: (name: string, holder: PresenceHolder) => void): void {
    this.#onPresence = onPresence;
    for (const [name, holder] of this.#told) onPresence(name, holder);
  }

  /** Claims `name` in the cluster for worker `worker` (which holds it in the name table). */
  async claim(worker: number, name: string): Promise<MeshClaim> {
    if (this.#closed) return UNAVAILABLE;
    const owner = this.#owners.get(name);
    if (owner !== undefined && owner !== worker) {
      if (!this.#cluster.live) return UNAVAILABLE;
      // Handed over inside the process: the table says `owner` let go of it.
      if (this.#cluster.current?.claims.holds(name)) {
        this.#owners.set(name, worker);
        this.#confirmed.set(name, worker);
        this.#recompute(name);
        return { ok: true };
      }
      // `owner`'s claim is still on its way to KV: the name is not this worker's yet.
      return { ok: false, reason: "name_taken" };
    }
    this.#owners.set(name, worker);
    let result: MeshClaim;
    try {
      result = await this.#cluster.claim(name);
    } catch {
      result = UNAVAILABLE;
    }
    if (!result.ok && this.#owners.get(name) === worker) this.#owners.delete(name);
    // Released while KV was asked (the client left): the claim that came in is let go now.
    if (result.ok && !this.#owners.has(name)) this.#cluster.release(name);
    else if (result.ok && this.#owners.get(name) === worker) {
      this.#confirmed.set(name, worker);
      this.#recompute(name);
    }
    return result;
  }

  /** Frees `name` in the cluster, if worker `worker` is the one it is claimed for. */
  release(worker: number, name: string): void {
    if (this.#owners.get(name) !== worker) return;
    this.#owners.delete(name);
    this.#confirmed.delete(name);
    this.#cluster.release(name);
    this.#recompute(name);
  }

  /** Tells every worker who holds `name` now, if that changed. */
  #recompute(name: string): void {
    const holder = this.#confirmed.get(name) ?? this.#cluster.holder(name) ?? null;
    if (holder === (this.#told.get(name) ?? null)) return;
    if (holder === null) this.#told.delete(name);
    else this.#told.set(name, holder);
    this.#onPresence?.(name, holder);
    this.#broadcast({ door: "presence", name, holder });
  }

  #serve(worker: number, port: MessagePort): void {
    this.#ports.push(port);
    const post = (message: FromDoor) => {
      if (!this.#closed) port.postMessage(message);
    };
    port.onmessage = (event: MessageEvent<ToDoor>) => {
      const m = event.data;
      switch (m.door) {
        case "hello":
          post({
            door: "snapshot",
            names: [...this.#cluster.remoteNames()],
            presence: [...this.#told],
          });
          this.#unopened.delete(worker);
          if (this.#unopened.size === 0) this.#allOpened.resolve();
          return;
        case "claim":
          this.claim(worker, m.name).then((result) => post({ door: "claimed", id: m.id, result }));
          return;
        case "release":
          this.release(worker, m.name);
          return;
        case "bye":
          this.#staying.delete(worker);
          if (this.#staying.size === 0) this.#allGone.resolve();
          return;
      }
    };
  }

  /**
   * Resolves once every other worker has its snapshot (it goes on starting by itself from
   * then), or after `timeoutMs`. Worker 0 waits for this before it listens: its web side asks
   * the other workers for counters synchronously (blocking its thread), and a worker still
   * waiting at the door for worker 0 could not answer.
   */
  async othersOpened(timeoutMs: number): Promise<void> {
    if (this.#unopened.size === 0) return;
    await waitAtMost(this.#allOpened.promise, timeoutMs);
  }

  /**
   * Resolves once every other worker said bye (its server closed), or after `timeoutMs` (a
   * worker that died says nothing).
   */
  async othersGone(timeoutMs: number): Promise<void> {
    if (this.#staying.size === 0) return;
    await waitAtMost(this.#allGone.promise, timeoutMs);
  }

  /** Tells every worker that a name elsewhere came or went (for routing and presence). */
  changed(name: string, node: string | null): void {
    this.#broadcast({ door: "changed", name, node });
    this.#recompute(name);
  }

  /** Tells every worker that the node lost the cluster (its claims are forgotten). */
  fenced(reason: "cluster_unavailable" | "lease_lost"): void {
    this.#owners.clear();
    this.#confirmed.clear();
    for (const name of [...this.#told.keys()]) this.#recompute(name);
    this.#broadcast({ door: "fenced", reason });
  }

  #broadcast(message: FromDoor): void {
    if (this.#closed) return;
    for (const port of this.#ports) port.postMessage(message);
  }

  /** Stops serving (worker 0 is leaving). */
  close(): void {
    this.#closed = true;
    for (const port of this.#ports) port.close();
  }
}

const UNAVAILABLE: MeshClaim = { ok: false, reason: "cluster_unavailable" };

/** A worker's side of the door: the cluster's claims and names, through worker 0. */
export class DoorClient {
  readonly #port: MessagePort;
  readonly #claims = new Map<number, (result: MeshClaim) => void>();
  /** Names on other nodes, as worker 0 told them (routing). */
  readonly #remote = new Map<string, string>();
  /** Who holds each name online, as worker 0 told it (replayed to a listener when set). */
  readonly #presence = new Map<string, number | string>();
  #events: DoorEvents | undefined;
  #nextId = 1;
  #generation = 0;
  #closed = false;

  private constructor(port: MessagePort) {
    this.#port = port;
  }

  /**
   * Opens the door over `asked` (the port worker 0 asks this worker for counters on) and waits
   * for worker 0's snapshot of the names on other nodes: worker 0 sends it once it has joined
   * the cluster, so this worker listens only after that, like a single-threaded node.
   * @throws {Error} when worker 0 did not answer in `timeoutMs`
   */
  static async open(asked: MessagePort, timeoutMs: number): Promise<DoorClient> {
    const channel = new MessageChannel();
    const client = new DoorClient(channel.port1);
    const { promise, resolve } = Promise.withResolvers<boolean>();
    channel.port1.onmessage = (event: MessageEvent<FromDoor>) => {
      const m = event.data;
      if (m.door === "snapshot") {
        for (const [name, node] of m.names) client.#changed(name, node);
        for (const [name, holder] of m.presence) client.#presence.set(name, holder);
        channel.port1.onmessage = (event: MessageEvent<FromDoor>) => client.#receive(event.data);
        resolve(true);
      }
    };
    asked.postMessage({ door: channel.port2 }, [channel.port2]);
    client.#post({ door: "hello" });
    const timer = setTimeout(() => resolve(false), timeoutMs);
    const answered = await promise;
    clearTimeout(timer);
    if (!answered) {
      client.close();
      throw new Error(`Worker 0 did not open the cluster door in ${timeoutMs} ms`);
    }
    return client;
  }

  #post(message: ToDoor): void {
    if (!this.#closed) this.#port.postMessage(message);
  }

  #receive(m: FromDoor): void {
    switch (m.door) {
      case "claimed": {
        const resolve = this.#claims.get(m.id);
        this.#claims.delete(m.id);
        resolve?.(m.result);
        return;
      }
      case "changed":
        this.#changed(m.name, m.node);
        return;
      case "presence":
        if (m.holder === null) this.#presence.delete(m.name);
        else this.#presence.set(m.name, m.holder);
        this.#events?.presence(m.name, m.holder);
        return;
      case "fenced":
        this.#events?.fenced(m.reason);
        return;
    }
  }

  #changed(name: string, node: string | null): void {
    if ((this.#remote.get(name) ?? null) === node) return;
    if (node === null) this.#remote.delete(name);
    else this.#remote.set(name, node);
    this.#generation++;
  }

  /** Sets who gets presence and fencing; told the snapshot's presence first. */
  listen(events: DoorEvents): void {
    this.#events = events;
    for (const [name, holder] of this.#presence) events.presence(name, holder);
  }

  /** Claims `name` cluster-wide for this node, through worker 0. */
  claim(name: string): Promise<MeshClaim> {
    if (this.#closed) return Promise.resolve(UNAVAILABLE);
    const id = this.#nextId++;
    const { promise, resolve } = Promise.withResolvers<MeshClaim>();
    this.#claims.set(id, resolve);
    this.#post({ door: "claim", id, name });
    return promise;
  }

  /** Frees `name` cluster-wide, through worker 0. */
  release(name: string): void {
    this.#post({ door: "release", name });
  }

  /** The node holding `name`, if another node holds it. */
  holder(name: string): string | undefined {
    return this.#remote.get(name);
  }

  /** Moves on every change worker 0 told. */
  get generation(): number {
    return this.#generation;
  }

  /** Every name on other nodes, with its node. */
  remoteNames(): Iterable<[name: string, node: string]> {
    return this.#remote.entries();
  }

  /** Tells worker 0 this worker's server has closed, then stops (see {@linkcode close}). */
  bye(): void {
    this.#post({ door: "bye" });
    this.close();
  }

  /** Stops; claims still waiting are answered `cluster_unavailable`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#port.close();
    for (const resolve of this.#claims.values()) resolve(UNAVAILABLE);
    this.#claims.clear();
  }
}
