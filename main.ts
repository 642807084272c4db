/**
 * relay: a named TCP relay and tunnel. This file only picks the command and hands off.
 * @module
 */

import { UsageError } from "./lib/cli/flags.ts";
import { VERSION } from "./lib/version.ts";

const COMMANDS: Record<string, { about: string; load: () => Promise<CommandModule> }> = {
  serve: { about: "run the relay server", load: () => import("./lib/cli/serve.ts") },
  connect: {
    about: "interactive client: type 'DEST message', see 'sender: message'",
    load: () => import("./lib/cli/connect.ts"),
  },
  send: { about: "send one message from a file or stdin", load: () => import("./lib/cli/send.ts") },
  listen: {
    about: "write each incoming message to stdout",
    load: () => import("./lib/cli/listen.ts"),
  },
  who: {
    about: "print who is online, optionally only names with a prefix",
    load: () => import("./lib/cli/who.ts"),
  },
  tunnel: {
    about: "carry TCP services through the relay (expose, forward, stdio)",
    load: () => import("./lib/cli/tunnel.ts"),
  },
  cert: {
    about: "write a self-signed TLS certificate and key that clients accept with --ca",
    load: () => import("./lib/cli/cert.ts"),
  },
  "hash-token": {
    about: "print the SHA-256 of a name token for --auth-file",
    load: () => import("./lib/cli/hash_token.ts"),
  },
};

interface CommandModule {
  main(args: string[]): Promise<number>;
}

const HELP = `relay ${VERSION}: a named TCP relay and tunnel

Usage: relay <command> [options]

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(11)} ${c.about}`).join("\n")}

Run 'relay <command> --help' for a command's options; 'relay --version' for the version.
Exit codes: 0 success (also when Ctrl-C or SIGTERM stops a command), 1 a runtime failure,
2 bad usage (a bad flag, value, variable or argument).`;

/** Runs the CLI with `args` and returns the process exit code. */
export async function run(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    console.log(HELP);
    return command === undefined ? 2 : 0;
  }
  if (command === "--version" || command === "-V" || command === "version") {
    console.log(`relay ${VERSION}`);
    return 0;
  }
  const entry = COMMANDS[command];
  try {
    if (!entry) throw new UsageError(`Unknown command ${JSON.stringify(command)}`);
    const module = await entry.load();
    return await module.main(rest);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`relay: ${error.message} (see 'relay ${entry ? command + " " : ""}--help')`);
      return 2;
    }
    console.error(`relay: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
}

if (import.meta.main) {
  Deno.exit(await run(Deno.args));
}
