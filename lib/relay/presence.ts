/**
 * Presence: which clients watch which names, and the `online` / `offline` events they get when
 * those names register and leave. Bounded per watcher ({@linkcode MAX_WATCHED_NAMES}) and in
 * total ({@linkcode MAX_TOTAL_WATCHES}); a watcher's entries go when its connection ends.
 *
 * ```
 * watch(w, ["bob"]) ─► online("bob") ─► w.notify("online", "bob")
 *                      offline("bob") ─► w.notify("offline", "bob")
 * ```
 * @module
 */

import { MAX_TOTAL_WATCHES, MAX_WATCHED_NAMES } from "../limits.ts";

/** Something that receives presence events: the control session of one connection. */
export interface Watcher {
  /** A watched name registered (`online`) or left (`offline`). */
  notify(event: "online" | "offline", name: string): void;
}

/** Options of a {@linkcode Presence}. */
export interface PresenceOptions {
  /**
   * Names one watcher may watch.
   * @default {256}
   */
  maxPerWatcher?: number;
  /**
   * Watches over all watchers.
   * @default {262144}
   */
  maxTotal?: number;
}

/** The watch lists of every client of one relay. */
export class Presence<W extends Watcher = Watcher> {
  readonly #byName = new Map<string, Set<W>>();
  readonly #byWatcher = new Map<W, Set<string>>();
  readonly #maxPerWatcher: number;
  readonly #maxTotal: number;
  #total = 0;

  /** @param options bounds */
  constructor(options: PresenceOptions = {}) {
    this.#maxPerWatcher = options.maxPerWatcher ?? MAX_WATCHED_NAMES;
    this.#maxTotal = options.maxTotal ?? MAX_TOTAL_WATCHES;
  }

  /** Watches over all watchers. */
  get size(): number {
    return this.#total;
  }

  /** Names `watcher` watches now. */
  count(watcher: W): number {
    return this.#byWatcher.get(watcher)?.size ?? 0;
  }

  /**
   * Adds `names` to what `watcher` watches, all or none.
   * @returns false when that would pass a bound (nothing is added then)
   */
  watch(watcher: W, names: readonly string[]): boolean {
    const mine = this.#byWatcher.get(watcher);
    const fresh = new Set(names.filter((n) => !mine?.has(n)));
    if ((mine?.size ?? 0) + fresh.size > this.#maxPerWatcher) return false;
    if (this.#total + fresh.size > this.#maxTotal) return false;
    if (fresh.size === 0) return true;
    let set = mine;
    if (set === undefined) this.#byWatcher.set(watcher, set = new Set());
    for (const name of fresh) {
      set.add(name);
      let watchers = this.#byName.get(name);
      if (watchers === undefined) this.#byName.set(name, watchers = new Set());
      watchers.add(watcher);
    }
    this.#total += fresh.size;
    return true;
  }

  /** Stops `watcher` watching `names` (names it does not watch are ignored). */
  unwatch(watcher: W, names: Iterable<string>): void {
    const mine = this.#byWatcher.get(watcher);
    if (mine === undefined) return;
    for (const name of names) {
      if (!mine.delete(name)) continue;
      this.#total--;
      const watchers = this.#byName.get(name)!;
      watchers.delete(watcher);
      if (watchers.size === 0) this.#byName.delete(name);
    }
    if (mine.size === 0) this.#byWatcher.delete(watcher);
  }

  /** Forgets everything `watcher` watches (its connection ended). */
  remove(watcher: W): void {
    const mine = this.#byWatcher.get(watcher);
    if (mine !== undefined) this.unwatch(watcher, [...mine]);
  }

  /** `name` registered: tells its watchers. */
  online(name: string): void {
    this.#tell("online", name);
  }

  /** `name` left: tells its watchers. */
  offline(name: string): void {
    this.#tell("offline", name);
  }

  #tell(event: "online" | "offline", name: string): void {
    const watchers = this.#byName.get(name);
    if (watchers === undefined) return;
    // A copy: a watcher may end (and leave the set) while it is told.
    for (const watcher of [...watchers]) watcher.notify(event, name);
  }
}
