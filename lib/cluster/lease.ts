/**
 * A node's lease in JetStream KV. NATS 2.9 has no per-key TTL, so leases live in a bucket
 * whose `max_age` is the lease time: the node renews its key with a compare-and-swap
 * `update(revision)` well before it ages out. Name claims point at (node, epoch); a claim
 * whose node has no live lease with that epoch is stale and may be taken over.
 *
 * ```
 * start   put   leases/<node> = {epoch}      (overwrites a dead incarnation: its claims go stale)
 * every 2 s  update(leases/<node>, revision)  (CAS: fails if someone else wrote the key)
 * lease − margin after the last renewal sent, with no success: fenced("cluster_unavailable")
 * CAS failure: read the key; our epoch (a renewal whose reply was lost) → adopt its revision;
 *   another epoch → fenced("lease_lost"); gone (expired) → fenced("cluster_unavailable")
 * close   delete(leases/<node>, previousSeq)  (names of a cleanly stopped node are free at once)
 * ```
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import { type KV, Kvm } from "@nats-io/kv";
import { FENCE_MARGIN_MS, KV_REQUEST_TIMEOUT_MS, LEASE_RENEW_MS, LEASE_TTL_MS } from "./limits.ts";
import type { FenceReason } from "./reasons.ts";
import { checkNodeName } from "./transport.ts";
import { isWrongRevision } from "./kv_errors.ts";

/** Pause before retrying a renewal that failed for want of an answer. */
const RETRY_MS = 100;

/** Bucket of node leases by default. */
export const DEFAULT_LEASE_BUCKET = "relay_leases";

/** Options of {@linkcode NodeLease.start}. */
export interface NodeLeaseOptions {
  /** This node's name. */
  node: string;
  /**
   * This incarnation's number; claims carry it.
   * @default a random 32-bit number
   */
  epoch?: number;
  /**
   * Lease time: the bucket's `max_age`. Every node of a cluster must use the same.
   * @default LEASE_TTL_MS
   */
  leaseMs?: number;
  /**
   * Time between renewals.
   * @default LEASE_RENEW_MS
   */
  renewMs?: number;
  /**
   * Fence this long before the lease could expire.
   * @default FENCE_MARGIN_MS
   */
  fenceMarginMs?: number;
  /**
   * Timeout of one KV request.
   * @default KV_REQUEST_TIMEOUT_MS
   */
  requestTimeoutMs?: number;
  /**
   * KV bucket of leases.
   * @default DEFAULT_LEASE_BUCKET
   */
  bucket?: string;
  /**
   * Replicas of the bucket when this node creates it (3 on a 3-server NATS cluster).
   * @default 1
   */
  replicas?: number;
  /** Called once when the node is fenced. */
  onFenced?: (reason: FenceReason) => void;
}

/** What a lease key holds. */
export interface LeaseValue {
  epoch: number;
}

const encoder = new TextEncoder();

/** This node's lease: renewed in the background until it is closed or fenced. */
export class NodeLease implements AsyncDisposable {
  /** This node's name. */
  readonly node: string;
  /** This incarnation's number. */
  readonly epoch: number;
  /** The lease bucket (claims read other nodes' leases from it). */
  readonly kv: KV;
  readonly #leaseMs: number;
  readonly #renewMs: number;
  readonly #marginMs: number;
  readonly #timeoutMs: number;
  readonly #onFenced: ((reason: FenceReason) => void) | undefined;
  readonly #value: Uint8Array;
  #revision: number;
  #renewTimer: ReturnType<typeof setTimeout> | undefined;
  #fenceTimer: ReturnType<typeof setTimeout> | undefined;
  #fenced: FenceReason | undefined;
  /** When the node fences itself unless a renewal succeeds first (ms since the epoch). */
  #fenceAt = 0;
  #closed = false;
  #renewing: Promise<void> | undefined;
  readonly #fencedPromise: Promise<FenceReason>;
  #resolveFenced!: (reason: FenceReason) => void;
  /** Renewals that succeeded (for tests and metrics). */
  renewals = 0;

  private constructor(kv: KV, node: string, epoch: number, revision: number, sentAt: number, o: {
    leaseMs: number;
    renewMs: number;
    marginMs: number;
    timeoutMs: number;
    onFenced?: (reason: FenceReason) => void;
  }) {
    this.kv = kv;
    this.node = node;
    this.epoch = epoch;
    this.#revision = revision;
    this.#leaseMs = o.leaseMs;
    this.#renewMs = o.renewMs;
    this.#marginMs = o.marginMs;
    this.#timeoutMs = o.timeoutMs;
    this.#onFenced = o.onFenced;
    this.#value = encoder.encode(JSON.stringify({ epoch } satisfies LeaseValue));
    this.#fencedPromise = new Promise((resolve) => this.#resolveFenced = resolve);
    this.#armFence(sentAt);
    this.#scheduleRenew(this.#renewMs);
  }

  /**
   * Creates the bucket if needed and takes this node's lease.
   * @example
   * ```ts ignore
   * await using lease = await NodeLease.start(nc, {
   *   node: "a",
   *   onFenced: (reason) => relay.closeAllClients(reason),
   * });
   * ```
   */
  static async start(nc: NatsConnection, options: NodeLeaseOptions): Promise<NodeLease> {
    const node = checkNodeName(options.node);
    const leaseMs = options.leaseMs ?? LEASE_TTL_MS;
    const renewMs = options.renewMs ?? LEASE_RENEW_MS;
    const marginMs = options.fenceMarginMs ?? FENCE_MARGIN_MS;
    if (renewMs * 2 > leaseMs - marginMs) {
      throw new RangeError("The lease must allow at least two renewals before fencing");
    }
    const timeoutMs = options.requestTimeoutMs ?? KV_REQUEST_TIMEOUT_MS;
    const kv = await new Kvm(nc).create(options.bucket ?? DEFAULT_LEASE_BUCKET, {
      ttl: leaseMs,
      history: 1,
      replicas: options.replicas ?? 1,
      timeout: timeoutMs,
    });
    const epoch = options.epoch ?? crypto.getRandomValues(new Uint32Array(1))[0];
    const sentAt = Date.now();
    const revision = await kv.put(node, JSON.stringify({ epoch } satisfies LeaseValue));
    return new NodeLease(kv, node, epoch, revision, sentAt, {
      leaseMs,
      renewMs,
      marginMs,
      timeoutMs,
      onFenced: options.onFenced,
    });
  }

  /** Why the node is fenced, or undefined while its lease holds. */
  get fencedReason(): FenceReason | undefined {
    return this.#fenced;
  }

  /** Resolves with the reason once the node is fenced (never, if it is closed first). */
  get fenced(): Promise<FenceReason> {
    return this.#fencedPromise;
  }

  /** Whether the lease is held: not fenced and not closed. */
  get live(): boolean {
    if (this.#fenced !== undefined || this.#closed) return false;
    // The clock, not only the timer: a blocked event loop may run other callbacks before an
    // overdue fence timer, and nothing may be claimed past the deadline.
    if (Date.now() >= this.#fenceAt) {
      this.#fence("cluster_unavailable");
      return false;
    }
    return true;
  }

  #armFence(sentAt: number): void {
    clearTimeout(this.#fenceTimer);
    this.#fenceAt = sentAt + this.#leaseMs - this.#marginMs;
    const wait = Math.max(0, this.#fenceAt - Date.now());
    this.#fenceTimer = setTimeout(() => this.#fence("cluster_unavailable"), wait);
  }

  #scheduleRenew(ms: number): void {
    if (!this.live) return;
    this.#renewTimer = setTimeout(() => {
      this.#renewing = this.#renew();
    }, ms);
  }

  async #renew(): Promise<void> {
    const sentAt = Date.now();
    try {
      this.#revision = await this.kv.update(
        this.node,
        this.#value,
        this.#revision,
        this.#timeoutMs,
      );
      if (!this.live) return;
      this.renewals++;
      this.#armFence(sentAt);
      this.#scheduleRenew(this.#renewMs);
    } catch (error) {
      if (!this.live) return;
      if (isWrongRevision(error)) return await this.#recover();
      // NATS or JetStream unreachable: keep trying until the fence timer fires.
      this.#scheduleRenew(Math.min(this.#renewMs, RETRY_MS));
    }
  }

  /**
   * The lease is not at the revision this node last saw. Either an earlier renewal did land
   * but its reply was lost (a timeout during a leader election): the key still holds this
   * epoch, so adopt its revision and renew from there; or the key is gone (the lease expired:
   * others may hold this node's names now) or holds another epoch (another process took the
   * node name): fence.
   */
  async #recover(): Promise<void> {
    let entry;
    try {
      entry = await this.kv.get(this.node);
    } catch {
      if (this.live) this.#scheduleRenew(RETRY_MS);
      return;
    }
    if (!this.live) return;
    let epoch: number | undefined;
    try {
      if (entry?.operation === "PUT") epoch = entry.json<LeaseValue>().epoch;
    } catch { /* not a lease value */ }
    if (epoch === undefined) return this.#fence("cluster_unavailable");
    if (epoch !== this.epoch) return this.#fence("lease_lost");
    this.#revision = entry!.revision;
    this.#scheduleRenew(0);
  }

  #fence(reason: FenceReason): void {
    if (this.#fenced !== undefined || this.#closed) return;
    this.#fenced = reason;
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#fenceTimer);
    this.#onFenced?.(reason);
    this.#resolveFenced(reason);
  }

  /** Stops renewing and deletes the lease (its names are free at once); safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    const wasLive = this.live;
    this.#closed = true;
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#fenceTimer);
    await this.#renewing;
    if (!wasLive) return;
    try {
      await this.kv.delete(this.node, { previousSeq: this.#revision });
    } catch {
      // Best effort: the lease ages out by itself.
    }
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
