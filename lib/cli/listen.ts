/**
 * `relay listen`: registers a name and writes every message it receives to stdout: raw
 * payloads (with an optional separator), whole frames, or one JSON line each.
 * @module
 */

import { UsageError } from "./flags.ts";
import type { CommandSpec } from "./flag_table.ts";
import { encodeFrame } from "../wire/relay.ts";
import type { RelayMessage } from "../client/client.ts";
import {
  CLIENT_COMMAND_FLAGS,
  clientOptions,
  connectUnlessStopped,
  onShutdownSignal,
  parseCommand,
} from "./common.ts";

const SPEC: CommandSpec = {
  command: "relay listen",
  about: "write each incoming message to stdout",
  usage: "relay listen HOST:PORT NAME [options]",
  description:
    "Registers NAME and writes the payload of every message it receives to stdout, as raw bytes\n" +
    "followed by --separator, until interrupted (exit 0), the relay closes the connection\n" +
    "(exit 1), or --count messages have arrived (exit 0). With --json, one line per message:\n" +
    '{"from":"alice","size":5,"text":"hello"}, or "base64" instead of "text" when the payload\n' +
    "is not UTF-8 text. A NAME that begins with - goes after --: relay listen HOST:PORT -- -x",
  flags: [
    {
      name: "separator",
      type: "string",
      value: "TEXT",
      defaultText: "newline on a terminal, else none",
      help: "written after each payload; \\n, \\t, \\0 and \\\\ are understood",
      group: "Output",
    },
    {
      name: "json",
      type: "boolean",
      help: "one JSON object per line: from, size, and text or base64",
      group: "Output",
    },
    {
      name: "framed",
      type: "boolean",
      help: 'write whole frames "sender|len|payload" instead of payloads',
      group: "Output",
    },
    {
      name: "count",
      type: "count",
      help: "exit after N messages",
      group: "Output",
    },
    ...CLIENT_COMMAND_FLAGS,
  ],
  positionals: { min: 2, max: 2 },
  footer: "Examples:\n  relay listen 127.0.0.1:8080 bob > received.bin\n" +
    "  relay listen 127.0.0.1:8080 bob --json | jq .text",
};

const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads `\n`, `\t`, `\r`, `\0` and `\\` in a `--separator`. */
export function unescapeSeparator(text: string): string {
  const map: Record<string, string> = { n: "\n", t: "\t", r: "\r", "0": "\0", "\\": "\\" };
  return text.replace(/\\(.)/g, (all, c: string) => map[c] ?? all);
}

/** Standard base64 of `bytes` (btoa over chunks, so large payloads do not overflow the stack). */
function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** One `--json` line for a message (without the newline). */
export function jsonLine(message: RelayMessage): string {
  let text: string | undefined;
  try {
    text = strictUtf8.decode(message.payload);
  } catch {
    text = undefined;
  }
  return JSON.stringify(
    text === undefined
      ? { from: message.from, size: message.payload.length, base64: encodeBase64(message.payload) }
      : { from: message.from, size: message.payload.length, text },
  );
}

/** Runs `relay listen`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  const count = flags.count("count") ?? Infinity;
  const json = flags.boolean("json");
  const framed = flags.boolean("framed");
  if (json && framed) throw new UsageError("--json and --framed cannot go together");
  if (flags.has("separator") && (json || framed)) {
    throw new UsageError("--separator goes with raw payloads, not with --json or --framed");
  }
  const separator = encoder.encode(
    flags.has("separator")
      ? unescapeSeparator(flags.string("separator")!)
      : Deno.stdout.isTerminal()
      ? "\n"
      : "",
  );
  const options = await clientOptions(flags, flags.positionals[0], flags.positionals[1]);
  using stop = onShutdownSignal();
  const connected = await connectUnlessStopped(options, stop);
  if (!connected) return 0;
  await using client = connected;
  stop.addEventListener("abort", () => client.close(), { once: true });
  const out = Deno.stdout;
  const write = async (bytes: Uint8Array) => {
    for (let at = 0; at < bytes.length;) at += await out.write(bytes.subarray(at));
  };
  let received = 0;
  try {
    while (received < count) {
      const message = await client.receive();
      if (message === undefined) break;
      received++;
      if (json) await write(encoder.encode(jsonLine(message) + "\n"));
      else if (framed) await write(encodeFrame(message.from, message.payload));
      else {
        await write(message.payload);
        if (separator.length) await write(separator);
      }
    }
  } catch (error) {
    // The reader went away (`relay listen … | head -1`): done, as for any Unix filter.
    if (error instanceof Deno.errors.BrokenPipe) return 0;
    throw error;
  }
  if (received >= count || stop.aborted) return 0;
  const why = client.bye ? `: ${client.bye.message} (${client.bye.reason})` : "";
  console.error(`relay: the relay closed the connection${why}`);
  return 1;
}
