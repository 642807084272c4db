/**
 * Name ownership: an auth file maps owned names to the SHA-256 of their token, and only a
 * client that registers `{name}:{token}|` with the right token gets an owned name.
 *
 * ```json
 * { "lab": { "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" } }
 * ```
 *
 * Other names stay open unless `requireAuth` is set. The file holds digests only, so reading it
 * reveals no token; tokens are hashed on arrival, compared in constant time and never logged.
 * @module
 */

import { toHex } from "../util/bytes.ts";
import { nameBytesProblem } from "../wire/relay.ts";

/** Outcome of an ownership check, also used as the refusal reason in logs and counters. */
export type AuthResult = "ok" | "wrong_token" | "token_required";

/** Options of {@linkcode AuthPolicy}. */
export interface AuthPolicyOptions {
  /**
   * Refuse every name that is not in the auth file, so only token holders can register.
   * @default {false}
   */
  requireAuth?: boolean;
}

const encoder = new TextEncoder();
const HEX_DIGEST = /^[0-9a-fA-F]{64}$/;

/**
 * Hex SHA-256 of a token's UTF-8 bytes: the value to put in the auth file.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   await hashToken("test"),
 *   "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
 * );
 * ```
 */
export async function hashToken(token: string): Promise<string> {
  return toHex(await digest(token));
}

async function digest(token: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(token)));
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Compares two byte arrays in time that depends only on their lengths, so a wrong token's
 * digest reveals nothing about how much of it matched.
 */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * Parses the text of an auth file into owned names and their token digests.
 * @param text the file's JSON
 * @param source the file's path, named in error messages
 * @returns digest bytes by name
 * @throws {SyntaxError} naming the file and the bad entry when the text is not a valid auth file
 */
export function parseAuthFile(text: string, source: string): Map<string, Uint8Array> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new SyntaxError(`Invalid auth file ${source}: not JSON: ${why}`);
  }
  return digestsOf(data, source);
}

function digestsOf(data: unknown, source: string): Map<string, Uint8Array> {
  if (!isPlainObject(data)) {
    throw new SyntaxError(
      `Invalid auth file ${source}: expected an object mapping names to {"sha256": "<hex>"}`,
    );
  }
  const digests = new Map<string, Uint8Array>();
  for (const [name, entry] of Object.entries(data)) {
    const bad = (why: string) =>
      new SyntaxError(`Invalid auth file ${source}: entry ${JSON.stringify(name)}: ${why}`);
    const problem = nameBytesProblem(encoder.encode(name));
    if (problem) throw bad(problem);
    if (!isPlainObject(entry)) throw bad(`expected {"sha256": "<64 hex digits>"}`);
    const extra = Object.keys(entry).find((key) => key !== "sha256");
    if (extra !== undefined) throw bad(`unknown field ${JSON.stringify(extra)}`);
    const hex = entry.sha256;
    if (typeof hex !== "string" || !HEX_DIGEST.test(hex)) {
      throw bad("sha256 must be 64 hex digits (run relay hash-token to make one)");
    }
    digests.set(name, fromHex(hex));
  }
  return digests;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Reads and parses an auth file.
 * @throws {Error} naming the file when it cannot be read
 * @throws {SyntaxError} naming the file and the bad entry when it is not a valid auth file
 */
export async function loadAuthFile(path: string): Promise<Map<string, Uint8Array>> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new Error(`Cannot read auth file ${path}: ${why}`, { cause: error });
  }
  return parseAuthFile(text, path);
}

/**
 * An {@linkcode AuthPolicy} as plain data, for `structuredClone` and `postMessage` (a worker
 * of `relay serve --threads N` rebuilds the policy from it with
 * {@linkcode AuthPolicy.fromSnapshot}).
 */
export interface AuthSnapshot {
  /** The auth file the policy reloads from; absent for a policy from memory. */
  path?: string;
  /** Digest bytes (SHA-256, 32 bytes) by owned name. */
  digests: Map<string, Uint8Array>;
  /** Whether names not in the file are refused. */
  requireAuth: boolean;
}

/**
 * Decides who may register which name, from an auth file.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile({ suffix: ".json" });
 * const sha256 = await hashToken("s3cret"); // what `relay hash-token` prints
 * await Deno.writeTextFile(path, JSON.stringify({ alice: { sha256 } }));
 * const auth = await AuthPolicy.load(path, { requireAuth: false });
 * assert.equal(await auth.check("alice", "s3cret"), "ok");
 * assert.equal(await auth.check("alice", "guess"), "wrong_token"); // refuse the registration
 * assert.equal(await auth.check("alice"), "token_required");
 * assert.equal(await auth.check("bob"), "ok"); // not in the file, and tokens are optional
 * await Deno.remove(path);
 * ```
 */
export class AuthPolicy {
  readonly #path: string | undefined;
  readonly #requireAuth: boolean;
  #digests: Map<string, Uint8Array>;

  private constructor(
    path: string | undefined,
    digests: Map<string, Uint8Array>,
    options: AuthPolicyOptions,
  ) {
    this.#path = path;
    this.#digests = digests;
    this.#requireAuth = options.requireAuth ?? false;
  }

  /**
   * Loads the auth file at `path`.
   * @throws {Error} naming the file when it cannot be read or is not a valid auth file
   */
  static async load(path: string, options: AuthPolicyOptions = {}): Promise<AuthPolicy> {
    return new AuthPolicy(path, await loadAuthFile(path), options);
  }

  /**
   * A policy from digests already in memory (tests, or owners given another way); `reload`
   * keeps them as they are.
   * @param digests hex SHA-256 of each owned name's token
   */
  static fromDigests(
    digests: Record<string, string>,
    options: AuthPolicyOptions = {},
  ): AuthPolicy {
    const entries = Object.fromEntries(
      Object.entries(digests).map(([name, sha256]) => [name, { sha256 }]),
    );
    return new AuthPolicy(undefined, digestsOf(entries, "<memory>"), options);
  }

  /**
   * A policy rebuilt from {@linkcode AuthPolicy.snapshot} (in another thread): the same
   * digests and `requireAuth`; `reload` re-reads the same file, or keeps the digests of a policy
   * from memory.
   * @throws {SyntaxError} when a digest is not 32 bytes
   */
  static fromSnapshot(snapshot: AuthSnapshot): AuthPolicy {
    const digests = new Map<string, Uint8Array>();
    for (const [name, digest] of snapshot.digests) {
      if (digest.length !== 32) {
        throw new SyntaxError(`Invalid auth snapshot: entry ${JSON.stringify(name)}: not 32 bytes`);
      }
      digests.set(name, new Uint8Array(digest));
    }
    return new AuthPolicy(snapshot.path, digests, { requireAuth: snapshot.requireAuth });
  }

  /** This policy as plain data (copies), to rebuild it elsewhere with `fromSnapshot`. */
  snapshot(): AuthSnapshot {
    const digests = new Map<string, Uint8Array>();
    for (const [name, digest] of this.#digests) digests.set(name, new Uint8Array(digest));
    return {
      ...(this.#path === undefined ? {} : { path: this.#path }),
      digests,
      requireAuth: this.#requireAuth,
    };
  }

  /** Number of owned names. */
  get size(): number {
    return this.#digests.size;
  }

  /** Whether `requireAuth` is on. */
  get requireAuth(): boolean {
    return this.#requireAuth;
  }

  /** Whether `name` is owned (in the auth file). */
  owns(name: string): boolean {
    return this.#digests.has(name);
  }

  /**
   * Checks whether a client may register `name` with `token` (from `parseRegistration`).
   * An owned name needs its token. With `requireAuth`, a name that is not owned is refused
   * like an owned one ("token_required" without a token, "wrong_token" with one), so a client
   * cannot learn which names are owned. Without it, such names are open and a token is ignored.
   * @returns `"ok"`, `"wrong_token"` (count it against the IP) or `"token_required"`
   */
  async check(name: string, token?: string): Promise<AuthResult> {
    const expected = this.#digests.get(name);
    if (expected === undefined && !this.#requireAuth) return "ok";
    if (token === undefined) return "token_required";
    // Hash even when the name is not owned, so both refusals take the same time.
    const actual = await digest(token);
    if (expected === undefined) return "wrong_token";
    return timingSafeEqual(actual, expected) ? "ok" : "wrong_token";
  }

  /**
   * Reads the auth file again (on SIGHUP). On any error the current table stays in force and
   * the error is thrown for the caller to log. Already registered names are not affected.
   * @returns the number of owned names now
   */
  async reload(): Promise<number> {
    if (this.#path !== undefined) this.#digests = await loadAuthFile(this.#path);
    return this.#digests.size;
  }
}
