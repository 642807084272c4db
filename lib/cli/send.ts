/**
 * `relay send`: sends one message, read from a file or stdin, then exits.
 * @module
 */

import { RelayClient } from "../client/client.ts";
import { UsageError } from "./flags.ts";
import { MAX_MESSAGE_BYTES } from "../limits.ts";
import {
  CLIENT_FLAGS,
  CLIENT_FLAGS_HELP,
  clientOptions,
  encodeNameOrUsage,
  parseCommand,
  readAllLimited,
} from "./common.ts";

const HELP = `relay send: send one message from a file or stdin

Usage: relay send HOST:PORT --from NAME --to DEST [FILE|-]

Reads FILE (or stdin when FILE is - or absent), registers as NAME, sends the bytes to DEST
as one message (at most 16 MiB), and exits once they are written.

Options:
  --from NAME               name to register as (RELAY_NAME)
  --to DEST                 name of the receiver
${CLIENT_FLAGS_HELP}

Example:
  echo hello | relay send 127.0.0.1:8080 --from alice --to bob`;

/** Runs `relay send`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseCommand(args, HELP, {
    ...CLIENT_FLAGS,
    from: { type: "string", env: "RELAY_NAME" },
    to: { type: "string" },
  }, { min: 1, max: 2 });
  if (!parsed) return 0;
  const { values, positionals } = parsed;
  const from = values.from as string | undefined;
  const to = values.to as string | undefined;
  if (from === undefined) throw new UsageError("Missing --from NAME");
  if (to === undefined) throw new UsageError("Missing --to DEST");
  encodeNameOrUsage(to);
  const options = await clientOptions(values, positionals[0], from);
  const payload = await readAllLimited(positionals[1] ?? "-", MAX_MESSAGE_BYTES);
  await using client = await RelayClient.connect(options);
  await client.send(to, payload);
  return 0;
}
