/**
 * The directory behind `who`: the names online, sorted by their UTF-8 bytes, handed out in
 * pages. The sorted list is built when first asked for after a change and reused until the
 * next one, so a client repeating `who` costs a binary search, not a sort.
 * @module
 */

import { DEFAULT_WHO_LIMIT, MAX_CONTROL_BYTES, MAX_WHO_LIMIT } from "../limits.ts";

/** What to list. */
export interface PageRequest {
  /** Only names that start with it. */
  prefix?: string;
  /** Only names after it (the last name of the previous page). */
  after?: string;
  /**
   * Most names in the page (at most {@linkcode MAX_WHO_LIMIT}).
   * @default {100}
   */
  limit?: number;
  /**
   * Most bytes of the names as JSON strings with commas: the page is cut there, so a reply
   * fits one control frame.
   * @default {MAX_CONTROL_BYTES - 256}
   */
  maxJsonBytes?: number;
}

/** One page of names. */
export interface Page {
  /** Names, in UTF-8 byte order. */
  names: string[];
  /** Whether more names (with the prefix) follow the last one. */
  more: boolean;
}

const encoder = new TextEncoder();

/**
 * Compares two strings in the order of their UTF-8 bytes (which is code point order; plain
 * `<` compares UTF-16 code units, which differs past U+FFFF).
 */
export function compareUtf8(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return fixup(x) - fixup(y);
  }
  return a.length - b.length;
}

/** Moves surrogates (0xD800–0xDFFF) above the rest of the BMP, where their code points are. */
function fixup(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

/** Sorted, cached names of a relay. */
export class Directory {
  readonly #source: () => Iterable<string>;
  readonly #generation: (() => number) | undefined;
  #sortedAt = 0;
  #sorted: string[] | undefined;

  /**
   * @param source the names registered now, in any order
   * @param generation moves whenever names elsewhere change (a mesh of workers or nodes), for
   *   changes this directory is not told of in time: the next page sorts again once it moved
   */
  constructor(source: () => Iterable<string>, generation?: () => number) {
    this.#source = source;
    this.#generation = generation;
  }

  /** A name registered or left: the next page sorts again. */
  changed(): void {
    this.#sorted = undefined;
  }

  /** One page of names. */
  page(request: PageRequest = {}): Page {
    if (this.#generation !== undefined && this.#generation() !== this.#sortedAt) {
      this.#sortedAt = this.#generation();
      this.#sorted = undefined;
    }
    const sorted = this.#sorted ??= [...this.#source()].sort(compareUtf8);
    const prefix = request.prefix ?? "";
    const limit = Math.min(request.limit ?? DEFAULT_WHO_LIMIT, MAX_WHO_LIMIT);
    const maxBytes = request.maxJsonBytes ?? MAX_CONTROL_BYTES - 256;
    let at = lowerBound(sorted, prefix);
    if (request.after !== undefined && compareUtf8(request.after, prefix) >= 0) {
      at = upperBound(sorted, request.after);
    }
    const names: string[] = [];
    let bytes = 0;
    for (; at < sorted.length && names.length < limit; at++) {
      const name = sorted[at];
      if (!name.startsWith(prefix)) return { names, more: false };
      const size = encoder.encode(JSON.stringify(name)).length + 1;
      if (bytes + size > maxBytes && names.length > 0) break;
      bytes += size;
      names.push(name);
    }
    const more = at < sorted.length && sorted[at].startsWith(prefix);
    return { names, more };
  }
}

/** First index whose name is not before `key`. */
function lowerBound(sorted: readonly string[], key: string): number {
  let lo = 0, hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareUtf8(sorted[mid], key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index whose name is after `key`. */
function upperBound(sorted: readonly string[], key: string): number {
  let lo = 0, hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareUtf8(sorted[mid], key) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
