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
  parsePort,
  sizeFlag,
  stringFlag,
  UsageError,
} from "./flags.ts";
import { AuthPolicy } from "../relay/auth.ts";
import {
  DEFAULT_PORT,
  IDLE_TIMEOUT_MS,
  MAX_BUFFER_BYTES,
  MAX_CONNECTIONS,
  MAX_MESSAGE_BYTES,
  REGISTER_TIMEOUT_MS,
  WRITE_TIMEOUT_MS,
} from "../limits.ts";
import { setupLogging } from "./log.ts";
import { type Rate, RelayServer } from "../relay/server.ts";
import { LOG_FLAGS, onShutdownSignal, parseCommand } from "./common.ts";

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

TLS and names (reloaded on SIGHUP):
  --tls-cert FILE           serve TLS with this certificate chain, PEM (RELAY_TLS_CERT)
  --tls-key FILE            private key of --tls-cert, PEM (RELAY_TLS_KEY)
  --tls-port PORT           serve TLS on this port and keep --port plaintext (RELAY_TLS_PORT)
  --auth-file FILE          JSON of owned names and token hashes (RELAY_AUTH_FILE);
                            see 'relay hash-token'
  --require-auth            only names in --auth-file may register (RELAY_REQUIRE_AUTH)

Limits for a public instance (0 or absent: no limit):
  --max-connections-per-ip N  connections open at once from one IP (RELAY_MAX_CONNECTIONS_PER_IP)
  --register-rate N/s|N/m   registrations per IP (RELAY_REGISTER_RATE), e.g. 10/s
  --bandwidth SIZE          bytes per second one client may send (RELAY_BANDWIDTH), e.g. 1MiB
  --log-level LEVEL         trace, debug, info, warning, error (RELAY_LOG_LEVEL) [info]
  --log-format text|json    log line format (RELAY_LOG_FORMAT) [text]
  -h, --help                show this help

Durations: 500ms, 3s, 2m, or plain seconds (a timeout of 0 turns it off). Sizes: 64KiB,
16MiB, or bytes.`;

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
  "tls-cert": { type: "string", env: "RELAY_TLS_CERT" },
  "tls-key": { type: "string", env: "RELAY_TLS_KEY" },
  "tls-port": { type: "string", env: "RELAY_TLS_PORT" },
  "auth-file": { type: "string", env: "RELAY_AUTH_FILE" },
  "require-auth": { type: "boolean", env: "RELAY_REQUIRE_AUTH" },
  "max-connections-per-ip": { type: "string", env: "RELAY_MAX_CONNECTIONS_PER_IP" },
  "register-rate": { type: "string", env: "RELAY_REGISTER_RATE" },
  bandwidth: { type: "string", env: "RELAY_BANDWIDTH" },
  ...LOG_FLAGS,
  help: { type: "boolean", short: "h" },
};

/** Runs `relay serve` with `args`; resolves to the exit code once the server has stopped. */
export async function main(args: string[]): Promise<number> {
  const parsed = parseCommand(args, HELP, FLAGS);
  if (!parsed) return 0;
  const { values } = parsed;
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
    maxConnectionsPerIp: integerFlag(values, "max-connections-per-ip", 0),
    registerRate: rateFlag(stringFlag(values, "register-rate")),
    bandwidthBytesPerSecond: sizeFlag(values, "bandwidth", 0),
  };
  const certFile = stringFlag(values, "tls-cert");
  const keyFile = stringFlag(values, "tls-key");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new UsageError("--tls-cert and --tls-key go together");
  }
  const tlsPortText = stringFlag(values, "tls-port");
  if (tlsPortText !== undefined && certFile === undefined) {
    throw new UsageError("--tls-port needs --tls-cert and --tls-key");
  }
  const authFile = stringFlag(values, "auth-file");
  if (values["require-auth"] === true && authFile === undefined) {
    throw new UsageError("--require-auth needs --auth-file");
  }
  const readTls = async () =>
    certFile === undefined ? undefined : {
      cert: await readFileFor("--tls-cert", certFile),
      key: await readFileFor("--tls-key", keyFile!),
    };
  let auth: AuthPolicy | undefined;
  if (authFile !== undefined) {
    try {
      auth = await AuthPolicy.load(authFile, { requireAuth: values["require-auth"] === true });
    } catch (error) {
      throw new UsageError(`Invalid --auth-file: ${(error as Error).message}`);
    }
  }
  await setupLogging({
    level: stringFlag(values, "log-level"),
    format: stringFlag(values, "log-format"),
  });
  const log = getLogger(["relay", "serve"]);
  await using server = await RelayServer.listen({
    ...options,
    tls: await readTls(),
    tlsPort: tlsPortText === undefined ? undefined : parsePort(tlsPortText, "--tls-port"),
    auth,
  });
  if (auth) log.info("Auth file {file}: {count} owned names", { file: authFile, count: auth.size });
  const reload = async () => {
    log.info("SIGHUP: reloading the TLS certificate and the auth file");
    try {
      const tls = await readTls();
      if (tls) await server.setCertificate(tls);
      if (auth) log.info("Auth file reloaded: {count} owned names", { count: await auth.reload() });
    } catch (error) {
      log.error("Reload failed, the old settings stay in force: {error}", {
        error: (error as Error).message,
      });
    }
  };
  const onHangup = () => void reload();
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", onHangup);
  const signal = onShutdownSignal();
  await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
  log.info("Shutting down");
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGHUP", onHangup);
  await server.close();
  return 0;
}

/**
 * Parses `--register-rate`: `N/s`, `N/m` or plain N per second.
 * @throws {UsageError} on anything else
 */
function rateFlag(text: string | undefined): Rate | undefined {
  if (text === undefined) return undefined;
  const match = /^(\d+)(?:\/(s|m))?$/.exec(text.trim());
  if (!match || Number(match[1]) === 0) {
    throw new UsageError(
      `Invalid --register-rate ${JSON.stringify(text)}: expected N/s or N/m, e.g. 10/s`,
    );
  }
  return { limit: Number(match[1]), intervalMs: match[2] === "m" ? 60_000 : 1_000 };
}

async function readFileFor(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`Cannot read ${flag} ${path}: ${(error as Error).message}`);
  }
}
