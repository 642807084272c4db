/**
 * `relay connect`: an interactive client. Type `DEST message` to send; incoming messages are
 * shown as `sender: message` above the line being typed. `/who`, `/watch`, `/ping` and `/quit`
 * talk to the relay; delivery errors and a lost connection are shown as notices, and the
 * client reconnects. With stdin not a terminal it sends one message per input line, so it can
 * be scripted.
 * @module
 */

import type { RelayClient } from "../client/client.ts";
import { formatDuration } from "./flags.ts";
import type { CommandSpec } from "./flag_table.ts";
import { MAX_MESSAGE_BYTES } from "../limits.ts";
import { quoteName, readLines } from "./line.ts";
import { COMMANDS_HELP, type Screen, Session } from "./connect_session.ts";
import { type EndOfInput, LineEditor, processTerminal } from "./line_editor.ts";
import {
  CLIENT_COMMAND_FLAGS,
  clientOptions,
  connectUnlessStopped,
  onShutdownSignal,
  parseCommand,
} from "./common.ts";

const DEFAULT_LINGER_MS = 1_000;
const SPEC: CommandSpec = {
  command: "relay connect",
  about: "an interactive relay client",
  usage: "relay connect HOST:PORT NAME [options]",
  description:
    `Registers NAME. Each line you type, "DEST message", sends "message" to DEST; messages that
arrive are shown as "sender: message" above the line you are typing (control characters
escaped, binary as hex). A name with spaces goes in double quotes: "my laptop" hello (\\" and
\\\\ inside the quotes). Arrow keys edit the line and recall earlier ones. Messages that reach
nobody, and a lost connection, are shown as notices; the client then reconnects.

${COMMANDS_HELP}

When stdin is not a terminal every input line is handled the same way (commands print to
stdout); at the end of input the client waits --linger for replies, then exits: 0 when every
message was delivered, 1 when one was not or a line was bad. Ctrl-C or Ctrl-D quits (exit 0).`,
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
  > "my laptop" hi there
  > /who`,
};

/** Runs `relay connect`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  const positionals = flags.positionals;
  const lingerMs = flags.duration("linger")!;
  const options = await clientOptions(flags, positionals[0], positionals[1]);
  const interactive = Deno.stdin.isTerminal() && Deno.stdout.isTerminal();
  using stop = onShutdownSignal();
  const first = await connectUnlessStopped(options, stop);
  if (!first) return 0;
  if (!interactive) return await piped(first, stop, lingerMs);
  using editor = new LineEditor(processTerminal(), "> ");
  const screen: Screen = {
    out: (text) => editor.print(text),
    notice: (text) => editor.print(`* ${text}`),
  };
  screen.notice(
    `Connected to ${positionals[0]} as ${quoteName(first.name)}. Type "DEST message" to ` +
      "send, /help for commands; Ctrl-D quits.",
  );
  const session = new Session(first, options, screen, stop, (online) => {
    editor.prompt = online ? "> " : "(offline) > ";
  });
  const stopped = new Promise<EndOfInput>((resolve) => {
    if (stop.aborted) resolve("interrupt");
    stop.addEventListener("abort", () => resolve("interrupt"), { once: true });
  });
  for (;;) {
    const line = await Promise.race([editor.next(), stopped, session.failed]);
    if (line === "eof" || line === "interrupt") break;
    if (typeof line !== "string") {
      screen.notice(line.message);
      await session.close();
      return 1;
    }
    if (!await session.handle(line)) break;
  }
  await session.close();
  return 0;
}

/** Piped input: one line each, then linger for replies; exit 1 if something went wrong. */
async function piped(client: RelayClient, stop: AbortSignal, lingerMs: number): Promise<number> {
  const screen: Screen = {
    out: (text) => console.log(text),
    notice: (text) => console.error(`relay: ${text}`),
  };
  const session = new Session(client, undefined, screen, stop);
  const stopped = new Promise<undefined>((resolve) => {
    if (stop.aborted) resolve(undefined);
    stop.addEventListener("abort", () => resolve(undefined), { once: true });
  });
  const input = readLines(Deno.stdin.readable, MAX_MESSAGE_BYTES);
  let ok = true;
  for (;;) {
    // A pending stdin read cannot be cancelled; on Ctrl-C stop waiting for it (main.ts exits).
    const next = await Promise.race([input.next(), stopped, session.failed]);
    if (next === undefined) {
      await session.close();
      return 0;
    }
    if ("message" in next) {
      screen.notice(next.message);
      await session.close();
      return 1;
    }
    if (next.done) break;
    if (next.value === undefined) {
      screen.notice(`line longer than ${MAX_MESSAGE_BYTES} bytes skipped`);
      ok = false;
      continue;
    }
    const result = await session.handle(next.value);
    if (result === false) break;
    if (result === "bad") ok = false;
  }
  if (!await session.settle()) ok = false;
  if (lingerMs > 0 && !stop.aborted) {
    await Promise.race([
      session.failed,
      stopped,
      new Promise((r) => setTimeout(r, lingerMs)),
    ]);
  }
  await session.close();
  return ok ? 0 : 1;
}
