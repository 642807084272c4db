/**
 * `relay hash-token [TOKEN|-]`: prints the hex SHA-256 of a token, the value an auth file
 * stores for an owned name, and an example auth-file entry.
 * @module
 */

import { hashToken } from "../relay/auth.ts";
import { UsageError } from "./flags.ts";
import { type CommandSpec, type Flag, helpText, parseFlags } from "./flag_table.ts";
import { HELP_FLAG } from "./common.ts";
import { encodeRegister } from "../wire/relay.ts";
import { MAX_TOKEN_BYTES } from "../limits.ts";
import { concat } from "../util/bytes.ts";

const FLAGS: readonly Flag[] = [
  {
    name: "name",
    type: "string",
    value: "NAME",
    default: "lab",
    help: "name to show in the example entry",
    group: "Options",
  },
  HELP_FLAG,
];

const SPEC: CommandSpec = {
  command: "relay hash-token",
  about: "print the SHA-256 of a name token for --auth-file",
  usage: "relay hash-token [TOKEN | -] [--name NAME]",
  description: `Prints the hex SHA-256 of TOKEN on stdout, and an example auth-file entry on stderr.
With no TOKEN on a terminal, asks for it and reads it without echo. With - (or no TOKEN and
stdin not a terminal), reads it from stdin (one line; the final newline is dropped). Both keep
it out of shell history and the process list: relay hash-token - < token.txt

Clients then take the token with --token-file FILE (or RELAY_TOKEN_FILE).`,
  flags: FLAGS,
  positionals: { max: 1 },
};

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
  /**
   * Asks for the token on a terminal without echo; `undefined` when cancelled.
   * @default {promptHidden}
   */
  prompt?: (question: string) => Promise<string | undefined>;
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
  const flags = parseFlags(args, FLAGS, SPEC.positionals);
  if (flags.boolean("help")) {
    out(helpText(SPEC));
    return 0;
  }
  const positionals = flags.positionals;
  const name = flags.string("name")!;
  let token = positionals[0];
  if (token === undefined || token === "-") {
    const stdin = io.stdin ?? Deno.stdin.readable;
    const isTerminal = io.stdin ? io.stdin.isTerminal?.() ?? false : Deno.stdin.isTerminal();
    if (token === undefined && isTerminal) {
      const asked = await (io.prompt ?? promptHidden)("Token (not shown): ");
      if (asked === undefined || asked === "") {
        throw new UsageError(
          "Missing token: type it at the prompt, or give it on stdin: relay hash-token - < token.txt",
        );
      }
      token = asked;
    } else {
      token = await readToken(stdin);
    }
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

const CTRL_C = 0x03;
const CTRL_D = 0x04;
const BACKSPACE = 0x7f;
const CTRL_H = 0x08;
const CTRL_U = 0x15;

/**
 * Writes `question` to stderr and reads one line from the terminal in raw mode, so that what is
 * typed is not echoed. Enter ends it; Ctrl-C, or Ctrl-D on an empty line, cancels.
 * @returns the line, or `undefined` when cancelled
 */
export async function promptHidden(question: string): Promise<string | undefined> {
  const encoder = new TextEncoder();
  // Raw (no echo) before the prompt shows, so nothing typed after it can be echoed.
  Deno.stdin.setRaw(true);
  Deno.stderr.writeSync(encoder.encode(question));
  const bytes: number[] = [];
  const buf = new Uint8Array(256);
  try {
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) {
        return bytes.length ? new TextDecoder().decode(new Uint8Array(bytes)) : undefined;
      }
      for (const b of buf.subarray(0, n)) {
        if (b === 0x0d || b === 0x0a) return new TextDecoder().decode(new Uint8Array(bytes));
        if (b === CTRL_C || (b === CTRL_D && bytes.length === 0)) return undefined;
        if (b === BACKSPACE || b === CTRL_H) {
          // Drop the whole last UTF-8 character: continuation bytes are 10xxxxxx.
          while (bytes.length && (bytes.pop()! & 0xc0) === 0x80);
        } else if (b === CTRL_U) bytes.length = 0;
        else if (b >= 0x20 || b === 0x09) {
          if (bytes.length > MAX_STDIN_BYTES) throw new UsageError("Token is too long");
          bytes.push(b);
        }
      }
    }
  } finally {
    Deno.stdin.setRaw(false);
    Deno.stderr.writeSync(encoder.encode("\n"));
  }
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
