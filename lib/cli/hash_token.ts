/**
 * `relay hash-token [TOKEN|-]`: prints the hex SHA-256 of a token, the value an auth file
 * stores for an owned name, and an example auth-file entry.
 * @module
 */

import { hashToken } from "../relay/auth.ts";
import { parseFlags, stringFlag, UsageError } from "./flags.ts";
import { encodeRegister } from "../wire/relay.ts";
import { MAX_TOKEN_BYTES } from "../limits.ts";
import { concat } from "../util/bytes.ts";

const USAGE = `Usage: relay hash-token [TOKEN | -] [--name NAME]

Prints the hex SHA-256 of TOKEN on stdout, and an example auth-file entry on stderr.
With - or no TOKEN, reads the token from stdin (one line; the final newline is dropped),
which keeps it out of shell history: relay hash-token - < token.txt

Options:
  --name NAME   name to show in the example entry (default: lab)
  -h, --help    show this help`;

/** Most stdin bytes read for a token: a token is at most 255 bytes, so more is a mistake. */
const MAX_STDIN_BYTES = 64 * 1024;

/** Where the command reads and writes; tests pass their own. */
export interface HashTokenIo {
  /**
   * Standard input.
   * @default {Deno.stdin}
   */
  stdin?: ReadableStream<Uint8Array> & { isTerminal?(): boolean };
  /**
   * Writes a line to stdout.
   * @default {console.log}
   */
  out?: (line: string) => void;
  /**
   * Writes a line to stderr.
   * @default {console.error}
   */
  err?: (line: string) => void;
}

/**
 * Runs `relay hash-token`.
 * @param args the arguments after `hash-token`
 * @param io streams to use instead of the process's
 * @returns the exit code
 * @throws {UsageError} on a bad flag, a token that cannot be sent, or no token at all
 */
export async function main(args: string[], io: HashTokenIo = {}): Promise<number> {
  const out = io.out ?? console.log;
  const err = io.err ?? console.error;
  const { values, positionals } = parseFlags(args, {
    name: { type: "string" },
    help: { type: "boolean", short: "h" },
  }, { max: 1 });
  if (values.help) {
    out(USAGE);
    return 0;
  }
  const name = stringFlag(values, "name") ?? "lab";
  let token = positionals[0];
  if (token === undefined || token === "-") {
    const stdin = io.stdin ?? Deno.stdin.readable;
    const isTerminal = io.stdin ? io.stdin.isTerminal?.() ?? false : Deno.stdin.isTerminal();
    if (token === undefined && isTerminal) {
      throw new UsageError(
        "Missing token: give it as an argument, or on stdin with: relay hash-token - < token.txt",
      );
    }
    token = await readToken(stdin);
  } else {
    err(
      "Warning: a token on the command line lands in shell history and the process list; " +
        "prefer: relay hash-token - < token.txt",
    );
  }
  try {
    // The same checks as a client's registration, so the hash is of a token that can be sent.
    encodeRegister(name, token);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const hex = await hashToken(token);
  out(hex);
  err(`Auth file entry: {${JSON.stringify(name)}: {"sha256": "${hex}"}}`);
  return 0;
}

async function readToken(stdin: ReadableStream<Uint8Array>): Promise<string> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of stdin) {
    total += chunk.length;
    if (total > MAX_STDIN_BYTES) {
      throw new UsageError(
        `Token on stdin is too long: a token is at most ${MAX_TOKEN_BYTES} bytes`,
      );
    }
    chunks.push(chunk);
  }
  const text = new TextDecoder().decode(concat(chunks)).replace(/\r?\n$/, "");
  if (text.includes("\n")) throw new UsageError("Token on stdin has more than one line");
  return text;
}
