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
} from "./connection.ts";
import {
  DEFAULT_PORT,
  IDLE_TIMEOUT_MS,
  MAX_BUFFER_BYTES,
  MAX_CONNECTIONS,
  MAX_MESSAGE_BYTES,
  REGISTER_TIMEOUT_MS,
  WRITE_TIMEOUT_MS,
} from "./limits.ts";
import type { Registration } from "./protocol.ts";
import { Registry } from "./registry.ts";
import { ANNOUNCE_CATEGORY } from "./log.ts";

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
   * Time a new connection has to send its name.
   * @default {3000}
   */
  registerTimeoutMs?: number;
  /**
   * A client that sends nothing for this long is disconnected.
   * @default {30000}
   */
  idleTimeoutMs?: number;
  /**
   * A receiver that accepts no bytes for this long while data waits is disconnected.
   * @default {30000}
   */
  writeTimeoutMs?: number;
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
}

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
}

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
  readonly #listener: Deno.Listener;
  readonly #registry = new Registry<Client>();
  readonly #connections = new Set<Client>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #log: Logger = getLogger(["relay", "server"]);
  readonly #options: Required<RelayServerOptions>;
  readonly #sweep: ReturnType<typeof setInterval>;
  readonly #stop = new AbortController();
  readonly #acceptLoop: Promise<void>;
  #closing: Promise<void> | undefined;
  #nextId = 1;
  readonly #stats = {
    accepted: 0,
    messages: 0,
    bytes: 0,
    refused: {} as Record<string, number>,
    dropped: {} as Record<string, number>,
    disconnects: {} as Partial<Record<DisconnectReason, number>>,
  };
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });
  readonly #host: ConnectionHost;

  private constructor(listener: Deno.Listener, options: Required<RelayServerOptions>) {
    this.#listener = listener;
    this.#options = options;
    this.#host = this.#makeHost();
    const shortest = Math.min(
      options.registerTimeoutMs,
      options.idleTimeoutMs,
      options.writeTimeoutMs,
    );
    const every = Math.max(MIN_SWEEP_MS, Math.min(MAX_SWEEP_MS, Math.floor(shortest / 4)));
    this.#sweep = setInterval(() => this.#checkTimeouts(), every);
    this.#acceptLoop = this.#accept();
  }

  /**
   * Starts a relay listening on `hostname:port`.
   * @throws {Deno.errors.AddrInUse} and other listen errors
   */
  static listen(options: RelayServerOptions = {}): Promise<RelayServer> {
    const full: Required<RelayServerOptions> = {
      hostname: options.hostname ?? "0.0.0.0",
      port: options.port ?? DEFAULT_PORT,
      registerTimeoutMs: options.registerTimeoutMs ?? REGISTER_TIMEOUT_MS,
      idleTimeoutMs: options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
      writeTimeoutMs: options.writeTimeoutMs ?? WRITE_TIMEOUT_MS,
      maxMessageBytes: options.maxMessageBytes ?? MAX_MESSAGE_BYTES,
      maxBufferBytes: options.maxBufferBytes ?? MAX_BUFFER_BYTES,
      maxConnections: options.maxConnections ?? MAX_CONNECTIONS,
      deliver: options.deliver ?? "framed",
      shutdownGraceMs: options.shutdownGraceMs ?? 0,
    };
    for (const key of Object.keys(full) as (keyof RelayServerOptions)[]) {
      const value = full[key];
      if (typeof value === "number" && (!Number.isFinite(value) || value < 0)) {
        throw new RangeError(`Invalid ${key}: ${value}`);
      }
    }
    const listener = Deno.listen({ hostname: full.hostname, port: full.port });
    const server = new RelayServer(listener, full);
    getLogger(ANNOUNCE_CATEGORY).info("Listening on {hostname}:{port}", {
      hostname: full.hostname,
      port: server.port,
    });
    return Promise.resolve(server);
  }

  /** The port the server listens on (useful with port 0). */
  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  /** The address the server listens on. */
  get hostname(): string {
    return (this.#listener.addr as Deno.NetAddr).hostname;
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
    };
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
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#acceptLoop;
    const grace = this.#options.shutdownGraceMs;
    if (grace > 0 && this.#connections.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const drained = Promise.all([...this.#connections].map((c) => c.outbox.drained()));
      await Promise.race([drained, new Promise((r) => timer = setTimeout(r, grace))]);
      clearTimeout(timer);
    }
    clearInterval(this.#sweep);
    for (const conn of [...this.#connections]) conn.close("server_shutdown");
    await Promise.allSettled([...this.#tasks]);
    this.#log.info("Stopped");
  }

  async #accept(): Promise<void> {
    let backoff = 0;
    while (!this.#stop.signal.aborted) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
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

  #admitConnection(conn: Deno.Conn): void {
    this.#stats.accepted++;
    if (this.#connections.size >= this.#options.maxConnections) {
      this.#refuse(conn, "too_many_connections");
      return;
    }
    try {
      (conn as Deno.TcpConn).setNoDelay(true); // writes are already batched; Nagle would only add latency
    } catch {
      // Not a TCP socket option here (e.g. the socket already closed).
    }
    const client = new Connection(conn, this.#host, this.#nextId++);
    this.#connections.add(client);
    this.#log.info("Connection from {remote}", { id: client.id, remote: client.remote });
    const task = client.run();
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  #refuse(conn: Deno.Conn, reason: string): void {
    this.#stats.refused[reason] = (this.#stats.refused[reason] ?? 0) + 1;
    const addr = conn.remoteAddr as Deno.NetAddr;
    this.#log.info("Refused {remote}: {reason}", {
      remote: `${addr.hostname}:${addr.port}`,
      reason,
    });
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
        if (now - c.since > registerTimeoutMs) {
          c.close("register_timeout", `No name within ${registerTimeoutMs} ms`);
        }
      } else if (!c.waiting && now - c.lastActivity > idleTimeoutMs) {
        c.close("idle_timeout", `Nothing sent for ${idleTimeoutMs} ms`);
      }
      if (!c.closed && c.outbox.stalledMs(now) > writeTimeoutMs) {
        c.close("slow_consumer", `Accepted no bytes for ${writeTimeoutMs} ms`);
      }
    }
  }

  /** What connections see of the server. */
  #makeHost(): ConnectionHost {
    const options = this.#options;
    const stats = this.#stats;
    return {
      limits: { maxMessageBytes: options.maxMessageBytes, maxBufferBytes: options.maxBufferBytes },
      deliver: options.deliver,
      log: getLogger(["relay", "conn"]),
      admit: (_conn: Client, _registration: Registration) => Promise.resolve(undefined),
      claim: (name, conn) => this.#registry.claim(name, conn),
      release: (name, conn) => this.#registry.release(name, conn),
      lookup: (name) => {
        try {
          return this.#registry.get(this.#decoder.decode(name));
        } catch {
          return undefined; // not UTF-8: cannot be a registered name
        }
      },
      ended: (conn, reason) => {
        this.#connections.delete(conn);
        stats.disconnects[reason] = (stats.disconnects[reason] ?? 0) + 1;
      },
      count: (event, bytes) => {
        if (event === "delivered") {
          stats.messages++;
          stats.bytes += bytes;
        } else {
          stats.dropped[event] = (stats.dropped[event] ?? 0) + 1;
        }
      },
    };
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
