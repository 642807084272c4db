/**
 * The tunnel: one relay name that exposes local services to peers and forwards local ports
 * (or stdin/stdout) to peers' services, staying connected through relay restarts.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { RegistrationError, RelayClient, type RelayClientOptions } from "../client/client.ts";
import {
  IDLE_TIMEOUT_MS,
  KEEPALIVE_MS,
  TUNNEL_LINK_BUFFER_BYTES,
  TUNNEL_OPEN_TIMEOUT_MS,
} from "../limits.ts";
import { errorText, sleep } from "../util/async.ts";
import type { Stream, StreamConn } from "./stream.ts";
import { TunnelSession } from "./session.ts";
import type { TunnelSessionStats } from "./stats.ts";
import type { Dialer, Target } from "./dial.ts";
import type { TunnelLink } from "./link.ts";
import type { PacketCipher } from "./crypto.ts";

export type { Target } from "./dial.ts";
export type { TunnelLink } from "./link.ts";
export type { RelayClientOptions } from "../client/client.ts";
/** Default time for a peer to accept a stream (TUNNEL_OPEN_TIMEOUT_MS). */
export const DEFAULT_OPEN_TIMEOUT_MS: number = TUNNEL_OPEN_TIMEOUT_MS;

/** Makes a new relay link; called again after each disconnect. */
export type LinkFactory = (signal: AbortSignal) => Promise<TunnelLink>;

/** Options of a {@linkcode Tunnel}. */
export interface TunnelOptions {
  /** Connects and registers the tunnel's name; see {@linkcode relayLinkFactory}. */
  connect: LinkFactory;
  /** Services peers may open, by name; only these targets are ever dialled. */
  expose?: ReadonlyMap<string, Target>;
  /** Peers allowed to open streams; absent or empty lets any peer. */
  allow?: readonly string[];
  /**
   * Receive window per stream in bytes.
   * @default {2097152}
   */
  windowBytes?: number;
  /**
   * PING interval towards quiet peers with open streams.
   * @default {10000}
   */
  keepaliveMs?: number;
  /**
   * Time for a peer to answer and accept a stream, and for the relay link to come back
   * before a new local connection is given up.
   * @default {10000}
   */
  openTimeoutMs?: number;
  /**
   * Time to connect to an exposed target.
   * @default {5000}
   */
  dialTimeoutMs?: number;
  /**
   * First delay before reconnecting; doubles per failure, with jitter.
   * @default {200}
   */
  reconnectMinMs?: number;
  /**
   * Longest delay between reconnect attempts.
   * @default {5000}
   */
  reconnectMaxMs?: number;
  /**
   * After the tunnel has been connected once, how long `name_taken` refusals are retried
   * before they count as final: the name may still be held by this tunnel's own dead
   * connection until the relay's idle timeout drops it. On the first connect `name_taken`
   * is final at once: another client holds the name.
   * @default {2 * IDLE_TIMEOUT_MS}
   */
  nameTakenGraceMs?: number;
  /** Makes the cipher of each session (end-to-end encryption); see crypto.ts. */
  cipher?: (name: string) => PacketCipher;
  /** Dials exposed targets (tests replace it). */
  dial?: Dialer;
}

/** A local port forwarded to a peer's service. */
export interface ForwardOptions {
  /**
   * Address to listen on.
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** Peer tunnel name. */
  peer: string;
  /**
   * Service of the peer.
   * @default {"default"}
   */
  service?: string;
}

const log = getLogger(["relay", "tunnel"]);

/** Service name when none is given. */
export const DEFAULT_SERVICE = "default";

/** Registration refusals that no retry can fix: the tunnel stops and reports them. */
const FINAL_REFUSALS: ReadonlySet<string> = new Set([
  "tls_port", // a plaintext tunnel at a TLS port: retrying cannot help
  "bad_token",
  "auth_required",
  "invalid_name",
  "unsupported_version",
]);

/**
 * A tunnel process's engine: keeps a relay link up (reconnecting with backoff and jitter),
 * runs a {@linkcode TunnelSession} on each link, and serves forwards.
 *
 * @example Expose a web server as lab/web and reach it from another tunnel
 * ```ts
 * import assert from "node:assert/strict";
 * import { RelayServer } from "../relay/server.ts";
 *
 * await using relay = await RelayServer.listen({ hostname: "127.0.0.1", port: 0 });
 * await using web = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () =>
 *   new Response("hello from lab"));
 * await using lab = new Tunnel({
 *   connect: relayLinkFactory({ port: relay.port, name: "lab" }),
 *   expose: new Map([["web", { hostname: "127.0.0.1", port: web.addr.port }]]),
 * });
 * await using laptop = new Tunnel({
 *   connect: relayLinkFactory({ port: relay.port, name: "laptop" }),
 * });
 * await Promise.all([lab.ready(), laptop.ready()]);
 * const addr = laptop.forward({ port: 0, peer: "lab", service: "web" });
 * const res = await fetch(`http://127.0.0.1:${addr.port}/`);
 * assert.equal(await res.text(), "hello from lab");
 * ```
 */
export class Tunnel implements AsyncDisposable {
  readonly #options: TunnelOptions;
  readonly #abort = new AbortController();
  readonly #listeners = new Set<Deno.Listener>();
  readonly #tasks = new Set<Promise<unknown>>();
  #session: TunnelSession | undefined;
  #sessionWaiters: (() => void)[] = [];
  #running: Promise<void>;
  #closing: Promise<void> | undefined;
  #connects = 0;
  #failure: RegistrationError | undefined;
  #nameTakenSince: number | undefined;
  #warnedAllow = false;
  #settle!: (failure: RegistrationError | undefined) => void;
  /**
   * Settles when the tunnel stops for good: with `undefined` once {@linkcode close} is
   * called, or with the relay's refusal when it refused the name in a way retrying cannot
   * fix (`bad_token`, `auth_required`, `invalid_name`, `name_taken` by another client).
   * Transient failures are retried and never settle it.
   */
  readonly done: Promise<RegistrationError | undefined> = new Promise((resolve) => {
    this.#settle = resolve;
  });

  /** Starts connecting at once; see {@linkcode TunnelOptions}. */
  constructor(options: TunnelOptions) {
    this.#options = options;
    this.#running = this.#run();
  }

  /** The current session, while the relay link is up. */
  get session(): TunnelSession | undefined {
    return this.#session;
  }

  /** How many times a relay link was established. */
  get connects(): number {
    return this.#connects;
  }

  /** Counters of the current session, if any. */
  stats(): TunnelSessionStats | undefined {
    return this.#session?.stats();
  }

  /**
   * Resolves once the relay link is up.
   * @throws {Error} after `timeoutMs`, or when the tunnel is closed
   */
  async ready(timeoutMs = DEFAULT_OPEN_TIMEOUT_MS): Promise<TunnelSession> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.#failure) throw this.#failure;
      if (this.#abort.signal.aborted) throw new Error("Tunnel is closed");
      const session = this.#session;
      if (session && !session.closed) return session;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`Relay not connected within ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      let waiter: (() => void) | undefined;
      await new Promise<void>((resolve) => {
        waiter = resolve;
        this.#sessionWaiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#sessionWaiters = this.#sessionWaiters.filter((w) => w !== waiter);
    }
  }

  /**
   * Opens a stream to `peer`'s `service` carrying `conn`, waiting for the relay link if it
   * is down. On failure `conn` is closed and the error rethrown.
   */
  async open(peer: string, service: string, conn: StreamConn): Promise<Stream> {
    const timeoutMs = this.#options.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS;
    try {
      const session = await this.ready(timeoutMs);
      return await session.open(peer, service, conn);
    } catch (error) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
      throw error;
    }
  }

  /**
   * Listens on a local port; every accepted connection becomes a stream to the peer's
   * service. The listener lives until the tunnel is closed, across reconnects.
   * @returns the address listened on (its port, when 0 was asked)
   */
  forward(options: ForwardOptions): Deno.NetAddr {
    if (this.#abort.signal.aborted) throw new Error("Tunnel is closed");
    const listener = Deno.listen({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port,
    });
    this.#listeners.add(listener);
    const service = options.service ?? DEFAULT_SERVICE;
    const addr = listener.addr as Deno.NetAddr;
    log.info("Forwarding {addr} to {peer}/{service}", {
      addr: `${addr.hostname}:${addr.port}`,
      peer: options.peer,
      service,
    });
    this.#track(this.#acceptLoop(listener, options.peer, service));
    return addr;
  }

  async #acceptLoop(listener: Deno.Listener, peer: string, service: string): Promise<void> {
    try {
      for await (const conn of listener) {
        (conn as Deno.TcpConn).setNoDelay?.(true);
        this.#track(
          this.open(peer, service, conn).catch((error) => {
            log.warn("Cannot forward a connection to {peer}/{service}: {error}", {
              peer,
              service,
              error: errorText(error),
            });
          }),
        );
      }
    } catch (error) {
      if (!this.#abort.signal.aborted) {
        log.error("Listener failed: {error}", { error: errorText(error) });
      }
    } finally {
      this.#listeners.delete(listener);
    }
  }

  /**
   * Carries one stream to `peer`'s `service` over `conn` (stdin/stdout by default), as an
   * SSH ProxyCommand does. Ends when the stream ends or, as `nc` does, once the peer has
   * finished sending and its bytes are written out: a process cannot half-close its stdout.
   * @returns undefined after a clean end, or the reason the stream was reset
   */
  async stdio(
    peer: string,
    service = DEFAULT_SERVICE,
    conn: StdioConn = stdioConn(),
  ): Promise<string | undefined> {
    const stream = await this.open(peer, service, conn);
    return await Promise.race([stream.done, conn.outputEnded.then(() => undefined)]);
  }

  #track(task: Promise<unknown>): void {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    let failures = 0;
    while (!signal.aborted) {
      let link: TunnelLink;
      try {
        link = await this.#options.connect(signal);
      } catch (error) {
        if (signal.aborted) break;
        const final = this.#finalRefusal(error);
        if (final) {
          // Debug only: the failure is what `done` resolves to, and the CLI prints it once.
          log.debug("The relay refused this tunnel ({error}); not retrying", {
            error: final.message,
          });
          this.#failure = final;
          this.#settle(final);
          for (const w of this.#sessionWaiters.splice(0)) w();
          break;
        }
        failures++;
        const delay = backoffMs(failures, this.#options);
        const level = failures === 1 || failures % 10 === 0 ? "warn" : "debug";
        log[level]("Cannot connect to the relay ({error}); retrying in {delay} ms", {
          error: errorText(error),
          delay,
        });
        await sleep(delay, signal);
        continue;
      }
      if (signal.aborted) {
        await link.close();
        break;
      }
      failures = 0;
      this.#nameTakenSince = undefined;
      this.#connects++;
      // With a secret, a peer proves itself by its key, so unowned names do not matter.
      if (
        link.namesOwned === false && this.#options.allow?.length && !this.#options.cipher &&
        !this.#warnedAllow
      ) {
        this.#warnedAllow = true;
        log.warn(
          "--allow trusts relay names, but this relay does not own names (no auth file): " +
            "any client can register an allowed name; use --secret-file to prove who a peer is",
        );
      }
      const session = new TunnelSession({
        link,
        services: this.#options.expose,
        allow: this.#options.allow?.length ? new Set(this.#options.allow) : undefined,
        windowBytes: this.#options.windowBytes,
        keepaliveMs: this.#options.keepaliveMs ?? KEEPALIVE_MS,
        openTimeoutMs: this.#options.openTimeoutMs,
        dialTimeoutMs: this.#options.dialTimeoutMs,
        dial: this.#options.dial,
        cipher: this.#options.cipher?.(link.name),
      });
      this.#session = session;
      log.info("Connected to the relay as {name}", { name: link.name });
      const waiters = this.#sessionWaiters;
      this.#sessionWaiters = [];
      for (const w of waiters) w();
      await session.run();
      if (this.#session === session) this.#session = undefined;
      if (signal.aborted) break;
      failures = 1;
      const delay = backoffMs(failures, this.#options);
      log.warn("Lost the relay connection; reconnecting in {delay} ms", { delay });
      await sleep(delay, signal);
    }
  }

  /**
   * Stops listening, ends every stream (telling peers), closes the relay link and stops
   * reconnecting. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#abort.abort();
      this.#settle(undefined);
      for (const l of this.#listeners) {
        try {
          l.close();
        } catch {
          // Already closed.
        }
      }
      for (const w of this.#sessionWaiters) w();
      await this.#session?.close("Tunnel closed");
      await this.#running;
      await Promise.allSettled([...this.#tasks]);
    })();
    return this.#closing;
  }

  /** Same as {@linkcode Tunnel.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The refusal in `error` when retrying cannot fix it, else `undefined`. */
  #finalRefusal(error: unknown): RegistrationError | undefined {
    if (!(error instanceof RegistrationError)) {
      this.#nameTakenSince = undefined;
      return undefined;
    }
    if (FINAL_REFUSALS.has(error.reason)) return error;
    if (error.reason !== "name_taken") return undefined;
    // Never connected: another client holds the name. Connected before: it may be this
    // tunnel's own dead connection, which the relay drops within its idle timeout.
    if (this.#connects === 0) return error;
    const now = performance.now();
    this.#nameTakenSince ??= now;
    const graceMs = this.#options.nameTakenGraceMs ?? 2 * IDLE_TIMEOUT_MS;
    return now - this.#nameTakenSince >= graceMs ? error : undefined;
  }
}

/**
 * Delay before reconnect attempt `failures` (1 = first): exponential from the minimum to
 * the maximum, each drawn from its upper half at random so that tunnels cut off together
 * do not all return at the same instant.
 */
export function backoffMs(
  failures: number,
  options: { reconnectMinMs?: number; reconnectMaxMs?: number } = {},
  random: () => number = Math.random,
): number {
  const min = options.reconnectMinMs ?? 200;
  const max = options.reconnectMaxMs ?? 5_000;
  const ceiling = Math.min(max, min * 2 ** Math.min(30, Math.max(0, failures - 1)));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

/** Options of {@linkcode relayLinkFactory}: those of `RelayClient.connect`, less the signal. */
export type RelayLinkOptions = Omit<RelayClientOptions, "signal">;

/**
 * A {@linkcode LinkFactory} that connects a {@linkcode RelayClient}. The link passes on the
 * relay's delivery errors for offline peers, so streams to them fail at once.
 */
export function relayLinkFactory(options: RelayLinkOptions): LinkFactory {
  return async (signal) => {
    const client = await RelayClient.connect({
      sendBufferBytes: TUNNEL_LINK_BUFFER_BYTES,
      ...options,
      signal,
      onError: (error) => {
        options.onError?.(error);
        if (error.reason === "unknown_destination") {
          link.onUndeliverable?.(error.dest, error.message);
        }
      },
    });
    const link: TunnelLink = {
      name: client.name,
      namesOwned: client.welcome.names_owned,
      send: (dest, payload) => client.send(dest, payload),
      post: (dest, payload, release, headroom) =>
        client.sendOwned(dest, payload, release, headroom),
      receive: () => client.receive(),
      close: () => client.close(),
    };
    return link;
  };
}

/** The local end of a `--stdio` stream. */
export interface StdioConn extends StreamConn {
  /** Settles when the peer finished sending and everything was written out. */
  readonly outputEnded: Promise<void>;
}

/** Standard input and output (or the given pair) as the local end of a stream. */
export function stdioConn(
  input: { read(p: Uint8Array): Promise<number | null>; close(): void } = Deno.stdin,
  output: { write(p: Uint8Array): Promise<number>; close(): void } = Deno.stdout,
): StdioConn {
  let inputOpen = true;
  let outputOpen = true;
  let ended!: () => void;
  const outputEnded = new Promise<void>((resolve) => ended = resolve);
  const closeOutput = () => {
    if (!outputOpen) return;
    outputOpen = false;
    try {
      output.close();
    } catch {
      // Already closed.
    }
    ended();
  };
  return {
    outputEnded,
    read: (p) => input.read(p),
    write: (p) => output.write(p),
    closeWrite() {
      closeOutput();
      return Promise.resolve();
    },
    close() {
      closeOutput();
      if (inputOpen) {
        inputOpen = false;
        try {
          input.close();
        } catch {
          // Already closed.
        }
      }
    },
  };
}
