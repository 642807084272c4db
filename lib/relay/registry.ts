/**
 * The names of registered clients. One shared registry per server; a name maps to at most one
 * connection and is free again as soon as that connection ends or gives it up.
 * @module
 */

/** Names to their owners. */
export class Registry<T> {
  readonly #byName = new Map<string, T>();
  #generation = 0;

  /** Number of registered names. */
  get size(): number {
    return this.#byName.size;
  }

  /**
   * A number that changes whenever any name changes hands (is claimed or freed). A cache of
   * name → owner is valid only while the generation it was filled at is still current: this
   * is how a sender's destination cache notices that the name it cached went to someone else.
   */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Registers `name` for `owner` unless it is taken.
   * @returns false when another owner holds the name (which keeps it)
   */
  claim(name: string, owner: T): boolean {
    if (this.#byName.has(name)) return false;
    this.#byName.set(name, owner);
    this.#generation++;
    return true;
  }

  /** Frees `name` if `owner` holds it; another owner's claim is left alone. */
  release(name: string, owner: T): void {
    if (this.#byName.get(name) === owner) {
      this.#byName.delete(name);
      this.#generation++;
    }
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
