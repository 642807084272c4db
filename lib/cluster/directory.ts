/**
 * Every name in the cluster and the node holding it, kept in memory from a watch on the
 * claims bucket: routing looks a destination up without a KV request per message, and the
 * control channel's `who` and presence can span nodes. Eventually consistent: a claim made a
 * moment ago on another node may not be here yet, so a miss falls back to a KV read.
 *
 * ```
 * open     watch(relay_names) → last value of every key, then every change
 * PUT      name → {node, epoch}      (a claim or a takeover)
 * DEL      name gone                 (a release)
 * get      cached holder, or undefined
 * resolve  cached holder, or one KV read (then cached)
 * ```
 *
 * A holder whose node died stays listed until its name is taken over or released: NATS 2.9
 * sends no event when a lease ages out. Pairs to such a node end through the peer check of
 * `ClusterNode`; callers that must know use `NameClaims.holder`.
 * @module
 */

import type { KV, KvWatchEntry } from "@nats-io/kv";
import type { QueuedIterator } from "@nats-io/transport-node";
import { type ClaimHolder, claimKey, nameOfKey, parseHolder } from "./claims.ts";

/** A change the directory saw: `holder` null means the name was released. */
export type DirectoryChange = (name: string, holder: ClaimHolder | null) => void;

/** The cluster's names and their holders, from a KV watch. */
export class NameDirectory implements AsyncDisposable {
  readonly #kv: KV;
  #watch: QueuedIterator<KvWatchEntry>;
  readonly #names = new Map<string, ClaimHolder>();
  readonly #onChange: DirectoryChange | undefined;
  #done: Promise<void>;
  /** While a restarted watch loads its snapshot: the names it has shown so far. */
  #reloading: Set<string> | undefined;
  readonly #ready: Promise<void>;
  #resolveReady!: () => void;
  #closed = false;

  private constructor(
    kv: KV,
    watch: QueuedIterator<KvWatchEntry>,
    onChange: DirectoryChange | undefined,
    empty: boolean,
  ) {
    this.#kv = kv;
    this.#watch = watch;
    this.#onChange = onChange;
    this.#ready = new Promise((resolve) => this.#resolveReady = resolve);
    if (empty) this.#resolveReady();
    this.#done = this.#follow();
  }

  /**
   * Starts watching the claims bucket `kv` (`NameClaims.kv`).
   * @param onChange called for every claim and release after the start
   */
  static async open(kv: KV, onChange?: DirectoryChange): Promise<NameDirectory> {
    const empty = (await kv.status()).values === 0;
    const watch = await kv.watch();
    return new NameDirectory(kv, watch, onChange, empty);
  }

  async #follow(watch = this.#watch): Promise<void> {
    try {
      for await (const entry of watch) {
        const name = nameOfKey(entry.key);
        if (name !== null) {
          this.#reloading?.add(name);
          this.#apply(name, entry.operation === "PUT" ? parseHolder(entry) : null);
        }
        // delta 0: the last of the keys that existed when the watch started.
        if (entry.delta === 0) {
          this.#resolveReady();
          this.#reloaded();
        }
      }
    } catch {
      // The watch ended with the connection: the directory keeps its last state.
    } finally {
      this.#resolveReady();
    }
  }

  #apply(name: string, holder: ClaimHolder | null): void {
    if (holder) this.#names.set(name, holder);
    else if (!this.#names.delete(name)) return;
    this.#onChange?.(name, holder);
  }

  /** A restarted watch has shown its snapshot: names it did not show were released meanwhile. */
  #reloaded(): void {
    const seen = this.#reloading;
    if (seen === undefined) return;
    this.#reloading = undefined;
    for (const name of [...this.#names.keys()]) if (!seen.has(name)) this.#apply(name, null);
  }

  /**
   * Watches again from a fresh snapshot: after the NATS connection failed over to another
   * server, the old watch's consumer may be gone without a word. Changes missed meanwhile are
   * applied (names released meanwhile are removed).
   */
  async restart(): Promise<void> {
    if (this.#closed) return;
    this.#watch.stop();
    await this.#done;
    const empty = (await this.#kv.status()).values === 0;
    const watch = await this.#kv.watch();
    if (this.#closed) {
      watch.stop();
      return;
    }
    this.#watch = watch;
    this.#reloading = new Set();
    if (empty) this.#reloaded();
    this.#done = this.#follow(watch);
  }

  /** Resolves once the names that existed at the start are all loaded. */
  get ready(): Promise<void> {
    return this.#ready;
  }

  /** The holder of `name` as last seen, or undefined. */
  get(name: string): ClaimHolder | undefined {
    return this.#names.get(name);
  }

  /** The holder of `name`: from memory, else one KV read (a claim the watch has not shown yet). */
  async resolve(name: string): Promise<ClaimHolder | undefined> {
    const known = this.#names.get(name);
    if (known || this.#closed) return known;
    const entry = await this.#kv.get(claimKey(name));
    if (!entry || entry.operation !== "PUT") return undefined;
    return parseHolder(entry) ?? undefined;
  }

  /** Every name and its holder, as last seen. */
  entries(): IterableIterator<[string, ClaimHolder]> {
    return this.#names.entries();
  }

  /** How many names are held cluster-wide, as last seen. */
  get size(): number {
    return this.#names.size;
  }

  /** Stops watching; safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch.stop();
    await this.#done;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
