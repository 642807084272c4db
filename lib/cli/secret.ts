/**
 * The tunnel's shared secret, as the CLI reads it: from `--secret-file`, or else from
 * `RELAY_TUNNEL_SECRET`.
 * @module
 */

import { readEnv, UsageError } from "./flags.ts";
import { MIN_SECRET_BYTES } from "../tunnel/crypto.ts";

/** Largest secret file read: a secret is a line, not a file to load whole. */
const MAX_SECRET_FILE_BYTES = 64 * 1024;

const encoder = new TextEncoder();

/**
 * Reads the shared secret from `path`, or else from `RELAY_TUNNEL_SECRET`; trailing
 * whitespace (a final newline) is dropped.
 * @returns the secret, or `undefined` when neither is set
 * @throws {UsageError} when the file cannot be read or the secret is too short
 */
export async function readSecret(path: string | undefined): Promise<Uint8Array | undefined> {
  let text: string;
  let from: string;
  if (path !== undefined) {
    from = `--secret-file ${path}`;
    try {
      const info = await Deno.stat(path);
      if (info.size > MAX_SECRET_FILE_BYTES) {
        throw new Error(`larger than ${MAX_SECRET_FILE_BYTES} bytes`);
      }
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new UsageError(`Cannot read ${from}: ${(error as Error).message}`);
    }
  } else {
    const env = readEnv("RELAY_TUNNEL_SECRET");
    if (env === undefined || env === "") return undefined;
    from = "RELAY_TUNNEL_SECRET";
    text = env;
  }
  const secret = encoder.encode(text.replace(/\s+$/, ""));
  if (secret.length < MIN_SECRET_BYTES) {
    throw new UsageError(
      `Invalid ${from}: the secret is shorter than ${MIN_SECRET_BYTES} bytes ` +
        `(make one with: openssl rand -hex 32)`,
    );
  }
  return secret;
}
