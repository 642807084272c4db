/**
 * `relay serve`: runs a relay server until SIGINT or SIGTERM.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  choiceFlag,
  durationFlag,
  type FlagSpec,
  integerFlag,
  parseFlags,
  parsePort,
  sizeFlag,
  stringFlag,
} from "../config.ts";
import {
  DEFAULT_PORT,
  IDLE_TIMEOUT_MS,
  MAX_BUFFER_BYTES,
  MAX_CONNECTIONS,
  MAX_MESSAGE_BYTES,
  REGISTER_TIMEOUT_MS,
  WRITE_TIMEOUT_MS,
} from "../limits.ts";
import { setupLogging } from "../log.ts";
import { RelayServer } from "../server.ts";
import { LOG_FLAGS, onShutdownSignal, wantsHelp } from "./common.ts";

/** Time queued data gets to go out on SIGINT/SIGTERM before connections are closed. */
const SHUTDOWN_GRACE_MS = 2_000;

const HELP = `relay serve: run the relay server

Usage: relay serve [options]

Options (each also from the environment variable shown; the flag wins):
  --host HOST               address to listen on (RELAY_HOST) [0.0.0.0]
  --port PORT               TCP port, 0 for any free port (RELAY_PORT) [${DEFAULT_PORT}]
  --register-timeout DUR    time to send the name (RELAY_REGISTER_TIMEOUT) [${
  REGISTER_TIMEOUT_MS / 1000
}s]
  --idle-timeout DUR        drop clients silent this long (RELAY_IDLE_TIMEOUT) [${
  IDLE_TIMEOUT_MS / 1000
}s]
  --write-timeout DUR       drop receivers stuck this long (RELAY_WRITE_TIMEOUT) [${
  WRITE_TIMEOUT_MS / 1000
}s]
  --max-message SIZE        largest message payload (RELAY_MAX_MESSAGE) [16MiB]
  --max-buffer SIZE         bytes queued per receiver before senders wait (RELAY_MAX_BUFFER) [8MiB]
  --max-connections N       connections open at once (RELAY_MAX_CONNECTIONS) [${MAX_CONNECTIONS}]
  --deliver framed|payload  deliver "sender|len|payload" or the payload only (RELAY_DELIVER) [framed]
  --log-level LEVEL         trace, debug, info, warning, error (RELAY_LOG_LEVEL) [info]
  --log-format text|json    log line format (RELAY_LOG_FORMAT) [text]
  -h, --help                show this help

Durations: 500ms, 3s, 2m, or plain seconds. Sizes: 64KiB, 16MiB, or bytes.`;

const FLAGS: Record<string, FlagSpec> = {
  host: { type: "string", env: "RELAY_HOST" },
  port: { type: "string", env: "RELAY_PORT" },
  "register-timeout": { type: "string", env: "RELAY_REGISTER_TIMEOUT" },
  "idle-timeout": { type: "string", env: "RELAY_IDLE_TIMEOUT" },
  "write-timeout": { type: "string", env: "RELAY_WRITE_TIMEOUT" },
  "max-message": { type: "string", env: "RELAY_MAX_MESSAGE" },
  "max-buffer": { type: "string", env: "RELAY_MAX_BUFFER" },
  "max-connections": { type: "string", env: "RELAY_MAX_CONNECTIONS" },
  deliver: { type: "string", env: "RELAY_DELIVER" },
  ...LOG_FLAGS,
  help: { type: "boolean", short: "h" },
};

/** Runs `relay serve` with `args`; resolves to the exit code once the server has stopped. */
export async function main(args: string[]): Promise<number> {
  if (wantsHelp(args)) {
    console.log(HELP);
    return 0;
  }
  const { values } = parseFlags(args, FLAGS);
  const port = values.port === undefined
    ? DEFAULT_PORT
    : parsePort(stringFlag(values, "port")!, "--port");
  const options = {
    hostname: stringFlag(values, "host") ?? "0.0.0.0",
    port,
    registerTimeoutMs: durationFlag(values, "register-timeout", REGISTER_TIMEOUT_MS),
    idleTimeoutMs: durationFlag(values, "idle-timeout", IDLE_TIMEOUT_MS),
    writeTimeoutMs: durationFlag(values, "write-timeout", WRITE_TIMEOUT_MS),
    maxMessageBytes: sizeFlag(values, "max-message", MAX_MESSAGE_BYTES),
    maxBufferBytes: sizeFlag(values, "max-buffer", MAX_BUFFER_BYTES),
    maxConnections: integerFlag(values, "max-connections", MAX_CONNECTIONS),
    deliver: choiceFlag(values, "deliver", ["framed", "payload"] as const, "framed"),
    shutdownGraceMs: SHUTDOWN_GRACE_MS,
  };
  await setupLogging({
    level: stringFlag(values, "log-level"),
    format: stringFlag(values, "log-format"),
  });
  const log = getLogger(["relay", "serve"]);
  await using server = await RelayServer.listen(options);
  const signal = onShutdownSignal();
  await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
  log.info("Shutting down");
  await server.close();
  return 0;
}
