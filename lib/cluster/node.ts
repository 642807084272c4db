/**
 * One relay node's membership in a cluster, put together: a NATS connection, the node's lease,
 * its name claims, the node transport and the stream layer. Fencing closes every pair with
 * `cluster_unavailable` and forgets the claims, then tells the relay (which closes its
 * clients). `ClusterMesh` (mesh.ts) holds one and gives it to the relay server.
 *
 * ```
 * start   connect → lease (put) → claims bucket → directory (watch) → subscribe → streams
 * claim   claims.claim(name)                (the relay's registry asks before accepting a name)
 * route   directory.resolve(name) → streams.open(holder.node, key).send(frame)
 * peers   every renewal interval: a peer with open pairs and no live lease → closeNode(peer)
 * fenced  streams.closeAll("cluster_unavailable"), claims.forgetAll(), onFenced(reason)
 * close   streams.close → claims.close (release all) → lease.close (delete) → transport, NATS
 * ```
 * @module
 */

import { connect, type ConnectionOptions, type NatsConnection } from "@nats-io/transport-node";
import { NameClaims } from "./claims.ts";
import { type DirectoryChange, NameDirectory } from "./directory.ts";
import { NodeLease } from "./lease.ts";
import { LEASE_RENEW_MS } from "./limits.ts";
import { NatsTransport } from "./nats_transport.ts";
import type { PairReceiver } from "./pair_receiver.ts";
import type { FenceReason } from "./reasons.ts";
import { ClusterStreams } from "./streams.ts";
import { guardNatsSocketResets } from "./socket_guard.ts";

/** Options of {@linkcode ClusterNode.start}. */
export interface ClusterNodeOptions {
  /** NATS server URLs (`nats://host:port`). */
  servers: string[];
  /** This node's name (letters, digits, `-`, `_`). */
  node: string;
  /**
   * Replicas of the KV buckets when this node creates them (3 on a 3-server NATS cluster).
   * @default 1
   */
  replicas?: number;
  /** Lease time (see `LEASE_TTL_MS`); every node of a cluster must use the same. */
  leaseMs?: number;
  /** Renewal interval (see `LEASE_RENEW_MS`). */
  renewMs?: number;
  /** Credit window per pair (see `PAIR_WINDOW_BYTES`); every node must use the same. */
  windowBytes?: number;
  /** Called with each pair another node opens to this one. */
  onPair?: (receiver: PairReceiver) => void;
  /** Called once when the node is fenced: close every client with `cluster_unavailable`. */
  onFenced?: (reason: FenceReason) => void;
  /** Extra nats.js connection options (credentials, TLS). */
  connection?: Partial<ConnectionOptions>;
  /** Called for every claim and release the directory sees (names on every node). */
  onNameChange?: DirectoryChange;
}

/** A relay node's cluster membership. */
export class ClusterNode implements AsyncDisposable {
  /** The NATS connection. */
  readonly nc: NatsConnection;
  /** The node's lease. */
  readonly lease: NodeLease;
  /** The node's name claims. */
  readonly claims: NameClaims;
  /** Every name in the cluster and its node, from a watch (routing, `who`). */
  readonly directory: NameDirectory;
  /** The node transport on NATS. */
  readonly transport: NatsTransport;
  /** The stream layer. */
  readonly streams: ClusterStreams;
  #closed = false;
  #peerTimer: ReturnType<typeof setInterval> | undefined;
  #checking = false;

  private constructor(
    nc: NatsConnection,
    lease: NodeLease,
    claims: NameClaims,
    directory: NameDirectory,
    transport: NatsTransport,
    streams: ClusterStreams,
    peerCheckMs: number,
  ) {
    this.nc = nc;
    this.lease = lease;
    this.claims = claims;
    this.directory = directory;
    this.transport = transport;
    this.streams = streams;
    this.#peerTimer = setInterval(() => this.#checkPeers(), peerCheckMs);
  }

  /**
   * Ends the pairs of peers whose lease is gone or carries another epoch (the peer died or
   * restarted): NATS 2.9 sends no expiry events, so the leases of the peers with open pairs are
   * read once per interval.
   */
  async #checkPeers(): Promise<void> {
    if (this.#checking || !this.lease.live) return;
    this.#checking = true;
    try {
      for (const [peer, epoch] of this.streams.peers()) {
        let entry;
        try {
          entry = await this.lease.kv.get(peer);
        } catch {
          return; // KV unreachable: fencing handles it
        }
        let liveEpoch: number | undefined;
        try {
          if (entry?.operation === "PUT") liveEpoch = entry.json<{ epoch: number }>().epoch;
        } catch { /* malformed: not live */ }
        if (liveEpoch === undefined || (epoch !== undefined && liveEpoch !== epoch)) {
          this.streams.closeNode(peer, "peer_gone");
        }
      }
    } finally {
      this.#checking = false;
    }
  }

  /**
   * Connects, takes the lease and starts receiving.
   * @example
   * ```ts ignore
   * await using node = await ClusterNode.start({
   *   servers: ["nats://127.0.0.1:4222"],
   *   node: "eu-1",
   *   onPair: (pair) => deliverToLocalClient(pair),
   *   onFenced: (reason) => relay.closeAll(reason),
   * });
   * if ((await node.claims.claim("bob")).ok) acceptClient();
   * ```
   */
  static async start(options: ClusterNodeOptions): Promise<ClusterNode> {
    guardNatsSocketResets(); // a refused connection's late reset would end the thread
    const nc = await connect({
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      ...options.connection,
      servers: options.servers,
      name: options.node,
    });
    const holder: { node?: ClusterNode } = {};
    let lease: NodeLease | undefined;
    let transport: NatsTransport | undefined;
    let directory: NameDirectory | undefined;
    try {
      lease = await NodeLease.start(nc, {
        node: options.node,
        leaseMs: options.leaseMs,
        renewMs: options.renewMs,
        replicas: options.replicas,
        onFenced: (reason) => {
          if (holder.node) holder.node.#fence(reason, options.onFenced);
          else options.onFenced?.(reason);
        },
      });
      const claims = await NameClaims.open(nc, lease, { replicas: options.replicas });
      directory = await NameDirectory.open(claims.kv, options.onNameChange);
      transport = await NatsTransport.open(nc, { node: options.node });
      const streams = new ClusterStreams(transport, {
        epoch: lease.epoch,
        windowBytes: options.windowBytes,
        onPair: options.onPair,
      });
      const peerCheckMs = options.renewMs ?? LEASE_RENEW_MS;
      return holder.node = new ClusterNode(
        nc,
        lease,
        claims,
        directory,
        transport,
        streams,
        peerCheckMs,
      );
    } catch (error) {
      await directory?.close();
      await transport?.close();
      await lease?.close();
      await nc.close();
      throw error;
    }
  }

  #fence(reason: FenceReason, onFenced?: (reason: FenceReason) => void): void {
    clearInterval(this.#peerTimer);
    this.streams.closeAll("cluster_unavailable");
    this.claims.forgetAll();
    onFenced?.(reason);
  }

  /** Leaves the cluster: ends pairs, releases names, deletes the lease; safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#peerTimer);
    await this.streams.close();
    await this.directory.close();
    await this.claims.close();
    await this.lease.close();
    await this.transport.close();
    if (!this.nc.isClosed()) await this.nc.close();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
