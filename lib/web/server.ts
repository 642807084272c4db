/**
 * The relay's HTTP side (`relay serve --http-port`): the status page, Prometheus metrics,
 * health checks, JSON APIs, the relay over WebSocket, the browser client and the playground.
 *
 * ```
 * GET /            status page ─┐                       token (when set)
 * GET /api/status  JSON         ├─ StatusSampler ◄─ RelayServer.stats()   token
 * GET /api/events  live (SSE) ──┘                       token
 * GET /api/names   names online (unless listing is off) token
 * GET /metrics     Prometheus text (RelayMetrics)       token
 * GET /healthz /readyz                                  open
 * GET /ws          WebSocket ─► WebSocketConn ─► RelayServer.serve   Origin check
 * GET /client.js /playground /assets/*                  open (reveal nothing)
 * ```
 * @module
 */

import { getLogger, type Logger } from "@logtape/logtape";
import type { RelayServer, TlsCertificate } from "../relay/server.ts";
import { MAX_LISTED_NAMES, StatusSampler, type StatusSnapshot } from "./status.ts";
import { METRICS_CONTENT_TYPE, RelayMetrics } from "./metrics.ts";
import { HttpToken, unauthorized } from "./http_auth.ts";
import { WebSocketConn, WS_MAX_UNREAD_BYTES } from "./ws_conn.ts";
import { MAX_BUFFER_BYTES, MAX_CONNECTIONS, MAX_MESSAGE_BYTES } from "../limits.ts";
import { ASSETS } from "./assets.ts";
import { ANNOUNCE_CATEGORY } from "../util/log_category.ts";

/** Live event streams (status page tabs) open at once; more get 503. */
export const MAX_EVENT_STREAMS = 100;

/** How long the port may stay busy after a TLS reload closes the old listener. */
const REBIND_TIMEOUT_MS = 2_000;

/**
 * What the HTTP side uses of a relay: a {@linkcode RelayServer}, or the view of a relay on
 * several worker threads that one of them serves the web from (`--threads`).
 */
export type WebRelay = Pick<RelayServer, "stats" | "names" | "namesPage" | "serve">;

/** Options of {@linkcode WebServer.listen}. */
export interface WebServerOptions {
  /** The relay to show and to serve `/ws` with. */
  relay: WebRelay;
  /**
   * Address to listen on.
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** TCP port; 0 picks a free one (see {@linkcode WebServer.port}). */
  port: number;
  /** Serve HTTPS with this certificate (the relay's). */
  tls?: TlsCertificate;
  /** Require this token (bearer, or basic-auth password) for `/`, `/api/*` and `/metrics`. */
  token?: string;
  /**
   * Origins allowed to open `/ws`: exact origins such as `https://lab.example.org`, or `*` for
   * any. Empty: the page's own origin only (requests without `Origin`, from programs, pass).
   * @default {[]}
   */
  wsOrigins?: string[];
  /**
   * Whether names may be listed (shown on the status page and in `/api/names`).
   * @default {true}
   */
  listing?: boolean;
  /** The settings in effect, shown on the status page as they are. */
  settings?: Record<string, unknown>;
  /**
   * Bytes one receiver may have queued (the relay's `maxBufferBytes`), for the budget gauges.
   * @default {8388608}
   */
  maxBufferBytes?: number;
  /**
   * The relay's message limit: a WebSocket may have this plus 4 MiB unread (it cannot be paused).
   * @default {16777216}
   */
  maxMessageBytes?: number;
  /**
   * The relay's connection limit, for `/readyz` and the page.
   * @default {16384}
   */
  maxConnections?: number;
}

/**
 * The HTTP side of a relay. Start it with {@linkcode WebServer.listen}; stop it with `close()` or
 * `await using` (before the relay, so that no WebSocket arrives after the relay stopped).
 *
 * @example
 * ```ts
 * import { RelayServer } from "../relay/server.ts";
 * await using relay = await RelayServer.listen({ hostname: "127.0.0.1", port: 0 });
 * await using web = await WebServer.listen({ relay, port: 0 });
 * console.log(`status page on http://127.0.0.1:${web.port}/`);
 * ```
 */
export class WebServer implements AsyncDisposable {
  readonly #relay: WebRelay;
  readonly #options: WebServerOptions;
  readonly #token: HttpToken | undefined;
  readonly #origins: Set<string>;
  readonly #sampler: StatusSampler;
  readonly #metrics: RelayMetrics;
  readonly #sockets = new Set<WebSocketConn>();
  readonly #streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  readonly #log: Logger = getLogger(["relay", "web"]);
  readonly #startedAt = Date.now();
  #http: Deno.HttpServer<Deno.NetAddr>;
  #abort: AbortController;
  readonly #finished: Promise<void>[] = [];
  #closing: Promise<void> | undefined;
  #overflows = 0;
  #reloading: Promise<void> = Promise.resolve();
  /** The certificate served now, if HTTPS. */
  #tls: TlsCertificate | undefined;

  private constructor(options: WebServerOptions) {
    this.#options = options;
    this.#relay = options.relay;
    this.#token = options.token === undefined ? undefined : new HttpToken(options.token);
    this.#origins = new Set(options.wsOrigins ?? []);
    const relay = this.#relay;
    const listing = options.listing ?? true;
    const webSockets = () => this.#sockets.size;
    this.#sampler = new StatusSampler({
      stats: () => relay.stats(),
      names: (prefix, limit) => relay.names(prefix, limit),
      webSockets,
      settings: options.settings ?? {},
      listing,
      startedAt: this.#startedAt,
      maxConnections: options.maxConnections ?? MAX_CONNECTIONS,
      maxBufferBytes: options.maxBufferBytes ?? MAX_BUFFER_BYTES,
    });
    this.#metrics = new RelayMetrics({
      stats: () => relay.stats(),
      webSockets,
      webSocketBufferedBytes: () => this.webSocketBufferedBytes(),
      webSocketOverflows: () => this.#overflows,
      maxBufferBytes: options.maxBufferBytes ?? MAX_BUFFER_BYTES,
      maxConnections: options.maxConnections ?? MAX_CONNECTIONS,
      startedAt: this.#startedAt,
    });
    this.#abort = new AbortController();
    this.#tls = options.tls;
    try {
      this.#http = this.#serve(options.port, options.tls, this.#abort.signal);
    } catch (error) {
      this.#sampler[Symbol.dispose]();
      throw error;
    }
  }

  /**
   * Starts serving on `hostname:port`.
   * @throws {Deno.errors.AddrInUse} and other listen errors, or a bad TLS certificate
   */
  static listen(options: WebServerOptions): Promise<WebServer> {
    const server = new WebServer(options);
    const scheme = options.tls ? "https" : "http";
    getLogger(ANNOUNCE_CATEGORY).info("Web status on {scheme}://{hostname}:{port}/", {
      scheme,
      hostname: server.hostname,
      port: server.port,
    });
    return Promise.resolve(server);
  }

  /** The port served. */
  get port(): number {
    return this.#http.addr.port;
  }

  /** The address served. */
  get hostname(): string {
    return this.#http.addr.hostname;
  }

  /** WebSockets closed for sending more than the relay read (see `WS_MAX_UNREAD_BYTES`). */
  get webSocketOverflows(): number {
    return this.#overflows;
  }

  /** Bytes waiting in WebSocket send buffers now, over all WebSockets. */
  webSocketBufferedBytes(): number {
    let sum = 0;
    for (const socket of this.#sockets) sum += socket.bufferedAmount;
    return sum;
  }

  /** A status snapshot, as `/api/status` returns it. */
  status(): StatusSnapshot {
    return this.#sampler.snapshot();
  }

  /**
   * Serves a new TLS certificate (on SIGHUP): the listener is reopened on the same port with it;
   * requests, event streams and WebSockets already open carry on.
   * @throws when the certificate is bad (the old one stays) or the port cannot be bound again
   */
  setCertificate(tls: TlsCertificate): Promise<void> {
    // One reload at a time, in order: two SIGHUPs in a row never race for the port.
    const run = this.#reloading.then(() => this.#reload(tls));
    this.#reloading = run.catch(() => {});
    return run;
  }

  async #reload(tls: TlsCertificate): Promise<void> {
    if (!this.#tls || this.#closing) throw new TypeError("This server does not serve TLS");
    Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tls }).close();
    const port = this.port;
    this.#abort.abort();
    const deadline = Date.now() + REBIND_TIMEOUT_MS;
    for (;;) {
      const abort = new AbortController();
      try {
        this.#http = this.#serve(port, tls, abort.signal);
        this.#abort = abort;
        this.#tls = tls;
        this.#log.info("Web TLS certificate reloaded");
        return;
      } catch (error) {
        if (!(error instanceof Deno.errors.AddrInUse) || Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }

  /** Stops serving: ends event streams and WebSockets. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Same as {@linkcode WebServer.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    this.#sampler[Symbol.dispose]();
    this.#abort.abort();
    for (const stream of this.#streams) {
      try {
        stream.close();
      } catch {
        // Already closed by the browser.
      }
    }
    this.#streams.clear();
    for (const socket of this.#sockets) socket.close();
    await Promise.all(this.#finished);
  }

  #serve(port: number, tls: TlsCertificate | undefined, signal: AbortSignal) {
    const http = Deno.serve({
      hostname: this.#options.hostname ?? "127.0.0.1",
      port,
      ...(tls ? { cert: tls.cert, key: tls.key } : {}),
      signal,
      onListen: () => {},
      onError: (error) => {
        this.#log.warn("HTTP handler failed: {error}", { error: String(error) });
        return new Response("Internal error\n", { status: 500 });
      },
    }, (request, info) => this.#handle(request, info.remoteAddr));
    this.#finished.push(http.finished);
    return http;
  }

  async #handle(request: Request, remoteAddr: Deno.NetAddr): Promise<Response> {
    const url = new URL(request.url);
    const path = url.pathname;
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("Only GET and HEAD\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    switch (path) {
      case "/healthz":
        return text("ok\n");
      case "/readyz":
        return this.#ready();
      case "/ws":
        return this.#upgrade(request, remoteAddr);
      case "/client.js":
      case "/playground":
      case "/playground/":
        return asset(path === "/client.js" ? "client.js" : "playground.html");
    }
    if (path.startsWith("/assets/")) return asset(path.slice("/assets/".length));
    const guarded = path === "/" || path === "/metrics" || path.startsWith("/api/");
    if (!guarded) return new Response("Not found\n", { status: 404 });
    if (this.#token && !(await this.#token.allows(request))) return unauthorized();
    switch (path) {
      case "/":
        return asset("status.html");
      case "/metrics":
        return new Response(await this.#metrics.text(), {
          headers: { "content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store" },
        });
      case "/api/status": {
        const body: Record<string, unknown> = { ...this.#sampler.snapshot() };
        if (url.searchParams.has("history")) body.history = this.#sampler.history();
        return json(body);
      }
      case "/api/names":
        return this.#names(url);
      case "/api/events":
        return this.#events();
    }
    return new Response("Not found\n", { status: 404 });
  }

  #ready(): Response {
    const stats = this.#relay.stats();
    const max = this.#options.maxConnections ?? Infinity;
    const ready = !this.#closing && stats.connections < max;
    return json({ ready, connections: stats.connections }, ready ? 200 : 503);
  }

  #names(url: URL): Response {
    if (this.#options.listing === false) {
      return json({ error: "listing_disabled", message: "The relay does not list names" }, 403);
    }
    const prefix = url.searchParams.get("prefix") ?? "";
    const after = url.searchParams.get("after") ?? undefined;
    const limitText = url.searchParams.get("limit");
    const limit = limitText === null ? MAX_LISTED_NAMES : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LISTED_NAMES) {
      return json({ error: "bad_request", message: `limit is 1–${MAX_LISTED_NAMES}` }, 400);
    }
    const page = this.#relay.namesPage({ prefix, after, limit, maxJsonBytes: Infinity });
    return json({ names: page.names, more: page.more });
  }

  #events(): Response {
    if (this.#streams.size >= MAX_EVENT_STREAMS) {
      return new Response("Too many live pages open\n", { status: 503 });
    }
    const encoder = new TextEncoder();
    const sampler = this.#sampler;
    const streams = this.#streams;
    let unsubscribe = () => {};
    let self: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        self = controller;
        streams.add(controller);
        const first = { ...sampler.snapshot(), history: sampler.history() };
        controller.enqueue(encoder.encode(`retry: 2000\ndata: ${JSON.stringify(first)}\n\n`));
        unsubscribe = sampler.subscribe((snapshot) => {
          // A page that does not read misses samples instead of growing a queue here.
          if ((controller.desiredSize ?? 0) <= 0) return;
          controller.enqueue(encoder.encode(`data: ${JSON.stringify(snapshot)}\n\n`));
        });
      },
      cancel() {
        unsubscribe();
        streams.delete(self);
      },
    }, { highWaterMark: 4 });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
      },
    });
  }

  #upgrade(request: Request, remoteAddr: Deno.NetAddr): Response {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("This is the relay over WebSocket: connect with a WebSocket\n", {
        status: 426,
        headers: { upgrade: "websocket" },
      });
    }
    const origin = request.headers.get("origin");
    if (!this.#originAllowed(origin, request)) {
      this.#log.info("Refused a WebSocket from origin {origin}", { origin });
      return new Response("This origin may not open the relay's WebSocket\n", { status: 403 });
    }
    if (this.#closing) return new Response("Shutting down\n", { status: 503 });
    const { socket, response } = Deno.upgradeWebSocket(request);
    const conn = new WebSocketConn(socket, {
      remoteAddr,
      maxUnreadBytes: (this.#options.maxMessageBytes ?? MAX_MESSAGE_BYTES) + WS_MAX_UNREAD_BYTES,
      onOverflow: () => {
        this.#overflows++;
        this.#log.info("Closed the WebSocket of {remote}: too much unread input", {
          remote: `${remoteAddr.hostname}:${remoteAddr.port}`,
        });
      },
    });
    this.#sockets.add(conn);
    socket.addEventListener("close", () => this.#sockets.delete(conn));
    socket.addEventListener("open", () => this.#relay.serve(conn), { once: true });
    return response;
  }

  /** Same origin (by host) by default; the listed origins, or any with `*`. */
  #originAllowed(origin: string | null, request: Request): boolean {
    // Programs send no Origin; the check is against web pages of other sites.
    if (origin === null) return true;
    if (this.#origins.has("*") || this.#origins.has(origin)) return true;
    try {
      return new URL(origin).host === request.headers.get("host");
    } catch {
      return false;
    }
  }
}

function asset(name: string): Response {
  const found = ASSETS[name];
  if (!found) return new Response("Not found\n", { status: 404 });
  return new Response(found.body, {
    headers: {
      "content-type": found.type,
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
      ...(found.type.startsWith("text/html")
        ? {
          "content-security-policy":
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; " +
            "frame-ancestors 'none'",
          "referrer-policy": "no-referrer",
        }
        : {}),
    },
  });
}

function text(body: string, status = 200): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
  });
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}
