/**
 * `relay listen`: registers a name and writes every message it receives to stdout.
 * @module
 */

import { RelayClient } from "../client/client.ts";
import { integerFlag } from "./flags.ts";
import { encodeFrame } from "../wire/relay.ts";
import {
  CLIENT_FLAGS,
  CLIENT_FLAGS_HELP,
  clientOptions,
  onShutdownSignal,
  parseCommand,
} from "./common.ts";

const HELP = `relay listen: write each incoming message to stdout

Usage: relay listen HOST:PORT NAME [options]

Registers NAME and writes the payload of every message it receives to stdout, as raw bytes,
until interrupted, the relay closes the connection, or --count messages have arrived.

Options:
  --framed                  write whole frames "sender|len|payload" instead of payloads
  --count N                 exit after N messages
${CLIENT_FLAGS_HELP}

Example:
  relay listen 127.0.0.1:8080 bob > received.bin`;

/** Runs `relay listen`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseCommand(args, HELP, {
    ...CLIENT_FLAGS,
    framed: { type: "boolean" },
    count: { type: "string" },
  }, { min: 2, max: 2 });
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const count = integerFlag(values, "count", Infinity);
  const options = await clientOptions(values, positionals[0], positionals[1]);
  const stop = onShutdownSignal();
  await using client = await RelayClient.connect({ ...options });
  stop.addEventListener("abort", () => client.close(), { once: true });
  const out = Deno.stdout;
  let received = 0;
  while (received < count) {
    const message = await client.receive();
    if (message === undefined) break;
    received++;
    const bytes = values.framed ? encodeFrame(message.from, message.payload) : message.payload;
    for (let at = 0; at < bytes.length;) at += await out.write(bytes.subarray(at));
  }
  if (received >= count || stop.aborted) return 0;
  console.error("relay: the relay closed the connection");
  return 1;
}
