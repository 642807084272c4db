/**
 * The entry of one relay worker (`relay serve --threads N`): a {@linkcode RelayServer} on the
 * shared port (`reusePort`), with a {@linkcode WorkerMesh} for the names of the other workers.
 * It logs through the main thread, answers stats and reloads, and stops when told to.
 *
 * ```
 * start ─► logging → auth file → mesh → RelayServer.listen(reusePort) ─► ready
 * changed ─► mesh.changed(name)     stats ─► server.stats()     reload ─► cert, auth file
 * close ─► server.close() (grace) → mesh.close() ─► closed ─► self.close()
 * ```
 * @module
 */

import { configure, type LogRecord } from "@logtape/logtape";
import { AuthPolicy } from "../relay/auth.ts";
import { RelayServer } from "../relay/server.ts";
import { ANNOUNCE_CATEGORY } from "../util/log_category.ts";
import type {
  FromWorker,
  StartMessage,
  ToWorker,
  WorkerLogRecord,
  WorkerStats,
} from "./messages.ts";
import { writeReply } from "./reply_box.ts";
import { WorkerMesh } from "./worker_mesh.ts";
import { SharedConnectionGate } from "./connection_gate.ts";
import { MAX_CONNECTIONS } from "../limits.ts";

const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker): void;
  close(): void;
};

function post(message: FromWorker): void {
  scope.postMessage(message);
}

/** A record as plain data: values that cannot be cloned are sent as text. */
function plainRecord(record: LogRecord): WorkerLogRecord {
  const properties: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record.properties)) {
    properties[key] = value === null || ["string", "number", "boolean", "undefined"].includes(
        typeof value,
      )
      ? value
      : String(value);
  }
  return {
    category: record.category,
    level: record.level,
    rawMessage: typeof record.rawMessage === "string"
      ? record.rawMessage
      : record.rawMessage.join("{}"),
    properties,
    timestamp: record.timestamp,
  };
}

async function start(message: StartMessage): Promise<void> {
  const level = message.logLevel as LogRecord["level"];
  await configure({
    reset: true,
    sinks: { main: (record) => post({ type: "log", record: plainRecord(record) }) },
    loggers: [
      { category: ["relay"], lowestLevel: level, sinks: ["main"] },
      // The main thread says once where the relay listens; workers do not repeat it.
      { category: ANNOUNCE_CATEGORY, sinks: [], parentSinks: "override" },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
  const auth = message.auth
    ? await AuthPolicy.load(message.auth.path, { requireAuth: message.auth.requireAuth })
    : undefined;
  const mesh = new WorkerMesh({
    index: message.index,
    table: message.table,
    peers: new Map(Object.entries(message.peers)),
    hint: (name) => post({ type: "changed", name }),
    maxMessageBytes: message.options.maxMessageBytes ?? Infinity,
  });
  let server: RelayServer;
  try {
    server = await RelayServer.listen({
      ...message.options,
      auth,
      mesh,
      reusePort: true,
      sharedMemory: { buffer: message.budget, slot: message.index },
      connectionGate: new SharedConnectionGate(
        message.connections,
        message.options.maxConnections ?? MAX_CONNECTIONS,
      ),
    });
  } catch (error) {
    await mesh.close();
    post({
      type: "failed",
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
      code: error instanceof Error ? error.name : undefined,
    });
    return;
  }
  const workerStats = (): WorkerStats => ({
    relay: server.stats(),
    pairs: mesh.openPairs,
    crossed: mesh.crossed,
  });
  scope.onmessage = (event) => {
    const m = event.data;
    switch (m.type) {
      case "changed":
        mesh.changed(m.name);
        return;
      case "quiet":
        post({ type: "quiet", id: m.id, quiet: server.stats().queuedBytes === 0 && !mesh.busy });
        return;
      case "statsNow":
        writeReply(message.replyBox, workerStats());
        return;
      case "stats":
        post({
          type: "stats",
          id: m.id,
          stats: workerStats(),
        });
        return;
      case "reload":
        reload(server, auth, m).then(
          (authNames) => post({ type: "reloaded", id: m.id, authNames }),
          (error) =>
            post({
              type: "reloaded",
              id: m.id,
              error: (error as Error).message,
              errorName: (error as Error).name,
            }),
        );
        return;
      case "close":
        scope.onmessage = null;
        server.close().then(() => mesh.close()).finally(() => {
          post({ type: "closed" });
          scope.close();
        });
        return;
    }
  };
  post({ type: "ready", port: server.port, tlsPort: server.tlsPort });
}

async function reload(
  server: RelayServer,
  auth: AuthPolicy | undefined,
  m: Extract<ToWorker, { type: "reload" }>,
): Promise<number | undefined> {
  if (m.tls) await server.setCertificate(m.tls);
  return m.auth && auth ? await auth.reload() : undefined;
}

scope.onmessage = (event) => {
  const m = event.data;
  if (m.type !== "start") return;
  scope.onmessage = null;
  start(m).catch((error) => {
    post({ type: "failed", error: error instanceof Error ? error.message : String(error) });
  });
};
