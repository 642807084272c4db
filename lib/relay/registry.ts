/**
 * The names of registered clients. One shared registry per server; a name maps to at most one
 * connection and is free again as soon as that connection ends.
 * @module
 */

/** Names to their owners. */
export class Registry<T> {
  readonly #byName = new Map<string, T>();

  /** Number of registered names. */
  get size(): number {
    return this.#byName.size;
  }

  /**
   * Registers `name` for `owner` unless it is taken.
   * @returns false when another owner holds the name (which keeps it)
   */
  claim(name: string, owner: T): boolean {
    if (this.#byName.has(name)) return false;
    this.#byName.set(name, owner);
    return true;
  }

  /** Frees `name` if `owner` holds it; another owner's claim is left alone. */
  release(name: string, owner: T): void {
    if (this.#byName.get(name) === owner) this.#byName.delete(name);
  }

  /** The owner of `name`, if any. */
  get(name: string): T | undefined {
    return this.#byName.get(name);
  }

  /** All owners. */
  values(): IterableIterator<T> {
    return this.#byName.values();
  }
}
