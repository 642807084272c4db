/**
 * The relay server: accepts TCP connections, keeps the registry of names, enforces the
 * timeouts, and shuts down cleanly. Each connection runs in its own {@linkcode Connection}.
 * @module
 */

import { getLogger, type Logger } from "@logtape/logtape";
import {
  Connection,
  type Connection as Client,
  type ConnectionHost,
  type DisconnectReason,
  type RelayConn,
} from "./connection.ts";
import {
  DEFAULT_PORT,
  IDLE_TIMEOUT_MS,
  LOG_SUMMARY_INTERVAL_MS,
  MAX_BUFFER_BYTES,
  MAX_CONNECTIONS,
  MAX_MEMORY_BYTES,
  MAX_MESSAGE_BYTES,
  MAX_WHO_LIMIT,
  REGISTER_TIMEOUT_MS,
  WRITE_TIMEOUT_MS,
} from "../limits.ts";
import type { AuthPolicy } from "./auth.ts";
import { addressKey, type IpLimits, LocalIpLimits } from "./limiter.ts";
import type { Registration } from "../wire/relay.ts";
import { Registry } from "./registry.ts";
import { ControlHub } from "./control.ts";
import type { Page, PageRequest } from "./directory.ts";
import { VERSION } from "../version.ts";
import { MemoryBudget, type SharedBudget } from "./memory_budget.ts";
import { ANNOUNCE_CATEGORY } from "../util/log_category.ts";
import { sleep, waitAtMost } from "../util/async.ts";
import type { Mesh } from "./mesh.ts";
import { MeshInbox } from "./mesh_inbox.ts";

/** Options of {@linkcode RelayServer.listen}. */
export interface RelayServerOptions {
  /**
   * Address to listen on.
   * @default {"0.0.0.0"}
   */
  hostname?: string;
  /**
   * TCP port; 0 picks a free one (see {@linkcode RelayServer.port}).
   * @default {8080}
   */
  port?: number;
  /**
   * Time a new connection has to send its name; 0 turns the limit off.
   * @default {3000}
   */
  registerTimeoutMs?: number;
  /**
   * A client that sends nothing for this long is disconnected; 0 turns the limit off.
   * @default {30000}
   */
  idleTimeoutMs?: number;
  /**
   * A receiver that accepts no bytes for this long while data waits is disconnected; 0
   * turns the limit off.
   * @default {30000}
   */
  writeTimeoutMs?: number;
  /**
   * Interval of the activity summary logged at info (connections, registrations and
   * disconnects since the last summary, only when there were any); 0 turns it off.
   * @default {10000}
   */
  summaryIntervalMs?: number;
  /**
   * Largest message payload in bytes.
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /**
   * Bytes buffered for one receiver before its senders are paused.
   * @default {8388608}
   */
  maxBufferBytes?: number;
  /**
   * Bytes queued for receivers and in flight to them, over all connections, before senders are
   * paused; 0 for no global budget (`maxBufferBytes` per receiver still applies). Shared so
   * that one receiver or one IP cannot take all of it (see `memory_budget.ts`).
   * @default {268435456}
   */
  maxMemoryBytes?: number;
  /**
   * Most connections open at once; more are refused.
   * @default {16384}
   */
  maxConnections?: number;
  /**
   * `framed` delivers `sender|len|payload`; `payload` delivers only the payload bytes (the
   * original relay's demo behaviour).
   * @default {"framed"}
   */
  deliver?: "framed" | "payload";
  /**
   * Time allowed on {@linkcode RelayServer.close} for queued data to go out.
   * @default {0}
   */
  shutdownGraceMs?: number;
  /** Serve TLS with this certificate: on `port`, or on `tlsPort` when that is set too. */
  tls?: TlsCertificate;
  /** With `tls`: the port for TLS, while `port` stays plaintext (both share one registry). */
  tlsPort?: number;
  /** Who may register which names (`--auth-file`); without it every name is open. */
  auth?: AuthPolicy;
  /**
   * Most connections open at once from one IP (an IPv6 /64 counts as one); 0 for no limit.
   * @default {0}
   */
  maxConnectionsPerIp?: number;
  /** Registrations allowed per IP: `limit` per `intervalMs`; no limit when absent. */
  registerRate?: Rate;
  /**
   * Wrong tokens allowed per IP before its registrations of owned names are refused.
   * @default {{ limit: 10, intervalMs: 60000 }}
   */
  authFailureRate?: Rate;
  /**
   * Bytes per second one client may send; 0 for no limit.
   * @default {0}
   */
  bandwidthBytesPerSecond?: number;
  /**
   * Whether opted-in clients may list who is online (`who`); `--listing off` for a public
   * relay. Watching given names works either way.
   * @default {true}
   */
  listing?: boolean;
  /**
   * Share the listening port with other sockets that set it too (`SO_REUSEPORT`): the workers
   * of `relay serve --threads N` each listen on the same port (needs `--unstable-net`).
   * @default {false}
   */
  reusePort?: boolean;
  /** Share `maxMemoryBytes` with the other workers of this process (`--threads`). */
  sharedMemory?: SharedBudget;
  /**
   * Count connections against `maxConnections` together with the other workers of this
   * process (`--threads`), instead of this server's own count.
   */
  connectionGate?: ConnectionGate;
  /**
   * Keep the per-IP limits (`maxConnectionsPerIp`, `registerRate`, `authFailureRate`) in this
   * table, shared with the other workers of this process (`--threads`), instead of this
   * server's own; it must be made with the same limits.
   */
  ipLimits?: IpLimits;
  /**
   * Names held on other nodes or workers (lib/relay/mesh.ts): cluster mode (`--cluster`) or
   * `--threads`. Registrations are claimed on it too, frames to names it holds go through its
   * pairs, and its fencing closes every client. The caller creates it and closes it after
   * the server. Without one, nothing changes.
   */
  mesh?: Mesh;
}

/** A connection count shared by several servers (the workers of one process). */
export interface ConnectionGate {
  /** Takes one connection; false when the shared limit is reached. */
  tryAcquire(): boolean;
  /** Gives one back. */
  release(): void;
}

/** A PEM certificate chain and its private key. */
export interface TlsCertificate {
  /** Certificate chain, PEM. */
  cert: string;
  /** Private key, PEM. */
  key: string;
}

/** A rate: `limit` events per `intervalMs`. */
export interface Rate {
  /** Events allowed per interval. */
  limit: number;
  /** Interval in milliseconds. */
  intervalMs: number;
}

/** Wrong tokens allowed per IP per minute by default: enough for typos, too few to guess. */
export const AUTH_FAILURES_PER_MINUTE = 10;
/** A refusal reason is logged at most once per this interval; the rest are counted. */
const REFUSAL_LOG_INTERVAL_MS = 1_000;

/** Counters of a running server. */
export interface RelayStats {
  /** Connections open now. */
  connections: number;
  /** Names registered now. */
  registered: number;
  /** Connections accepted since start. */
  accepted: number;
  /** Connections refused at accept, by reason. */
  refused: Record<string, number>;
  /** Messages delivered to a receiver's queue. */
  messages: number;
  /** Payload bytes delivered. */
  bytes: number;
  /** Messages dropped, by reason. */
  dropped: Record<string, number>;
  /** Connections ended, by reason. */
  disconnects: Partial<Record<DisconnectReason, number>>;
  /**
   * The global memory budget: `usedBytes` queued for receivers and in flight to them now,
   * over all connections, against `budgetBytes` (0 when there is no global budget).
   */
  memory: { usedBytes: number; budgetBytes: number };
  /** Bytes queued for receivers now, over all connections. */
  queuedBytes: number;
  /**
   * With a mesh: this node's name, the names held elsewhere (by node), and the pairs from
   * other nodes delivering here now.
   */
  mesh?: { node: string; remoteNames: Record<string, number>; pairsIn: number };
  /**
   * Delivered messages by payload size: `messageSizes[i]` counts those of at most
   * `MESSAGE_SIZE_BUCKETS_BYTES[i]` bytes (and more than the bound before); the last entry
   * counts the larger ones.
   */
  messageSizes: number[];
}

/** Upper bounds of the message-size histogram in {@linkcode RelayStats.messageSizes}. */
export const MESSAGE_SIZE_BUCKETS_BYTES: readonly number[] = [
  16,
  256,
  4096,
  65536,
  1048576,
  16777216,
];

/** How often at most the timeout sweep runs: timeouts are enforced within a quarter. */
const MAX_SWEEP_MS = 1_000;
const MIN_SWEEP_MS = 5;
/** Longest pause of the accept loop after an error such as running out of descriptors. */
const MAX_ACCEPT_BACKOFF_MS = 1_000;

/**
 * A relay server. Start it with {@linkcode RelayServer.listen}; stop it with `close()` or
 * `await using`.
 *
 * @example
 * ```ts
 * await using server = await RelayServer.listen({ hostname: "127.0.0.1", port: 0 });
 * console.log(`relay on port ${server.port}`);
 * ```
 */
export class RelayServer implements AsyncDisposable {
  #plain: Deno.Listener | undefined;
  #secure: Deno.Listener | undefined;
  readonly #registry = new Registry<Client>();
  readonly #memory: MemoryBudget;
  /** The certificate reload in progress, if any: reloads run one at a time, in order. */
  #reloading: Promise<void> = Promise.resolve();
  readonly #connections = new Set<Client>();
  /** The run() of every connection not yet finished. */
  readonly #tasks = new Map<Client, Promise<void>>();
  readonly #acceptLoops = new Map<Deno.Listener, Promise<void>>();
  readonly #log: Logger = getLogger(["relay", "server"]);
  readonly #options: Options;
  readonly #sweep: ReturnType<typeof setInterval>;
  readonly #stop = new AbortController();
  /**
   * Set by `stopAccepting` (and so by `close`): listeners closed, new connections refused, open
   * ones served.
   */
  #refusing = false;
  #closing: Promise<void> | undefined;
  #nextId = 1;
  readonly #stats = {
    accepted: 0,
    messages: 0,
    bytes: 0,
    refused: {} as Record<string, number>,
    dropped: {} as Record<string, number>,
    disconnects: {} as Partial<Record<DisconnectReason, number>>,
    messageSizes: new Array<number>(MESSAGE_SIZE_BUCKETS_BYTES.length + 1).fill(0),
  };
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });
  readonly #host: ConnectionHost;
  /** The control channel's shared state: welcome, presence, directory, refusals. */
  readonly #control: ControlHub;
  /** Pairs from other nodes into local connections (with a mesh). */
  readonly #inbox: MeshInbox | undefined;
  /** Per-IP counts: open connections, registrations, wrong tokens (this server's or shared). */
  readonly #ip: IpLimits;
  readonly #refusalLog = new Map<string, { at: number; suppressed: number }>();
  /** Registrations and ended connections since start, for the activity summary. */
  #registeredCount = 0;
  #endedCount = 0;
  /** The counts at the last activity summary. */
  #activity = { since: performance.now(), accepted: 0, registered: 0, ended: 0 };

  private constructor(options: Options) {
    this.#options = options;
    this.#memory = new MemoryBudget({
      budgetBytes: options.maxMemoryBytes,
      maxPerReceiverBytes: options.maxBufferBytes,
      shared: options.sharedMemory,
    });
    const registry = this.#registry;
    this.#control = new ControlHub({
      relayVersion: VERSION,
      maxMessageBytes: options.maxMessageBytes,
      maxBufferBytes: options.maxBufferBytes,
      registerTimeoutMs: options.registerTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs,
      namesOwned: options.auth !== undefined,
      listing: options.listing,
      names: () => {
        const names = Array.from(registry.values(), (c) => c.name!);
        if (options.mesh) { for (const [name] of options.mesh.remoteNames()) names.push(name); }
        return names;
      },
      // Remote names as the presence events so far tell it, so a watch reply and the events
      // after it never disagree (an event on its way would otherwise be told twice).
      isOnline: (name) =>
        registry.get(name)?.name !== undefined ||
        (options.mesh !== undefined &&
          (options.mesh.announced?.(name) ?? options.mesh.holder(name) !== undefined)),
      namesGeneration: options.mesh && (() => options.mesh!.generation),
      sync: options.mesh?.sync && (() => options.mesh!.sync!()),
    });
    const mesh = options.mesh;
    if (mesh) {
      this.#inbox = new MeshInbox({
        holder: (name) => {
          const conn = registry.get(name);
          return conn?.name === undefined ? undefined : conn;
        },
        delivered: (bytes) => this.#host.count("delivered", bytes),
      });
    }
    this.#host = this.#makeHost();
    if (mesh) this.#listenToMesh(mesh);
    this.#ip = options.ipLimits ?? new LocalIpLimits(options);
    const { tls, tlsPort, hostname, port } = options;
    const reuse = options.reusePort ? { reusePort: true } : {};
    if (tls && tlsPort === undefined) {
      this.#secure = Deno.listenTls({ hostname, port, ...reuse, ...tls });
    } else {
      this.#plain = Deno.listen({ hostname, port, ...reuse });
      if (tls) {
        try {
          this.#secure = Deno.listenTls({ hostname, port: tlsPort!, ...reuse, ...tls });
        } catch (error) {
          this.#plain.close();
          throw error;
        }
      }
    }
    // A timeout of 0 is off; the sweep runs often enough for the shortest one that is on.
    const shortest = Math.min(
      ...[options.registerTimeoutMs, options.idleTimeoutMs, options.writeTimeoutMs]
        .filter((ms) => ms > 0),
      MAX_SWEEP_MS * 4,
    );
    const every = Math.max(MIN_SWEEP_MS, Math.min(MAX_SWEEP_MS, Math.floor(shortest / 4)));
    this.#sweep = setInterval(() => this.#checkTimeouts(), every);
    if (this.#plain) this.#startAccepting(this.#plain);
    if (this.#secure) this.#startAccepting(this.#secure);
  }

  /**
   * Starts a relay listening on `hostname:port` (and `tlsPort`).
   * @throws {RangeError} on a negative or non-finite limit
   * @throws {Deno.errors.AddrInUse} and other listen errors, or a bad TLS certificate or key
   */
  static listen(options: RelayServerOptions = {}): Promise<RelayServer> {
    const full: Options = {
      hostname: options.hostname ?? "0.0.0.0",
      port: options.port ?? DEFAULT_PORT,
      registerTimeoutMs: options.registerTimeoutMs ?? REGISTER_TIMEOUT_MS,
      idleTimeoutMs: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
      writeTimeoutMs: options.writeTimeoutMs ?? WRITE_TIMEOUT_MS,
      summaryIntervalMs: options.summaryIntervalMs ?? LOG_SUMMARY_INTERVAL_MS,
      maxMessageBytes: options.maxMessageBytes ?? MAX_MESSAGE_BYTES,
      maxBufferBytes: options.maxBufferBytes ?? MAX_BUFFER_BYTES,
      maxMemoryBytes: options.maxMemoryBytes ?? MAX_MEMORY_BYTES,
      maxConnections: options.maxConnections ?? MAX_CONNECTIONS,
      deliver: options.deliver ?? "framed",
      shutdownGraceMs: options.shutdownGraceMs ?? 0,
      maxConnectionsPerIp: options.maxConnectionsPerIp ?? 0,
      bandwidthBytesPerSecond: options.bandwidthBytesPerSecond ?? 0,
      listing: options.listing ?? true,
      authFailureRate: options.authFailureRate ??
        { limit: AUTH_FAILURES_PER_MINUTE, intervalMs: 60_000 },
      tls: options.tls,
      tlsPort: options.tlsPort,
      auth: options.auth,
      registerRate: options.registerRate,
      reusePort: options.reusePort ?? false,
      sharedMemory: options.sharedMemory,
      mesh: options.mesh,
      connectionGate: options.connectionGate,
      ipLimits: options.ipLimits,
    };
    for (const [key, value] of Object.entries(full)) {
      if (typeof value === "number" && (!Number.isFinite(value) || value < 0)) {
        throw new RangeError(`Invalid ${key}: ${value}`);
      }
    }
    if (full.tlsPort !== undefined && !full.tls) {
      throw new TypeError("A TLS port needs a TLS certificate and key");
    }
    const server = new RelayServer(full);
    const announce = getLogger(ANNOUNCE_CATEGORY);
    if (server.#plain) {
      announce.info("Listening on {hostname}:{port}", {
        hostname: full.hostname,
        port: server.port,
      });
    }
    if (server.#secure) {
      announce.info("Listening on {hostname}:{port} (TLS)", {
        hostname: full.hostname,
        port: server.tlsPort,
      });
    }
    return Promise.resolve(server);
  }

  /** The port of the plaintext listener, or of the TLS one when TLS is all it serves. */
  get port(): number {
    return ((this.#plain ?? this.#secure)!.addr as Deno.NetAddr).port;
  }

  /** The port of the TLS listener, if any. */
  get tlsPort(): number | undefined {
    return this.#secure ? (this.#secure.addr as Deno.NetAddr).port : undefined;
  }

  /** The address the server listens on. */
  get hostname(): string {
    return ((this.#plain ?? this.#secure)!.addr as Deno.NetAddr).hostname;
  }

  /**
   * Replaces the TLS certificate (on SIGHUP). The new one is checked first; on error the old
   * one stays in force and the error is thrown. Connections already open keep their session;
   * the TLS listener is reopened on the same port, so new connections see the new certificate.
   *
   * Reloads run one at a time, in the order they were asked for (two SIGHUPs in a row never
   * race for the port). Once shutdown has begun, a reload does nothing and resolves: no
   * listener is ever opened after {@linkcode RelayServer.close}.
   * @throws {TypeError} when the server does not serve TLS
   */
  setCertificate(tls: TlsCertificate): Promise<void> {
    if (!this.#secure) return Promise.reject(new TypeError("This server does not serve TLS"));
    const run = this.#reloading.then(() => this.#reload(tls));
    this.#reloading = run.catch(() => {});
    return run;
  }

  async #reload(tls: TlsCertificate): Promise<void> {
    if (this.#refusing) return;
    // Fails on a bad certificate or key before anything changes.
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tls }).close();
    const old = this.#secure!;
    const { hostname, port } = old.addr as Deno.NetAddr;
    old.close();
    // The port is free only once the old accept loop has seen its listener close.
    await this.#acceptLoops.get(old);
    // Shutdown may have begun while the old listener closed: then nothing is reopened.
    if (this.#refusing) return;
    const reuse = this.#options.reusePort ? { reusePort: true } : {};
    this.#secure = Deno.listenTls({ hostname, port, ...reuse, ...tls });
    this.#startAccepting(this.#secure);
    this.#log.info("TLS certificate reloaded");
  }

  /** The auth policy in force, if any (reload it with its own `reload()`). */
  get auth(): AuthPolicy | undefined {
    return this.#options.auth;
  }

  /** A snapshot of the counters. */
  stats(): RelayStats {
    const s = this.#stats;
    return {
      connections: this.#connections.size,
      registered: this.#registry.size,
      accepted: s.accepted,
      refused: { ...s.refused },
      messages: s.messages,
      bytes: s.bytes,
      dropped: { ...s.dropped },
      disconnects: { ...s.disconnects },
      memory: { usedBytes: this.#memory.usedBytes, budgetBytes: this.#memory.budgetBytes },
      queuedBytes: [...this.#connections].reduce((sum, c) => sum + c.outbox.queuedBytes, 0),
      messageSizes: [...s.messageSizes],
      mesh: this.#meshStats(),
    };
  }

  #meshStats(): RelayStats["mesh"] {
    const mesh = this.#options.mesh;
    if (!mesh) return undefined;
    const remoteNames: Record<string, number> = {};
    for (const [, node] of mesh.remoteNames()) remoteNames[node] = (remoteNames[node] ?? 0) + 1;
    return { node: mesh.node, remoteNames, pairsIn: this.#inbox!.size };
  }

  /**
   * Names registered now, sorted by their UTF-8 bytes (the `who` directory, cached between
   * changes).
   * @param prefix keep only names that start with it
   * @param limit at most this many (at most 1000)
   */
  names(prefix = "", limit = MAX_WHO_LIMIT): string[] {
    return this.namesPage({ prefix, limit, maxJsonBytes: Infinity }).names;
  }

  /** One page of the names registered now, as `who` answers it. */
  namesPage(request: PageRequest): Page {
    return this.#control.directory.page(request);
  }

  /**
   * Runs a connection that did not come from this server's listeners (a WebSocket from the
   * HTTP side) exactly like an accepted one: same limits, registry and shutdown.
   */
  serve(conn: RelayConn): void {
    if (this.#refusing) {
      try {
        conn.close();
      } catch {
        // Already gone.
      }
      return;
    }
    this.#admitConnection(conn);
  }

  /**
   * Closes the listeners and refuses every connection from now on (`serve` too), while those
   * open go on as before: the first step of a shutdown when several servers (the workers of
   * `relay serve --threads N`) must all stop taking connections before any of them stops
   * serving. {@linkcode RelayServer.close} follows. Safe to call more than once.
   */
  stopAccepting(): void {
    if (this.#refusing) return;
    this.#refusing = true;
    for (const listener of [this.#plain, this.#secure]) {
      try {
        listener?.close();
      } catch {
        // Already closed.
      }
    }
  }

  /**
   * Stops accepting, gives queued data up to `shutdownGraceMs` to go out, then closes every
   * connection. Safe to call more than once.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Same as {@linkcode RelayServer.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    this.#stop.abort();
    this.stopAccepting();
    await this.#reloading;
    await Promise.all([...this.#acceptLoops.values()]);
    const grace = this.#options.shutdownGraceMs;
    if (grace > 0 && this.#connections.size > 0) {
      await waitAtMost(Promise.all([...this.#connections].map((c) => c.outbox.drained())), grace);
    }
    clearInterval(this.#sweep);
    for (const conn of [...this.#connections]) conn.close("server_shutdown");
    await this.#control.close();
    await Promise.allSettled([...this.#tasks.values()]);
    this.#log.info("Stopped");
  }

  #startAccepting(listener: Deno.Listener): void {
    const loop = this.#accept(listener);
    this.#acceptLoops.set(listener, loop);
    loop.finally(() => this.#acceptLoops.delete(listener));
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    let backoff = 0;
    while (!this.#stop.signal.aborted) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
        backoff = 0;
      } catch (error) {
        if (this.#stop.signal.aborted) return;
        if (error instanceof Deno.errors.BadResource) return;
        // Most likely out of file descriptors: pause, then keep serving those connected.
        backoff = Math.min(MAX_ACCEPT_BACKOFF_MS, backoff === 0 ? 10 : backoff * 2);
        this.#log.warn("Accept failed, retrying in {backoff} ms: {error}", {
          backoff,
          error: String(error),
        });
        await sleep(backoff, this.#stop.signal);
        continue;
      }
      this.#admitConnection(conn);
    }
  }

  #admitConnection(conn: RelayConn): void {
    this.#stats.accepted++;
    if (this.#refusing) {
      // Accepted just as shutdown began (or handed over by serve() too late): never run it.
      this.#refuse(conn, "server_shutdown");
      return;
    }
    const gate = this.#options.connectionGate;
    if (gate ? !gate.tryAcquire() : this.#connections.size >= this.#options.maxConnections) {
      this.#refuse(conn, "too_many_connections");
      return;
    }
    let lease: { release(): void } | undefined;
    if (this.#options.maxConnectionsPerIp > 0) {
      const got = this.#ip.tryConnect(addressKey((conn.remoteAddr as Deno.NetAddr).hostname));
      if (typeof got === "string") {
        gate?.release();
        // A full address table (--threads) cannot count this address: the relay is full for it.
        this.#refuse(conn, got === "address_table_full" ? "too_many_connections" : got);
        return;
      }
      lease = got;
    }
    try {
      (conn as Deno.TcpConn).setNoDelay(true); // writes are already batched; Nagle would only add latency
    } catch {
      // Not a TCP socket option here (e.g. the socket already closed).
    }
    const client = new Connection(conn, this.#host, this.#nextId++);
    client.lease = lease;
    this.#connections.add(client);
    // Debug, not info: two info lines per connection were a third of the time of accepting
    // one connection after another; "Registered" and "Disconnected" (with the reason) remain.
    // Lazy properties: nothing is built for a line below the log level.
    this.#log.debug("Connection from {remote}", () => ({ id: client.id, remote: client.remote }));
    // Forgotten by the host's `finished` when run() ends: no `finally` promise per connection.
    this.#tasks.set(client, client.run());
  }

  #refuse(conn: RelayConn, reason: string): void {
    this.#stats.refused[reason] = (this.#stats.refused[reason] ?? 0) + 1;
    const addr = conn.remoteAddr as Deno.NetAddr;
    // Under a flood every refusal is counted, but logged once a second with a tally.
    const now = performance.now();
    const last = this.#refusalLog.get(reason);
    if (last && now - last.at < REFUSAL_LOG_INTERVAL_MS) {
      last.suppressed++;
    } else {
      this.#refusalLog.set(reason, { at: now, suppressed: 0 });
      this.#log.info("Refused {remote}: {reason}{more}", {
        remote: `${addr.hostname}:${addr.port}`,
        reason,
        more: last?.suppressed ? ` (and ${last.suppressed} more since the last report)` : "",
      });
    }
    if (reason === "too_many_connections" || reason === "too_many_connections_per_ip") {
      this.#control.refuser.refuse(conn, reason); // `refused` to an opted-in client, then close
      return;
    }
    try {
      conn.close();
    } catch {
      // Already gone.
    }
  }

  #checkTimeouts(): void {
    const now = performance.now();
    const { registerTimeoutMs, idleTimeoutMs, writeTimeoutMs } = this.#options;
    for (const c of this.#connections) {
      if (c.name === undefined) {
        if (registerTimeoutMs > 0 && now - c.since > registerTimeoutMs) {
          c.close("register_timeout", `No name within ${registerTimeoutMs} ms`);
        }
      } else if (idleTimeoutMs > 0) {
        // Time held back by a full receiver is not idleness: the write timeout ends that wait
        // (the receiver is dropped). With the write timeout off nothing would, so then a
        // sender held back for longer than the idle timeout is let go instead of held forever.
        if (!c.waiting && now - c.lastActivity > idleTimeoutMs) {
          c.close("idle_timeout", `Nothing sent for ${idleTimeoutMs} ms`);
        } else if (writeTimeoutMs === 0 && c.heldMs(now) > idleTimeoutMs) {
          c.close("held_back", `Held back by a full receiver for ${idleTimeoutMs} ms`);
        }
      }
      if (writeTimeoutMs > 0 && !c.closed && c.outbox.stalledMs(now) > writeTimeoutMs) {
        c.close("slow_consumer", `Accepted no bytes for ${writeTimeoutMs} ms`);
      }
      c.trim();
    }
    this.#memory.sync(); // a quiet worker sees the other workers' queues drain
    this.#summarise(now);
  }

  /** Logs the activity since the last summary at info, when there was any. */
  #summarise(now: number): void {
    const every = this.#options.summaryIntervalMs;
    if (every === 0 || now - this.#activity.since < every) return;
    const { since, accepted, registered, ended } = this.#activity;
    const connected = this.#stats.accepted - accepted;
    const disconnected = this.#endedCount - ended;
    const newly = this.#registeredCount - registered;
    this.#activity = {
      since: now,
      accepted: this.#stats.accepted,
      registered: this.#registeredCount,
      ended: this.#endedCount,
    };
    if (connected === 0 && disconnected === 0 && newly === 0) return;
    this.#log.info(
      "{connected} connected, {newly} registered, {disconnected} disconnected in the last {seconds} s; {open} open, {names} registered",
      {
        connected,
        newly,
        disconnected,
        seconds: Math.round((now - since) / 1000),
        open: this.#connections.size,
        names: this.#registry.size,
      },
    );
  }

  /**
   * Applies the registration rate and name ownership; returns a refusal reason or nothing.
   * Synchronous unless a token must be checked: an open relay admits without a promise.
   */
  #admitRegistration(
    conn: Client,
    registration: Registration,
  ): DisconnectReason | undefined | Promise<DisconnectReason | undefined> {
    const auth = this.#options.auth;
    const rated = this.#options.registerRate !== undefined;
    if (!rated && !auth) return undefined;
    const key = addressKey(conn.ip);
    if (rated && !this.#ip.tryRegister(key)) return "rate_limited";
    if (!auth) return undefined;
    if (!auth.owns(registration.name) && !auth.requireAuth) return undefined;
    // An IP that guessed wrong too often is refused before its token is even looked at.
    if (!this.#ip.mayTryToken(key)) return "rate_limited";
    return auth.check(registration.name, registration.token).then((verdict) => {
      if (verdict === "ok") return undefined;
      if (verdict === "wrong_token") this.#ip.countWrongToken(key);
      return "unauthorized";
    });
  }

  /** Takes the mesh's events: pairs to deliver, names elsewhere, fencing. */
  #listenToMesh(mesh: Mesh): void {
    const control = this.#control;
    const inbox = this.#inbox!;
    mesh.listen({
      pair: (receiver) => {
        if (this.#stop.signal.aborted) receiver.close("receiver_closed");
        else inbox.accept(receiver);
      },
      local: (name) => {
        const conn = this.#registry.get(name);
        return conn?.name === undefined || this.#stop.signal.aborted ? undefined : conn;
      },
      count: (event, bytes) => this.#host.count(event, bytes),
      changed: (name, node) => {
        // Held here (registered): local events count. One still claiming it is not yet.
        if (this.#registry.get(name)?.name !== undefined) return;
        if (node === null) control.offline(name);
        else control.online(name);
      },
      fenced: (reason) => {
        this.#log.error("Cluster node {node} fenced ({reason}): closing every client", {
          node: mesh.node,
          reason,
        });
        const detail = reason === "lease_lost"
          ? "Another process took this node's name in the cluster"
          : "The relay lost its cluster";
        for (const conn of [...this.#connections]) conn.close("cluster_unavailable", detail);
      },
    });
  }

  /** What connections see of the server. */
  #makeHost(): ConnectionHost {
    const options = this.#options;
    const stats = this.#stats;
    const registry = this.#registry;
    const memory = this.#memory;
    const control = this.#control;
    const mesh = options.mesh;
    const inbox = this.#inbox;
    return {
      mesh,
      limits: {
        maxMessageBytes: options.maxMessageBytes,
        maxBufferBytes: options.maxBufferBytes,
        bandwidthBytesPerSecond: options.bandwidthBytesPerSecond,
      },
      deliver: options.deliver,
      log: getLogger(["relay", "conn"]),
      admit: (conn, registration) => this.#admitRegistration(conn, registration),
      claim: (name, conn) => {
        if (!registry.claim(name, conn)) return false;
        if (mesh) return true; // online once the mesh claim is in (claimMesh)
        this.#registeredCount++;
        control.online(name);
        return true;
      },
      claimMesh: mesh && (async (name, conn) => {
        const claim = await mesh.claim(name);
        if (!claim.ok || conn.closed) {
          registry.release(name, conn);
          if (claim.ok) mesh.release(name);
          return claim.ok ? undefined : claim.reason;
        }
        this.#registeredCount++;
        control.online(name);
        return undefined;
      }),
      release: (name, conn) => {
        if (registry.get(name) !== conn) return;
        registry.release(name, conn);
        mesh?.sync?.(); // what other workers changed before this goes first
        control.offline(name);
        if (mesh) {
          mesh.release(name);
          inbox?.release(conn);
        }
      },
      control,
      // A cached destination is stale once a name changed hands here or anywhere in the mesh.
      get generation() {
        return mesh ? registry.generation + mesh.generation : registry.generation;
      },
      share: (ip) => memory.budgetBytes > 0 ? memory.share(addressKey(ip)) : undefined,
      slack: memory.budgetBytes > 0 ? memory : undefined,
      lookup: (name) => {
        try {
          const conn = this.#registry.get(this.#decoder.decode(name));
          // Registered only once the mesh claim is in: until then, not a destination.
          return conn?.name === undefined ? undefined : conn;
        } catch {
          return undefined; // not UTF-8: cannot be a registered name
        }
      },
      finished: (conn) => this.#tasks.delete(conn),
      ended: (conn, reason) => {
        inbox?.release(conn);
        if (this.#connections.delete(conn)) this.#options.connectionGate?.release();
        this.#endedCount++;
        stats.disconnects[reason] = (stats.disconnects[reason] ?? 0) + 1;
      },
      count: (event, bytes) => {
        if (event === "delivered") {
          stats.messages++;
          stats.bytes += bytes;
          let bucket = 0;
          const bounds = MESSAGE_SIZE_BUCKETS_BYTES;
          while (bucket < bounds.length && bytes > bounds[bucket]) bucket++;
          stats.messageSizes[bucket]++;
        } else {
          stats.dropped[event] = (stats.dropped[event] ?? 0) + 1;
        }
      },
    };
  }
}

/** Options that have no default: absent means off. */
type OptionalKeys =
  | "tls"
  | "tlsPort"
  | "auth"
  | "registerRate"
  | "sharedMemory"
  | "mesh"
  | "connectionGate"
  | "ipLimits";

type Options =
  & Required<Omit<RelayServerOptions, OptionalKeys>>
  & Pick<RelayServerOptions, OptionalKeys>;
