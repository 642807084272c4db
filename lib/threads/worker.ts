/**
 * The entry of one relay worker (`relay serve --threads N`): a {@linkcode RelayServer} on the
 * shared port (`reusePort`), with a {@linkcode WorkerMesh} for the names of the other workers.
 * It logs through the main thread, answers stats and reloads, and stops when told to.
 *
 * ```
 * start ─► logging → auth file → mesh → RelayServer.listen(reusePort) ─► ready
 * changed ─► mesh.changed(changes)    stats ─► server.stats()     reload ─► cert, auth file
 * close ─► server.close() (grace) → mesh.close() ─► closed ─► self.close()
 * ```
 * @module
 */

import { configure, getLogger, type LogRecord } from "@logtape/logtape";
import type { Mesh } from "../relay/mesh.ts";
import { errorText } from "../util/async.ts";
import { AuthPolicy } from "../relay/auth.ts";
import { AUTH_FAILURES_PER_MINUTE, RelayServer } from "../relay/server.ts";
import { ANNOUNCE_CATEGORY } from "../util/log_category.ts";
import type {
  FromWorker,
  NameChange,
  StartMessage,
  ToWorker,
  WorkerLogRecord,
  WorkerStats,
} from "./messages.ts";
import { clearReply, readReply, writeReply } from "./reply_box.ts";
import { sumStats } from "./sum_stats.ts";
import { type WebRelay, WebServer } from "../web/server.ts";

/**
 * How long name changes made here wait to be told to the other workers together: every message
 * wakes the main thread and each other worker, which cost 46 % more time per registration of
 * 10,000 one after another when sent at once (2 workers on 2 cores); presence events from other
 * workers come this much later.
 */
const CHANGES_BATCH_MS = 5;

/** The crossed counters of a worker in cluster mode (its messages cross through the cluster). */
const NOTHING_CROSSED = { messages: 0, bytes: 0, messageSizes: [] };

/** Longest wait of the web side for the other workers' counters. */
const GATHER_TIMEOUT_MS = 2_000;
import { WorkerMesh } from "./worker_mesh.ts";
import { BridgedConn } from "./conn_bridge.ts";
import { SharedConnectionGate } from "./connection_gate.ts";
import { MAX_CONNECTIONS } from "../limits.ts";
import { SharedIpLimits } from "./ip_table.ts";

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
  const plain = (value: unknown) =>
    value === null || ["string", "number", "boolean", "undefined"].includes(typeof value)
      ? value
      : String(value);
  const properties: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(record.properties)) properties[key] = plain(value);
  return {
    category: record.category,
    level: record.level,
    message: record.message.map(plain),
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
    : message.authPolicy && AuthPolicy.fromSnapshot(message.authPolicy);
  // Names that changed hands here, told to the other workers once per turn of the event loop
  // (one message for a burst of registrations, not one each).
  const changes: NameChange[] = [];
  const flushChanges = () => {
    if (changes.length > 0) post({ type: "changed", changes: changes.splice(0) });
  };
  const hint = (change: NameChange) => {
    if (changes.length === 0) setTimeout(flushChanges, CHANGES_BATCH_MS);
    changes.push(change);
  };
  // The workers share the name table in both modes. Cluster mode: the process is one cluster
  // node (cluster_mesh.ts); worker 0 joins it and the others reach it through worker 0, each
  // listening only once the node has joined, so no client registers a name the cluster has
  // not seen.
  const workers: WorkerMesh | undefined = new WorkerMesh({
    index: message.index,
    table: message.table,
    presenceLog: message.presenceLog,
    peers: new Map(Object.entries(message.peers)),
    hint,
    maxMessageBytes: message.options.maxMessageBytes ?? Infinity,
    ringBytes: message.ringBytes,
    budget: { buffer: message.budget, slot: message.index },
  });
  let mesh: Mesh = workers;
  // Data on its way to or from another worker here (cluster mode: also through the bridges).
  let busy = () => workers.busy;
  if (message.cluster) {
    const { joinThreadCluster } = await import("./cluster_mesh.ts");
    try {
      const joined = await joinThreadCluster({
        index: message.index,
        settings: message.cluster,
        workers,
        gather: message.gather,
        log: getLogger(["relay", "cluster"]),
        bridgeBytes: message.bridgeBytes,
      });
      mesh = joined;
      busy = () => joined.busy;
    } catch (error) {
      await workers.close();
      post({ type: "failed", error: errorText(error), code: "ClusterJoinError" });
      scope.close();
      return;
    }
  }
  let server: RelayServer;
  try {
    server = await RelayServer.listen({
      ...message.options,
      auth,
      mesh,
      reusePort: true,
      sharedMemory: {
        buffer: message.budget,
        slot: message.index,
        reservedBytes: message.reservedBytes,
      },
      connectionGate: new SharedConnectionGate(
        message.connections,
        message.options.maxConnections ?? MAX_CONNECTIONS,
      ),
      ipLimits: new SharedIpLimits(message.ipTable, {
        maxConnectionsPerIp: message.options.maxConnectionsPerIp ?? 0,
        registerRate: message.options.registerRate,
        authFailureRate: message.options.authFailureRate ??
          { limit: AUTH_FAILURES_PER_MINUTE, intervalMs: 60_000 },
      }),
    });
  } catch (error) {
    await mesh.close();
    post({
      type: "failed",
      error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
      code: error instanceof Error ? error.name : undefined,
    });
    scope.close();
    return;
  }
  const workerStats = (): WorkerStats => ({
    relay: server.stats(),
    pairs: workers?.openPairs ?? { sending: 0, receiving: 0 },
    crossed: workers?.crossed ?? NOTHING_CROSSED,
  });
  const index = message.index;
  if (index !== 0) {
    // Worker 0 asks for this worker's counters for the web side, straight over this port.
    const asked = message.gather[0];
    if (asked) asked.onmessage = () => writeReply(message.webBoxes[index], workerStats());
  }
  let web: WebServer | undefined;
  if (message.web) {
    try {
      web = await startWeb(message, server, workerStats);
    } catch (error) {
      await server.close();
      await mesh.close();
      post({
        type: "failed",
        error: `web: ${error instanceof Error ? `${error.name}: ${error.message}` : error}`,
        code: error instanceof Error ? error.name : undefined,
      });
      scope.close();
      return;
    }
    post({
      type: "webReady",
      scheme: message.web.tls ? "https" : "http",
      hostname: web.hostname,
      port: web.port,
    });
  }
  scope.onmessage = (event) => {
    const m = event.data;
    switch (m.type) {
      case "changed":
        workers?.changed(m.changes);
        return;
      case "quiet":
        post({
          type: "quiet",
          id: m.id,
          quiet: server.stats().queuedBytes === 0 && !busy(),
        });
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
        reload(server, web, auth, m).then(
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
      case "serve":
        server.serve(new BridgedConn(m.port, m.remoteAddr));
        return;
      case "stopAccepting":
        server.stopAccepting();
        return;
      case "crash":
        setTimeout(() => {
          throw new Error("Crash asked for by a test");
        });
        return;
      case "close":
        scope.onmessage = null;
        (web?.close() ?? Promise.resolve()).then(() => server.close()).then(() => mesh.close())
          .finally(() => {
            flushChanges(); // the names freed on the way out, before this worker is gone
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
  web: WebServer | undefined,
  auth: AuthPolicy | undefined,
  m: Extract<ToWorker, { type: "reload" }>,
): Promise<number | undefined> {
  if (m.tls) await server.setCertificate(m.tls);
  if (m.tls && web) await web.setCertificate(m.tls);
  return m.auth && auth ? await auth.reload() : undefined;
}

/**
 * Worker 0's HTTP side: its own server for `/ws`, names from the shared table (through the
 * server's mesh), and counters of every worker, gathered when asked (each other worker writes
 * its own into its box; this thread waits for them, at most `GATHER_TIMEOUT_MS`).
 */
function startWeb(
  message: StartMessage,
  server: RelayServer,
  own: () => WorkerStats,
): Promise<WebServer> {
  const others = Object.entries(message.gather).map(([j, port]) => ({
    port,
    box: message.webBoxes[Number(j)],
  }));
  const slots = new BigInt64Array(message.budget);
  const relay: WebRelay = {
    stats: () => {
      for (const { box, port } of others) {
        clearReply(box);
        port.postMessage("stats");
      }
      const deadline = performance.now() + GATHER_TIMEOUT_MS;
      const all = [own(), ...others.map(({ box }) => readReply<WorkerStats>(box, deadline))];
      let used = 0;
      for (let at = 0; at < slots.length; at += 8) used += Number(Atomics.load(slots, at));
      return sumStats(all, used, message.cluster !== undefined);
    },
    names: (prefix, limit) => server.names(prefix, limit),
    namesPage: (request) => server.namesPage(request),
    serve: (conn) => server.serve(conn),
  };
  return WebServer.listen({ ...message.web!, relay });
}

scope.onmessage = (event) => {
  const m = event.data;
  if (m.type !== "start") return;
  scope.onmessage = null;
  start(m).catch((error) => {
    post({ type: "failed", error: error instanceof Error ? error.message : String(error) });
    scope.close();
  });
};
