/**
 * `relay connect`: an interactive client. Type `DEST message` to send; incoming messages are
 * shown as `sender: message`. With stdin not a terminal it sends one message per input line,
 * so it can be scripted.
 * @module
 */

import { formatDuration } from "./flags.ts";
import type { CommandSpec } from "./flag_table.ts";
import { MAX_MESSAGE_BYTES } from "../limits.ts";
import { parseAddressedLine } from "./line.ts";
import {
  CLIENT_COMMAND_FLAGS,
  clientOptions,
  connectUnlessStopped,
  onShutdownSignal,
  parseCommand,
  showBytes,
} from "./common.ts";
import { concat } from "../util/bytes.ts";

const DEFAULT_LINGER_MS = 1_000;

const SPEC: CommandSpec = {
  command: "relay connect",
  about: "an interactive relay client",
  usage: "relay connect HOST:PORT NAME [options]",
  description:
    `Registers NAME. Each line you type, "DEST message", sends "message" to DEST; messages that
arrive are shown as "sender: message" (control characters escaped, binary as hex). A DEST with
spaces goes in double quotes: "my laptop" hello (\\" and \\\\ inside the quotes).
When stdin is not a terminal every input line is sent the same way; at the end of input
the client waits --linger for replies, then exits. Ctrl-C or Ctrl-D quits (exit 0).`,
  flags: [
    {
      name: "linger",
      type: "duration",
      default: formatDuration(DEFAULT_LINGER_MS),
      zeroIsOff: true,
      help: "after the end of piped input, keep showing messages this long",
      group: "Input",
    },
    ...CLIENT_COMMAND_FLAGS,
  ],
  positionals: { min: 2, max: 2 },
  footer: `Example:
  relay connect 127.0.0.1:8080 alice
  > bob hello
  > "my laptop" hi there`,
};

const encoder = new TextEncoder();
const LINE_FEED = 0x0a;

/** Runs `relay connect`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  const positionals = flags.positionals;
  const lingerMs = flags.duration("linger")!;
  const options = await clientOptions(flags, positionals[0], positionals[1]);
  const interactive = Deno.stdin.isTerminal();
  using stop = onShutdownSignal();
  const connected = await connectUnlessStopped(options, stop);
  if (!connected) return 0;
  await using client = connected;
  const stopped = new Promise<undefined>((resolve) => {
    if (stop.aborted) resolve(undefined);
    stop.addEventListener("abort", () => resolve(undefined), { once: true });
  });
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
  const input = lines(Deno.stdin.readable, MAX_MESSAGE_BYTES);
  for (;;) {
    // A pending stdin read cannot be cancelled; on Ctrl-C stop waiting for it (main.ts exits).
    const next = await Promise.race([input.next(), stopped]);
    if (next === undefined || next.done) break;
    const line = next.value;
    if (line === undefined) {
      console.error(`relay: line longer than ${MAX_MESSAGE_BYTES} bytes skipped`);
      continue;
    }
    const text = line.replace(/\r$/, "");
    if (text.trim() === "") continue;
    const addressed = parseAddressedLine(text);
    if ("error" in addressed) {
      console.error(`relay: ${addressed.error}; type "DEST message"`);
      ok = interactive && ok;
      continue;
    }
    try {
      await client.send(addressed.dest, encoder.encode(addressed.message));
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
