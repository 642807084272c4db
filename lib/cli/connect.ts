/**
 * `relay connect`: an interactive client. Type `DEST message` to send; incoming messages are
 * shown as `sender: message`. With stdin not a terminal it sends one message per input line,
 * so it can be scripted.
 * @module
 */

import { RelayClient } from "../client/client.ts";
import { durationFlag } from "./flags.ts";
import { MAX_MESSAGE_BYTES } from "../limits.ts";
import { encodeName } from "../wire/relay.ts";
import {
  CLIENT_FLAGS,
  CLIENT_FLAGS_HELP,
  clientOptions,
  onShutdownSignal,
  parseCommand,
  showBytes,
} from "./common.ts";
import { concat } from "../util/bytes.ts";

const HELP = `relay connect: an interactive relay client

Usage: relay connect HOST:PORT NAME [options]

Registers NAME. Each line you type, "DEST message", sends "message" to DEST; messages that
arrive are shown as "sender: message" (control characters escaped, binary as hex).
When stdin is not a terminal every input line is sent the same way; at the end of input
the client waits --linger for replies, then exits.

Options:
  --linger DUR              after the end of piped input, keep showing messages this long [1s]
${CLIENT_FLAGS_HELP}

Example:
  relay connect 127.0.0.1:8080 alice
  > bob hello`;

const encoder = new TextEncoder();
const LINE_FEED = 0x0a;
const DEFAULT_LINGER_MS = 1_000;

/** Runs `relay connect`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseCommand(args, HELP, {
    ...CLIENT_FLAGS,
    linger: { type: "string" },
  }, { min: 2, max: 2 });
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const lingerMs = durationFlag(values, "linger", DEFAULT_LINGER_MS);
  const options = await clientOptions(values, positionals[0], positionals[1]);
  const interactive = Deno.stdin.isTerminal();
  await using client = await RelayClient.connect(options);
  const stop = onShutdownSignal();
  stop.addEventListener("abort", () => client.close(), { once: true });
  if (interactive) {
    console.log(
      `Connected to ${
        positionals[0]
      } as ${client.name}. Type "DEST message" to send; Ctrl-D quits.`,
    );
  }
  const receiving = (async () => {
    for await (const { from, payload } of client) console.log(`${from}: ${showBytes(payload)}`);
  })();
  let ok = true;
  for await (const line of lines(Deno.stdin.readable, MAX_MESSAGE_BYTES)) {
    if (line === undefined) {
      console.error(`relay: line longer than ${MAX_MESSAGE_BYTES} bytes skipped`);
      continue;
    }
    const text = line.replace(/\r$/, "");
    if (text.trim() === "") continue;
    const space = text.indexOf(" ");
    const dest = space < 0 ? text : text.slice(0, space);
    try {
      encodeName(dest);
    } catch (error) {
      console.error(`relay: ${(error as Error).message}; type "DEST message"`);
      ok = interactive && ok;
      continue;
    }
    if (space < 0) {
      console.error(`relay: nothing to send to ${dest}; type "DEST message"`);
      ok = interactive && ok;
      continue;
    }
    try {
      await client.send(dest, encoder.encode(text.slice(space + 1)));
    } catch (error) {
      console.error(`relay: ${(error as Error).message}`);
      return 1;
    }
  }
  if (!interactive && lingerMs > 0 && !stop.aborted) {
    await Promise.race([receiving, new Promise((r) => setTimeout(r, lingerMs))]);
  }
  await client.close();
  await receiving.catch(() => {});
  return ok ? 0 : 1;
}

/**
 * Splits a byte stream into lines (without the `\n`); a line longer than `limit` bytes
 * yields `undefined` once and its bytes are skipped, so input cannot grow memory.
 */
async function* lines(
  readable: ReadableStream<Uint8Array>,
  limit: number,
): AsyncGenerator<string | undefined> {
  const decoder = new TextDecoder();
  let parts: Uint8Array[] = [];
  let size = 0;
  let skipping = false;
  for await (const chunk of readable) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(LINE_FEED, start);
      const end = nl < 0 ? chunk.length : nl;
      if (!skipping) {
        size += end - start;
        if (size > limit) {
          skipping = true;
          parts = [];
          yield undefined;
        } else {
          parts.push(chunk.slice(start, end));
        }
      }
      if (nl < 0) break;
      if (!skipping) yield decoder.decode(concat(parts));
      parts = [];
      size = 0;
      skipping = false;
      start = nl + 1;
    }
  }
  if (!skipping && size > 0) yield decoder.decode(concat(parts));
}
