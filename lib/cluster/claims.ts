/**
 * Cluster-wide name claims in JetStream KV, pointing at the claiming node's lease. A claim is
 * an atomic `create()`; a release is a `delete()` with the claim's revision, so a node never
 * deletes a claim another node has taken over. A claim whose node has no live lease with the
 * claim's epoch is stale and is taken over with a compare-and-swap `update()`.
 *
 * ```
 * claim("bob")   create(names/<bob>, {node: a, epoch})   ok → held by a
 *                exists → get leases/<holder>: live with that epoch → name_taken
 *                                              gone or other epoch → update(rev) → held by a
 * release("bob") delete(names/<bob>, previousSeq: rev)   (a lost CAS means it was taken over)
 * ```
 * @module
 */

import type { NatsConnection } from "@nats-io/transport-node";
import { type KV, type KvEntry, Kvm } from "@nats-io/kv";
import { KV_REQUEST_TIMEOUT_MS } from "./limits.ts";
import { isWrongRevision } from "./kv_errors.ts";
import type { LeaseValue, NodeLease } from "./lease.ts";

/** Bucket of name claims by default. */
export const DEFAULT_NAMES_BUCKET = "relay_names";

/** Compare-and-swap rounds of one claim before it gives up as unavailable (heavy contention). */
const CLAIM_ATTEMPTS = 5;

/** A release that did not reach KV is retried after this long (until it does or the node fences). */
const RELEASE_RETRY_MS = 1_000;

/** Options of {@linkcode NameClaims.open}. */
export interface NameClaimsOptions {
  /**
   * KV bucket of claims.
   * @default DEFAULT_NAMES_BUCKET
   */
  bucket?: string;
  /**
   * Replicas of the bucket when this node creates it.
   * @default 1
   */
  replicas?: number;
  /**
   * Timeout of one KV request.
   * @default KV_REQUEST_TIMEOUT_MS
   */
  requestTimeoutMs?: number;
}

/** Who holds a name. */
export interface ClaimHolder {
  /** The holder's node name. */
  node: string;
  /** The holder's incarnation (its lease's epoch). */
  epoch: number;
}

/** The outcome of a claim. */
export type ClaimResult =
  | { ok: true; tookOver: boolean }
  | { ok: false; reason: "name_taken"; holder: ClaimHolder }
  | { ok: false; reason: "cluster_unavailable"; error?: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The KV key for a relay name: names are any UTF-8 up to 255 bytes, keys are
 * `[A-Za-z0-9_=-]`, so the name is base64url-encoded behind a prefix.
 */
export function claimKey(name: string): string {
  const bytes = encoder.encode(name);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return "n_" + btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

/** The relay name of a claim key (the inverse of {@linkcode claimKey}), or null if it is not one. */
export function nameOfKey(key: string): string | null {
  if (!key.startsWith("n_")) return null;
  try {
    const binary = atob(key.slice(2).replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}

/** Who a claim entry names as holder, or null when it is malformed (stale by definition). */
export function parseHolder(entry: KvEntry): ClaimHolder | null {
  try {
    const value = JSON.parse(decoder.decode(entry.value));
    if (typeof value?.node === "string" && Number.isInteger(value?.epoch)) {
      return { node: value.node, epoch: value.epoch };
    }
  } catch {
    // A malformed claim is stale by definition.
  }
  return null;
}

/** This node's claims on names, backed by its lease. */
export class NameClaims implements AsyncDisposable {
  /** The claims bucket. */
  readonly kv: KV;
  readonly #lease: NodeLease;
  readonly #value: Uint8Array;
  /** Names this node holds, with the revision of each claim. */
  readonly #held = new Map<string, number>();
  /** Names being claimed right now. */
  readonly #claiming = new Set<string>();
  /** Releases that did not reach KV, retried in the background: name → revision. */
  readonly #unreleased = new Map<string, number>();
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  private constructor(kv: KV, lease: NodeLease) {
    this.kv = kv;
    this.#lease = lease;
    this.#value = encoder.encode(
      JSON.stringify({ node: lease.node, epoch: lease.epoch } satisfies ClaimHolder),
    );
  }

  /**
   * Opens (creating if needed) the claims bucket for a node holding `lease`.
   * @example
   * ```ts ignore
   * const claims = await NameClaims.open(nc, lease);
   * const result = await claims.claim("bob");
   * if (!result.ok) refuse(result.reason);
   * ```
   */
  static async open(
    nc: NatsConnection,
    lease: NodeLease,
    options: NameClaimsOptions = {},
  ): Promise<NameClaims> {
    const kv = await new Kvm(nc).create(options.bucket ?? DEFAULT_NAMES_BUCKET, {
      history: 1,
      replicas: options.replicas ?? 1,
      timeout: options.requestTimeoutMs ?? KV_REQUEST_TIMEOUT_MS,
    });
    return new NameClaims(kv, lease);
  }

  /** Names this node holds. */
  get held(): ReadonlySet<string> {
    return new Set(this.#held.keys());
  }

  /** Whether this node holds `name` (without copying the set {@linkcode held} returns). */
  holds(name: string): boolean {
    return this.#held.has(name);
  }

  /**
   * Claims `name` cluster-wide for this node.
   * @returns ok (and whether a stale claim was taken over), `name_taken` with the holder, or
   *   `cluster_unavailable` when the node is fenced or the KV did not answer
   */
  async claim(name: string): Promise<ClaimResult> {
    if (!this.#lease.live) return { ok: false, reason: "cluster_unavailable" };
    if (this.#held.has(name)) {
      return {
        ok: false,
        reason: "name_taken",
        holder: { node: this.#lease.node, epoch: this.#lease.epoch },
      };
    }
    // Two local claims of one name at once: the second is refused without asking KV (the
    // first may win, and this node must not then "take over" its own fresh claim).
    if (this.#claiming.has(name)) {
      return {
        ok: false,
        reason: "name_taken",
        holder: { node: this.#lease.node, epoch: this.#lease.epoch },
      };
    }
    this.#claiming.add(name);
    try {
      return await this.#claim(name);
    } finally {
      this.#claiming.delete(name);
    }
  }

  async #claim(name: string): Promise<ClaimResult> {
    const key = claimKey(name);
    try {
      for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
        try {
          return this.#won(name, await this.kv.create(key, this.#value), false);
        } catch (error) {
          if (!isWrongRevision(error)) throw error;
        }
        const entry = await this.kv.get(key);
        if (!entry || entry.operation !== "PUT") continue; // released meanwhile: create again
        const holder = parseHolder(entry);
        // This node's own claim that it no longer holds (a release that did not reach KV) is
        // a leftover: taken over like a stale one.
        const own = holder?.node === this.#lease.node && holder.epoch === this.#lease.epoch;
        if (holder && !own && await this.#holderLive(holder)) {
          return { ok: false, reason: "name_taken", holder };
        }
        try {
          return this.#won(name, await this.kv.update(key, this.#value, entry.revision), true);
        } catch (error) {
          if (!isWrongRevision(error)) throw error;
          // Another node took it over first, or it was released: look again.
        }
      }
      return { ok: false, reason: "cluster_unavailable", error: "Too much contention" };
    } catch (error) {
      return { ok: false, reason: "cluster_unavailable", error: String(error) };
    }
  }

  #won(name: string, revision: number, tookOver: boolean): ClaimResult {
    if (!this.#lease.live) {
      // Fenced while claiming: the claim is not ours to use (it goes stale with the lease).
      return { ok: false, reason: "cluster_unavailable" };
    }
    this.#held.set(name, revision);
    return { ok: true, tookOver };
  }

  async #holderLive(holder: ClaimHolder): Promise<boolean> {
    if (holder.node === this.#lease.node && holder.epoch === this.#lease.epoch) return true;
    const lease = await this.#lease.kv.get(holder.node);
    if (!lease || lease.operation !== "PUT") return false;
    try {
      return (lease.json<LeaseValue>()).epoch === holder.epoch;
    } catch {
      return false;
    }
  }

  /** Who holds `name` with a live lease, or null (for routing to the holder's node). */
  async holder(name: string): Promise<ClaimHolder | null> {
    const entry = await this.kv.get(claimKey(name));
    if (!entry || entry.operation !== "PUT") return null;
    const holder = parseHolder(entry);
    return holder && await this.#holderLive(holder) ? holder : null;
  }

  /**
   * Releases `name` if this node holds it. A lost compare-and-swap means another node took
   * the claim over (this node was fenced meanwhile): nothing to do. Never throws.
   * @returns whether the claim was deleted
   */
  async release(name: string): Promise<boolean> {
    const revision = this.#held.get(name);
    if (revision === undefined) return false;
    this.#held.delete(name);
    return await this.#delete(name, revision);
  }

  async #delete(name: string, revision: number): Promise<boolean> {
    try {
      await this.kv.delete(claimKey(name), { previousSeq: revision });
      this.#unreleased.delete(name);
      return true;
    } catch (error) {
      if (isWrongRevision(error)) {
        // Taken over meanwhile: not ours to delete.
        this.#unreleased.delete(name);
      } else if (this.#lease.live && !this.#closed) {
        // Unreachable: retry, so other nodes see the name free soon (until fenced: then the
        // claim goes stale with the lease anyway).
        this.#unreleased.set(name, revision);
        this.#retryTimer ??= setTimeout(() => this.#retry(), RELEASE_RETRY_MS);
      }
      return false;
    }
  }

  async #retry(): Promise<void> {
    this.#retryTimer = undefined;
    for (const [name, revision] of [...this.#unreleased]) {
      this.#unreleased.delete(name);
      // Claimed again here meanwhile: the new claim replaced the leftover.
      if (!this.#held.has(name)) await this.#delete(name, revision);
    }
  }

  /** Forgets every claim without touching KV (after fencing: the claims are stale). */
  forgetAll(): void {
    this.#held.clear();
    this.#unreleased.clear();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  /** Releases every name this node holds; safe to call twice. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const leftovers = [...this.#unreleased];
    this.#unreleased.clear();
    await Promise.all([
      ...[...this.#held.keys()].map((name) => this.release(name)),
      ...leftovers.map(([name, revision]) => this.#delete(name, revision)),
    ]);
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
