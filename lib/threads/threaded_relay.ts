/**
 * One relay on every core (`relay serve --threads N`): the main thread starts N module workers,
 * each a {@linkcode RelayServer} listening on the same port with `reusePort` (the kernel spreads
 * new connections over them; TCP and TLS alike), each owning its connections. The main thread
 * holds no connection: it picks the port, shares the name table and the memory budget
 * (`SharedArrayBuffer`s), wires a MessagePort between every two workers, passes name changes on,
 * writes the workers' log records, gathers their counters, forwards reloads, and stops them.
 *
 * ```
 *             ┌─ worker w0: RelayServer(reusePort) + WorkerMesh ─┐
 * :8080 ──────┼─ worker w1: …                                    ┼── MessagePorts (pairs)
 *  (kernel)   └─ worker w2: …                                    ┘
 * shared      name table (one namespace) · memory budget slots
 * main        start · name changes · logs · stats · SIGHUP reload · stop · crash = stop loudly
 * ```
 *
 * A worker that fails (an uncaught error) is not restarted: its connections and the pairs to it
 * are gone, so the relay stops with an error (the main thread logs it and
 * {@linkcode ThreadedRelay.failed} settles) and the process supervisor restarts it whole,
 * rather than carry on as a silent half-relay.
 * @module
 */

import { getLogger, type Logger } from "@logtape/logtape";
import type { RelayServerOptions, RelayStats, TlsCertificate } from "../relay/server.ts";
import {
  BRIDGE_BUDGET_SHARE,
  DEFAULT_PORT,
  MAX_CONNECTIONS,
  MAX_MEMORY_BYTES,
  MAX_TRACKED_IPS,
  MAX_WHO_LIMIT,
} from "../limits.ts";
import { ANNOUNCE_CATEGORY } from "../util/log_category.ts";
import { sharedBudgetBuffer, sharedUsedBytes } from "../relay/memory_budget.ts";
import { type MemoryPlan, planMemory } from "./memory_plan.ts";
import type { FromWorker, StartMessage, WorkerServerOptions, WorkerStats } from "./messages.ts";
import { NameTable } from "./name_table.ts";
import { PresenceLog } from "./presence_log.ts";
import { type Bridge, bridgeConn } from "./conn_bridge.ts";
import type { RelayConn } from "../relay/connection.ts";
import { Directory, type Page, type PageRequest } from "../relay/directory.ts";
import { workerNode } from "./worker_mesh.ts";
import { clearReply, readReply, replyBox } from "./reply_box.ts";
import { sumStats } from "./sum_stats.ts";
import type { WebServerOptions } from "../web/server.ts";
import { connectionGateBuffer } from "./connection_gate.ts";
import { SharedIpLimits } from "./ip_table.ts";
import { sleep, waitAtMost } from "../util/async.ts";
import type { AuthPolicy } from "../relay/auth.ts";
import type { ClusterSettings } from "../cluster/join.ts";

/**
 * Time a worker has to listen and say so: generous, because under `deno test` (which
 * type-checks what a worker loads) the first worker of a run took over 10 s on this machine.
 */
const WORKER_START_TIMEOUT_MS = 60_000;
/** Time a worker has to answer a stats or reload request. */
const WORKER_REPLY_TIMEOUT_MS = 5_000;
/** Consecutive quiet answers that end the wait for data between workers at shutdown. */
const SETTLE_QUIET_ROUNDS = 3;
/** Pause between two shutdown quiet checks while data is still moving. */
const SETTLE_POLL_MS = 10;
/** Time a worker has to stop after its shutdown grace, before it is terminated. */
const WORKER_STOP_MARGIN_MS = 5_000;

/** Options of {@linkcode ThreadedRelay.listen}. */
export interface ThreadedRelayOptions extends Omit<RelayServerOptions, "sharedMemory"> {
  /** Workers to start (at least 1). */
  threads: number;
  /** The HTTP side (`--http-port`), served by the first worker for the whole relay. */
  web?: Omit<WebServerOptions, "relay">;
  /** The auth file each worker loads (`--auth-file`), and whether names must be in it. */
  authFile?: { path: string; requireAuth: boolean };
  /**
   * An auth policy already loaded (or from memory): each worker rebuilds it from its snapshot
   * (`AuthPolicy.snapshot`); `reload({ auth: true })` re-reads its file in every worker.
   * `authFile` wins when both are given.
   */
  auth?: AuthPolicy;
  /**
   * Cluster mode (`--cluster` with `--threads N`): the process is one cluster node; worker 0
   * joins it and the others reach the cluster through worker 0, while a name on another worker
   * is reached through the rings as without a cluster (lib/threads/cluster_mesh.ts,
   * docs/CLUSTER.md "Threads").
   */
  cluster?: ClusterSettings;
  /**
   * Lowest level of the workers' log records.
   * @default {"info"}
   */
  logLevel?: string;
}

/** Counters of a multi-threaded relay: the sum over its workers, and each worker's. */
export interface ThreadedStats extends RelayStats {
  /** Each worker's own counters, by index. */
  workers: WorkerStats[];
}

interface Pending {
  resolve(message: FromWorker): void;
  reject(error: Error): void;
}

/** A relay that runs on N worker threads and looks like one. */
export class ThreadedRelay implements AsyncDisposable {
  /** Workers running. */
  readonly threads: number;
  /** The port of the plaintext listener, or of the TLS one when TLS is all it serves. */
  readonly port: number;
  /** The port of the TLS listener, if any. */
  readonly tlsPort: number | undefined;
  /** The address the relay listens on. */
  readonly hostname: string;
  /** Settles with the error of the first worker that failed (the relay then stops). */
  readonly failed: Promise<Error>;
  readonly #workers: Worker[];
  readonly #boxes: SharedArrayBuffer[] = [];
  readonly #webBoxes: SharedArrayBuffer[] = [];
  readonly #directory: Directory;
  #directoryGeneration = -1;
  readonly #table: NameTable;
  readonly #budget: BigInt64Array;
  readonly #budgetBytes: number;
  /** The rings' size and the part of the budget set aside for them. */
  #plan: MemoryPlan = { rings: 0, ringBytes: 0, reservedBytes: 0 };
  /** Cluster mode: what worker 0's bridges may hold (part of the plan's reserved bytes). */
  #bridgeBytes: number | undefined;
  readonly #graceMs: number;
  readonly #auth: AuthPolicy | undefined;
  readonly #log: Logger = getLogger(["relay", "threads"]);
  readonly #pending = new Map<number, Pending>();
  readonly #closed: Promise<void>[] = [];
  /** Connections handed over by `serve`, bridged to a worker, with the worker's index. */
  readonly #bridges = new Map<Bridge, number>();
  /** Bridged connections open on each worker (`serve` picks the worker with fewest). */
  #bridged: number[] = [];
  #nextBridge = 0;
  #nextId = 1;
  #fail!: (error: Error) => void;
  #closing: Promise<void> | undefined;

  private constructor(
    options: ThreadedRelayOptions,
    ports: { port: number; tlsPort?: number },
    table: NameTable,
    budget: SharedArrayBuffer,
  ) {
    this.threads = options.threads;
    this.port = ports.port;
    this.tlsPort = ports.tlsPort;
    this.hostname = options.hostname ?? "0.0.0.0";
    this.#table = table;
    this.#budget = new BigInt64Array(budget);
    this.#budgetBytes = options.maxMemoryBytes ?? MAX_MEMORY_BYTES;
    this.#graceMs = options.shutdownGraceMs ?? 0;
    this.#auth = options.auth;
    this.failed = new Promise((resolve) => this.#fail = resolve);
    this.#workers = [];
    this.#directory = new Directory(() => table.entries().map(([name]) => name));
  }

  /**
   * Starts `threads` workers on `hostname:port` (and `tlsPort`), resolved to a free port first
   * when it is 0.
   * @throws {RangeError} when `threads` is not a positive integer
   * @throws {MemoryPlanError} when `maxMemoryBytes` cannot hold the rings between the workers
   *   (memory_plan.ts)
   * @throws {Deno.errors.AddrInUse} and other listen errors, from the main thread's check or
   *   from a worker
   */
  static async listen(options: ThreadedRelayOptions): Promise<ThreadedRelay> {
    const threads = options.threads;
    if (!Number.isInteger(threads) || threads < 1) {
      throw new RangeError(`Invalid threads: ${threads}`);
    }
    // The rings between workers are sized from the budget and set aside from it; in cluster
    // mode so is what worker 0's bridges may hold (whole messages to and from other nodes).
    const budgetBytes = options.maxMemoryBytes ?? MAX_MEMORY_BYTES;
    let plan = planMemory(budgetBytes, threads);
    const bridgeBytes = options.cluster && threads > 1 && budgetBytes > 0
      ? Math.floor(budgetBytes * BRIDGE_BUDGET_SHARE)
      : undefined;
    if (bridgeBytes !== undefined) {
      plan = { ...plan, reservedBytes: plan.reservedBytes + bridgeBytes };
    }
    const hostname = options.hostname ?? "0.0.0.0";
    const ports = choosePorts(hostname, options);
    const maxConnections = options.maxConnections ?? MAX_CONNECTIONS;
    const table = NameTable.create(maxConnections);
    const budget = sharedBudgetBuffer(threads);
    const relay = new ThreadedRelay(options, ports, table, budget);
    relay.#plan = plan;
    relay.#bridgeBytes = bridgeBytes;
    try {
      await relay.#start(options, ports, budget, maxConnections);
    } catch (error) {
      await relay.#stopWorkers(false);
      throw error;
    }
    const announce = getLogger(ANNOUNCE_CATEGORY);
    if (options.tls && options.tlsPort === undefined) {
      announce.info("Listening on {hostname}:{port} (TLS) with {threads} threads", {
        hostname,
        port: ports.port,
        threads,
      });
    } else {
      announce.info("Listening on {hostname}:{port} with {threads} threads", {
        hostname,
        port: ports.port,
        threads,
      });
      if (ports.tlsPort !== undefined) {
        announce.info("Listening on {hostname}:{port} (TLS)", { hostname, port: ports.tlsPort });
      }
    }
    if (plan.reservedBytes > 0 && bridgeBytes === undefined) {
      relay.#log.info(
        "Memory budget: {reservedBytes} bytes of {budgetBytes} set aside for {rings} rings of {ringBytes} bytes between the threads",
        { ...plan, budgetBytes: relay.#budgetBytes },
      );
    } else if (bridgeBytes !== undefined) {
      relay.#log.info(
        "Memory budget: {reservedBytes} bytes of {budgetBytes} set aside for {rings} rings of {ringBytes} bytes between the threads and {bridgeBytes} for messages bridged to other nodes",
        { ...plan, budgetBytes: relay.#budgetBytes, bridgeBytes },
      );
    }
    return relay;
  }

  async #start(
    options: ThreadedRelayOptions,
    ports: { port: number; tlsPort?: number },
    budget: SharedArrayBuffer,
    maxConnections: number,
  ): Promise<void> {
    const threads = options.threads;
    const nodes = Array.from({ length: threads }, (_, i) => workerNode(i));
    const peers = nodes.map(() => ({} as Record<string, MessagePort>));
    for (let i = 0; i < threads; i++) {
      for (let j = i + 1; j < threads; j++) {
        const channel = new MessageChannel();
        peers[i][nodes[j]] = channel.port1;
        peers[j][nodes[i]] = channel.port2;
      }
    }
    const {
      threads: _threads,
      authFile,
      auth,
      logLevel,
      web,
      reusePort: _reuse,
      cluster,
      ...rest
    } = options;
    const serverOptions: WorkerServerOptions = {
      ...rest,
      hostname: options.hostname ?? "0.0.0.0",
      port: ports.port,
      tlsPort: ports.tlsPort,
      maxConnections, // counted for all workers together (SharedConnectionGate)
    };
    const connections = connectionGateBuffer();
    const presenceLog = PresenceLog.create().buffer;
    // Only when a per-IP limit is on (the wrong-token one is, with an auth file): ~12 MiB.
    const perIp = (options.maxConnectionsPerIp ?? 0) > 0 || options.registerRate !== undefined ||
      authFile !== undefined || auth !== undefined;
    const ipTable = SharedIpLimits.buffer(perIp ? MAX_TRACKED_IPS : 0);
    const gather = nodes.map(() => ({} as Record<number, MessagePort>));
    for (let i = 0; i < threads; i++) {
      this.#webBoxes.push(replyBox());
      if (i === 0) continue;
      const channel = new MessageChannel();
      gather[0][i] = channel.port1;
      gather[i][0] = channel.port2;
    }
    const ready: Promise<void>[] = [];
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
      this.#workers.push(worker);
      this.#boxes.push(replyBox());
      ready.push(this.#watch(worker, i));
      const start: StartMessage = {
        type: "start",
        index: i,
        options: serverOptions,
        auth: authFile,
        authPolicy: authFile ? undefined : auth?.snapshot(),
        logLevel: logLevel ?? "info",
        table: this.#table.buffer,
        presenceLog,
        budget,
        reservedBytes: this.#plan.reservedBytes,
        ringBytes: this.#plan.ringBytes,
        bridgeBytes: this.#bridgeBytes,
        connections,
        ipTable,
        peers: peers[i],
        replyBox: this.#boxes[i],
        webBoxes: this.#webBoxes,
        gather: gather[i],
        web: i === 0 ? web : undefined,
        cluster, // one node for the process: worker 0 joins, the others go through it
      };
      worker.postMessage(start, [...Object.values(peers[i]), ...Object.values(gather[i])]);
    }
    await Promise.all(ready);
  }

  /** Follows one worker's messages; resolves once it listens. */
  #watch(worker: Worker, index: number): Promise<void> {
    const log = this.#log;
    let closed!: () => void;
    this.#closed.push(new Promise<void>((resolve) => closed = resolve));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`Worker ${index} did not start in ${WORKER_START_TIMEOUT_MS} ms`)),
        WORKER_START_TIMEOUT_MS,
      );
      worker.onmessage = (event: MessageEvent<FromWorker>) => {
        const m = event.data;
        switch (m.type) {
          case "ready":
            clearTimeout(timer);
            resolve();
            return;
          case "failed": {
            clearTimeout(timer);
            const web = m.error.startsWith("web: ");
            const error = m.code === "ClusterJoinError"
              ? Object.assign(new Error(m.error), { cluster: true }) // not a listen error
              : listenError(m.error.replace(/^web: /, ""), m.code);
            if (web) Object.assign(error, { web: true }); // the HTTP side's port, not the relay's
            reject(error);
            closed(); // a worker that failed to start stops by itself
            return;
          }
          case "changed":
            for (let j = 0; j < this.#workers.length; j++) {
              if (j !== index) {
                this.#workers[j].postMessage({ type: "changed", changes: m.changes });
              }
            }
            return;
          case "log": {
            const r = m.record;
            getLogger(r.category).emit({
              level: r.level,
              message: r.message, // rendered with its values, as the worker logged it
              rawMessage: r.rawMessage,
              timestamp: r.timestamp,
              properties: { ...r.properties, worker: index },
            });
            return;
          }
          case "closed":
            closed();
            return;
          case "webReady":
            getLogger(ANNOUNCE_CATEGORY).info("Web status on {scheme}://{hostname}:{port}/", {
              scheme: m.scheme,
              hostname: m.hostname,
              port: m.port,
            });
            return;
          case "stats":
          case "quiet":
          case "reloaded": {
            const pending = this.#pending.get(m.id);
            this.#pending.delete(m.id);
            pending?.resolve(m);
            return;
          }
        }
      };
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        clearTimeout(timer);
        const error = new Error(`Worker ${index} failed: ${event.message}`);
        reject(error);
        closed();
        if (this.#closing) return;
        log.error("Worker {index} failed, stopping the relay: {error}", {
          index,
          error: event.message,
        });
        this.#fail(error);
      };
    });
  }

  /** Asks every worker and waits for each answer. */
  async #ask(message: (id: number) => unknown): Promise<FromWorker[]> {
    return await Promise.all(this.#workers.map((worker, index) => {
      const id = this.#nextId++;
      return new Promise<FromWorker>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#pending.delete(id);
          reject(new Error(`Worker ${index} did not answer in ${WORKER_REPLY_TIMEOUT_MS} ms`));
        }, WORKER_REPLY_TIMEOUT_MS);
        this.#pending.set(id, {
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
          reject,
        });
        worker.postMessage(message(id));
      });
    }));
  }

  /** The counters of every worker, and their sum (the memory budget from the shared slots). */
  async stats(): Promise<ThreadedStats> {
    const answers = await this.#ask((id) => ({ type: "stats", id }));
    const workers = answers.map((m) => (m as Extract<FromWorker, { type: "stats" }>).stats);
    return { ...sumStats(workers, this.memoryUsedBytes()), workers };
  }

  /**
   * The same counters without awaiting: blocks this thread (`Atomics.wait`) until every worker
   * has answered, for at most `WORKER_REPLY_TIMEOUT_MS`.
   * @throws {Error} when a worker does not answer in time
   */
  statsNow(): ThreadedStats {
    for (const box of this.#boxes) clearReply(box);
    for (const worker of this.#workers) worker.postMessage({ type: "statsNow" });
    const deadline = performance.now() + WORKER_REPLY_TIMEOUT_MS;
    const workers = this.#boxes.map((box, i) => {
      try {
        return readReply<WorkerStats>(box, deadline);
      } catch {
        throw new Error(`Worker ${i} did not answer in ${WORKER_REPLY_TIMEOUT_MS} ms`);
      }
    });
    return { ...sumStats(workers, this.memoryUsedBytes()), workers };
  }

  /**
   * Bytes held for receivers over every worker (queued, and held outside the queues), as last
   * published to the shared slots; the rings' reserved part is not in it.
   */
  memoryUsedBytes(): number {
    return sharedUsedBytes(this.#budget.buffer as SharedArrayBuffer);
  }

  /**
   * The auth policy given to `listen`, if any: this thread's copy. Reload it with
   * {@linkcode ThreadedRelay.reload} (every worker re-reads its file, and so does this copy);
   * its own `reload()` changes this copy only.
   */
  get auth(): AuthPolicy | undefined {
    return this.#auth;
  }

  /** The memory budget of the whole process (0: none). */
  get memoryBudgetBytes(): number {
    return this.#budgetBytes;
  }

  /**
   * The rings between the workers: how many, each one's capacity, and the bytes of the memory
   * budget set aside for them at start (the queues share the rest).
   */
  get memoryPlan(): MemoryPlan {
    return { ...this.#plan };
  }

  /**
   * Makes worker `index` fail with an uncaught error, as a bug would (tests of what the relay
   * does then).
   * @internal
   */
  crashWorkerForTest(index: number): void {
    this.#workers[index].postMessage({ type: "crash" });
  }

  /** The worker holding `name`, if anyone does (tests place clients on workers with it). */
  workerOf(name: string): number | undefined {
    return this.#table.holder(name);
  }

  /** Names registered now over every worker, sorted by their UTF-8 bytes. */
  names(prefix = "", limit = MAX_WHO_LIMIT): string[] {
    return this.namesPage({ prefix, limit, maxJsonBytes: Infinity }).names;
  }

  /** One page of the names registered now over every worker, as `who` answers it. */
  namesPage(request: PageRequest): Page {
    const generation = this.#table.generation;
    if (generation !== this.#directoryGeneration) {
      this.#directoryGeneration = generation;
      this.#directory.changed();
    }
    return this.#directory.page(request);
  }

  /**
   * Replaces the TLS certificate in every worker and reloads the auth file (SIGHUP); the first
   * worker's error, if any, is thrown (a bad certificate is refused by every worker alike).
   * @returns the owned names in the reloaded auth file, if there is one
   */
  async reload(reload: { tls?: TlsCertificate; auth: boolean }): Promise<number | undefined> {
    const answers = await this.#ask((id) => ({ type: "reload", id, ...reload }));
    let names: number | undefined;
    if (reload.auth) await this.#auth?.reload().catch(() => {}); // the workers say if it fails
    for (const m of answers as Extract<FromWorker, { type: "reloaded" }>[]) {
      if (m.error !== undefined) {
        throw m.errorName === "TypeError" ? new TypeError(m.error) : new Error(m.error);
      }
      names = m.authNames;
    }
    return names;
  }

  /**
   * Runs a connection that did not come from the workers' listeners (an in-process connection,
   * a WebSocket adapter in this thread) on the worker with the fewest such connections, exactly
   * like one it accepted: its bytes cross to the worker and back (lib/threads/conn_bridge.ts).
   * Once the relay is closing, `conn` is closed at once.
   * @param worker the worker to run it on instead (tests place connections with it)
   * @throws {RangeError} when `worker` is not the index of a worker
   */
  serve(conn: RelayConn, worker?: number): void {
    const valid = (i: number) => Number.isInteger(i) && i >= 0 && i < this.threads;
    if (worker !== undefined && !valid(worker)) {
      throw new RangeError(`Invalid worker: ${worker}`);
    }
    if (this.#closing) {
      try {
        conn.close();
      } catch {
        // Already gone.
      }
      return;
    }
    const threads = this.#workers.length;
    if (this.#bridged.length !== threads) this.#bridged = new Array(threads).fill(0);
    let index = worker ?? this.#nextBridge++ % threads;
    for (let i = 0; i < threads && worker === undefined; i++) {
      if (this.#bridged[i] < this.#bridged[index]) index = i;
    }
    const { port1, port2 } = new MessageChannel();
    const bridge = bridgeConn(conn, port1);
    this.#bridges.set(bridge, index);
    this.#bridged[index]++;
    bridge.closed.then(() => {
      this.#bridges.delete(bridge);
      this.#bridged[index]--;
    });
    const addr = conn.remoteAddr as Deno.NetAddr;
    const remoteAddr: Deno.NetAddr = {
      transport: addr.transport ?? "tcp",
      hostname: addr.hostname,
      port: addr.port,
    };
    this.#workers[index].postMessage({ type: "serve", port: port2, remoteAddr }, [port2]);
  }

  /** Stops every worker (each gives queued data the shutdown grace). Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#stopWorkers();
    return this.#closing;
  }

  /**
   * Waits (until `deadline`) for data between workers to arrive: each worker's server waits
   * for its own queues in its grace, but a message still in a pair would be lost when its
   * worker stops first. Quiet means no queued bytes and no pair with data, three times in a
   * row (so that a packet posted just before one answer is seen by the next).
   */
  async #settle(deadline: number): Promise<void> {
    for (let quiet = 0; quiet < SETTLE_QUIET_ROUNDS && performance.now() < deadline;) {
      let answers: FromWorker[];
      try {
        answers = await this.#ask((id) => ({ type: "quiet", id }));
      } catch {
        return; // a worker that does not answer is stopped anyway
      }
      const all = answers.every((m) => (m as Extract<FromWorker, { type: "quiet" }>).quiet);
      quiet = all ? quiet + 1 : 0;
      if (!all) await sleep(SETTLE_POLL_MS);
    }
  }

  /** Same as {@linkcode ThreadedRelay.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * @param started whether the relay started: a start that failed (a worker could not listen
   *   or join the cluster) has no clients to give a grace to, and a worker still waiting for
   *   the others (for worker 0's cluster door) would answer nothing, so it is not waited for
   */
  async #stopWorkers(started = true): Promise<void> {
    this.#closing ??= Promise.resolve();
    const graceMs = started ? this.#graceMs : 0;
    const since = performance.now();
    // Every worker stops taking connections at once; those open have the grace.
    for (const worker of this.#workers) {
      try {
        worker.postMessage({ type: "stopAccepting" });
      } catch {
        // Already gone.
      }
    }
    if (graceMs > 0) await this.#settle(since + graceMs);
    for (const worker of this.#workers) {
      try {
        worker.postMessage({ type: "close" });
      } catch {
        // Already gone.
      }
    }
    await waitAtMost(Promise.all(this.#closed), started ? graceMs + WORKER_STOP_MARGIN_MS : 0);
    for (const worker of this.#workers) worker.terminate();
    // Handed-over connections a worker did not close on its way out.
    for (const bridge of [...this.#bridges.keys()]) bridge.close();
    for (const pending of this.#pending.values()) pending.reject(new Error("Relay stopped"));
    this.#pending.clear();
    this.#log.info("Stopped {threads} threads", { threads: this.threads });
  }
}

/**
 * Resolves port 0 to a free port, and checks a given one is free (a port held by another
 * `reusePort` group of the same user would otherwise be shared with it silently).
 */
function choosePorts(
  hostname: string,
  options: ThreadedRelayOptions,
): { port: number; tlsPort?: number } {
  const pick = (port: number) => {
    const probe = Deno.listen({ hostname, port });
    const chosen = (probe.addr as Deno.NetAddr).port;
    probe.close();
    return chosen;
  };
  const port = pick(options.port ?? DEFAULT_PORT);
  const tlsPort = options.tls && options.tlsPort !== undefined ? pick(options.tlsPort) : undefined;
  return { port, tlsPort };
}

/** A worker's listen failure as the error class the single-thread relay would throw. */
function listenError(message: string, code: string | undefined): Error {
  const Class = code && code in Deno.errors
    ? (Deno.errors as unknown as Record<string, new (m: string) => Error>)[code]
    : Error;
  return new Class(message.replace(/^\w+: /, ""));
}
