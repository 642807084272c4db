/**
 * `relay send`: sends one message, read from a file or stdin, then exits.
 * @module
 */

import { UsageError } from "./flags.ts";
import type { CommandSpec } from "./flag_table.ts";
import { deliveryText } from "./connect_session.ts";
import { quoteName } from "./line.ts";
import {
  checkName,
  checkReadable,
  CLIENT_COMMAND_FLAGS,
  clientOptions,
  connectClient,
  parseCommand,
  readAllLimited,
} from "./common.ts";

const SPEC: CommandSpec = {
  command: "relay send",
  about: "send one message from a file or stdin",
  usage: "relay send HOST:PORT --from NAME --to DEST [FILE|-]",
  description:
    "Reads FILE (or stdin when FILE is - or absent), registers as NAME, sends the bytes to DEST\n" +
    "as one message (at most the relay's --max-message), and waits until the relay has routed\n" +
    "it. Exits 0 when it reached DEST; 1 when DEST is offline or the relay refused NAME (the\n" +
    "message says which); 2 when the input is empty or over the relay's limit (nothing is sent).",
  flags: [
    {
      name: "from",
      env: "RELAY_NAME",
      type: "string",
      value: "NAME",
      help: "name to register as",
      group: "Message",
    },
    { name: "to", type: "string", value: "DEST", help: "name of the receiver", group: "Message" },
    ...CLIENT_COMMAND_FLAGS,
  ],
  positionals: { min: 1, max: 2 },
  footer: "Example:\n  echo hello | relay send 127.0.0.1:8080 --from alice --to bob",
};

/** Runs `relay send`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  const from = flags.string("from");
  const to = flags.string("to");
  if (from === undefined) throw new UsageError("Missing --from NAME");
  if (to === undefined) throw new UsageError("Missing --to DEST");
  checkName(to, flags.label("to"));
  checkName(from, flags.label("from"));
  const path = flags.positionals[1] ?? "-";
  if (path !== "-") await checkReadable(path);
  const options = await clientOptions(flags, flags.positionals[0], from);
  await using client = await connectClient(options);
  // The relay says its limit in the welcome; no fixed cap of this client's own.
  const payload = await readAllLimited(path, client.maxMessageBytes, "the relay's message limit");
  if (payload.length === 0) {
    // A zero-length frame is a keepalive: the relay never forwards it, so "sent" would be a lie.
    throw new UsageError(
      `Nothing to send: ${path === "-" ? "stdin" : path} is empty ` +
        "(a zero-length message is a keepalive and is never delivered)",
    );
  }
  await client.send(to, payload);
  const { dropped, errors } = await client.flush();
  if (dropped > 0 || errors.length > 0) {
    const error = errors.find((e) => e.dest === to) ?? errors[0];
    console.error(
      `relay: ${
        error ? deliveryText(error) : `Not delivered to ${quoteName(to)}: nobody has that name`
      }`,
    );
    return 1;
  }
  return 0;
}
