/**
 * The cluster door of a multi-threaded relay node (`relay serve --cluster … --threads N`):
 * worker 0 is the process's one member of the cluster (one NATS connection, one lease, one
 * set of claims under the process's node name); every other worker reaches the cluster's
 * claims and names through it, over a MessagePort of its own.
 *
 * ```
 * worker i                                  worker 0 (ClusterMesh, node <node>)
 * hello                        ──────────▶  snapshot {names on other nodes}, then every
 *                              ◀──────────  changed {name, node|null} as the cluster tells it
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

/** Messages from a worker to worker 0. */
export type ToDoor =
  | { door: "hello" }
  | { door: "claim"; id: number; name: string }
  | { door: "release"; name: string }
  | { door: "bye" };

/** Messages from worker 0 to a worker. */
export type FromDoor =
  | { door: "snapshot"; names: [name: string, node: string][] }
  | { door: "claimed"; id: number; result: MeshClaim }
  | { door: "changed"; name: string; node: string | null }
  | { door: "fenced"; reason: "cluster_unavailable" | "lease_lost" };

/** What a {@linkcode DoorClient} tells its worker. */
export interface DoorEvents {
  /** A name held on another node came or went (`node` null: gone). */
  changed(name: string, node: string | null): void;
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
 */
export class DoorServer {
  readonly #cluster: ClusterMesh;
  readonly #ports: MessagePort[] = [];
  /** The worker each name claimed (or being claimed) in the cluster is for. */
  readonly #owners = new Map<string, number>();
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
    for (const [index, port] of Object.entries(asked)) {
      this.#staying.add(Number(index));
      port.onmessage = (event: MessageEvent<{ door?: MessagePort }>) => {
        const door = event.data?.door;
        if (door instanceof MessagePort) this.#serve(Number(index), door);
      };
    }
  }

  /** Claims `name` in the cluster for worker `worker` (which holds it in the name table). */
  async claim(worker: number, name: string): Promise<MeshClaim> {
    if (this.#closed) return UNAVAILABLE;
    const owner = this.#owners.get(name);
    if (owner !== undefined && owner !== worker) {
      if (!this.#cluster.live) return UNAVAILABLE;
      // Handed over inside the process: the table says `owner` let go of it.
      if (this.#cluster.current?.claims.held.has(name)) {
        this.#owners.set(name, worker);
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
    return result;
  }

  /** Frees `name` in the cluster, if worker `worker` is the one it is claimed for. */
  release(worker: number, name: string): void {
    if (this.#owners.get(name) !== worker) return;
    this.#owners.delete(name);
    this.#cluster.release(name);
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
          post({ door: "snapshot", names: [...this.#cluster.remoteNames()] });
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
   * Resolves once every other worker said bye (its server closed), or after `timeoutMs` (a
   * worker that died says nothing).
   */
  async othersGone(timeoutMs: number): Promise<void> {
    if (this.#staying.size === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#allGone.promise,
      new Promise<void>((resolve) => timer = setTimeout(resolve, timeoutMs)),
    ]);
    clearTimeout(timer);
  }

  /** Tells every worker that a name elsewhere came or went. */
  changed(name: string, node: string | null): void {
    this.#broadcast({ door: "changed", name, node });
  }

  /** Tells every worker that the node lost the cluster (its claims are forgotten). */
  fenced(reason: "cluster_unavailable" | "lease_lost"): void {
    this.#owners.clear();
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
  /** Names on other nodes, as worker 0 told them. */
  readonly #remote = new Map<string, string>();
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
    this.#events?.changed(name, node);
  }

  /** Sets who gets name changes and fencing. */
  listen(events: DoorEvents): void {
    this.#events = events;
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
