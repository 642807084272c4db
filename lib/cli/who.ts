/**
 * `relay who HOST:PORT [PREFIX]`: prints the names online, one per line.
 * @module
 */

import { ControlRequestError } from "../client/client.ts";
import type { CommandSpec } from "./flag_table.ts";
import { CLIENT_COMMAND_FLAGS, clientOptions, connectClient, parseCommand } from "./common.ts";

const SPEC: CommandSpec = {
  command: "relay who",
  about: "print who is online",
  usage: "relay who HOST:PORT [PREFIX] [options]",
  description:
    "Registers a short-lived name (--name, or who-RANDOM), asks the relay for the names online\n" +
    "(those that begin with PREFIX, when given), prints them one per line, sorted, and exits.\n" +
    "Its own name is left out. A relay started with --listing off refuses (exit 1).",
  flags: [
    {
      name: "name",
      env: "RELAY_NAME",
      type: "string",
      value: "NAME",
      defaultText: "who-RANDOM",
      help: "name to register as while asking (an owned name needs --token-file)",
      group: "Query",
    },
    ...CLIENT_COMMAND_FLAGS,
  ],
  positionals: { min: 1, max: 2 },
  footer: "Example:\n  relay who 127.0.0.1:8080\n  relay who 127.0.0.1:8080 lab-",
};

/** Runs `relay who`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  const name = flags.string("name") ?? `who-${crypto.randomUUID().slice(0, 8)}`;
  const options = await clientOptions(flags, flags.positionals[0], name);
  await using client = await connectClient(options);
  let names: string[];
  try {
    names = await client.who(flags.positionals[1]);
  } catch (error) {
    if (error instanceof ControlRequestError && error.reason === "listing_disabled") {
      console.error("relay: This relay does not list who is online (it runs with --listing off)");
      return 1;
    }
    throw error;
  }
  const lines = names.filter((n) => n !== client.name);
  if (lines.length) console.log(lines.join("\n"));
  return 0;
}
