/**
 * `relay listen`: registers a name and writes every message it receives to stdout.
 * @module
 */

import type { CommandSpec } from "./flag_table.ts";
import { encodeFrame } from "../wire/relay.ts";
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
    "Registers NAME and writes the payload of every message it receives to stdout, as raw bytes,\n" +
    "until interrupted (exit 0), the relay closes the connection (exit 1), or --count messages\n" +
    "have arrived (exit 0). A NAME that begins with - goes after --: relay listen HOST:PORT -- -x",
  flags: [
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
  footer: "Example:\n  relay listen 127.0.0.1:8080 bob > received.bin",
};

/** Runs `relay listen`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  const count = flags.count("count") ?? Infinity;
  const options = await clientOptions(flags, flags.positionals[0], flags.positionals[1]);
  using stop = onShutdownSignal();
  const connected = await connectUnlessStopped(options, stop);
  if (!connected) return 0;
  await using client = connected;
  stop.addEventListener("abort", () => client.close(), { once: true });
  const out = Deno.stdout;
  let received = 0;
  while (received < count) {
    const message = await client.receive();
    if (message === undefined) break;
    received++;
    const bytes = flags.boolean("framed")
      ? encodeFrame(message.from, message.payload)
      : message.payload;
    for (let at = 0; at < bytes.length;) at += await out.write(bytes.subarray(at));
  }
  if (received >= count || stop.aborted) return 0;
  console.error("relay: the relay closed the connection");
  return 1;
}
