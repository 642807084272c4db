/**
 * The node transport over core NATS: each node subscribes to its own subject
 * (`relay.node.<node>`) and others publish packets there. Per-node subjects (not per-name)
 * because a fresh subscription's interest takes time to reach the other servers of a NATS
 * cluster; a node's subject exists from its start, long before any name points at it.
 *
 * nats.js ignores socket backpressure, so this transport bounds what is in flight itself:
 * after {@linkcode NatsTransportOptions.maxInFlightBytes} it waits for a flush (a PING/PONG
 * round trip, which means the server has read everything before it). `publish()` keeps a
 * reference to the payload until it is written, so payloads are never reused.
 * @module
 */

import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { TRANSPORT_IN_FLIGHT_BYTES } from "./limits.ts";
import { checkNodeName, type NodeTransport, type TransportReceiver } from "./transport.ts";

/** Subject prefix by default: node `b` listens on `relay.node.b`. */
export const DEFAULT_SUBJECT_PREFIX = "relay.node";

/** Options of {@linkcode NatsTransport}. */
export interface NatsTransportOptions {
  /** This node's name (a subject token). */
  node: string;
  /**
   * Subjects are `<prefix>.<node>`.
   * @default DEFAULT_SUBJECT_PREFIX
   */
  subjectPrefix?: string;
  /**
   * Bytes published and not yet acknowledged by a flush before `publish` waits.
   * @default TRANSPORT_IN_FLIGHT_BYTES
   */
  maxInFlightBytes?: number;
  /**
   * Close the NATS connection on {@linkcode NatsTransport.close}.
   * @default false
   */
  ownsConnection?: boolean;
}

/** A node transport on one NATS connection. */
export class NatsTransport implements NodeTransport {
  /** This node's name. */
  readonly node: string;
  /** The server's `max_payload`, read from its INFO. */
  readonly maxPacketBytes: number;
  readonly #nc: NatsConnection;
  readonly #prefix: string;
  readonly #maxInFlight: number;
  readonly #owns: boolean;
  readonly #sub: Subscription;
  #receiver: TransportReceiver | undefined;
  /** Bytes published since the last acknowledged flush. */
  #inFlight = 0;
  #flushing: Promise<void> | undefined;
  #closed = false;
  #disposed = false;
  readonly #statusDone: Promise<void>;

  private constructor(nc: NatsConnection, options: NatsTransportOptions) {
    this.node = checkNodeName(options.node);
    this.#nc = nc;
    this.#prefix = options.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX;
    this.#maxInFlight = options.maxInFlightBytes ?? TRANSPORT_IN_FLIGHT_BYTES;
    this.#owns = options.ownsConnection ?? false;
    const maxPayload = nc.info?.max_payload;
    if (!maxPayload) throw new Error("NATS connection has no server info");
    this.maxPacketBytes = maxPayload;
    this.#sub = nc.subscribe(`${this.#prefix}.${this.node}`, {
      callback: (error, msg) => {
        if (error) this.#receiver?.reset("transport_reset");
        else if (!this.#closed) {
          // transport-node hands out Buffers, whose slice() is a view: give plain arrays.
          const data = msg.data;
          this.#receiver?.packet(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        }
      },
    });
    this.#statusDone = this.#watchStatus();
  }

  /**
   * Subscribes this node's subject on `nc` and waits until the server has the subscription.
   * @example
   * ```ts ignore
   * const nc = await connect({ servers: "nats://127.0.0.1:4222" });
   * await using transport = await NatsTransport.open(nc, { node: "a" });
   * await transport.publish("b", new Uint8Array([1, 2, 3]));
   * ```
   */
  static async open(nc: NatsConnection, options: NatsTransportOptions): Promise<NatsTransport> {
    const transport = new NatsTransport(nc, options);
    await nc.flush();
    return transport;
  }

  async #watchStatus(): Promise<void> {
    for await (const status of this.#nc.status()) {
      if (this.#closed) break;
      // Anything published to this node while it was away is gone: say so, so pairs close.
      if (status.type === "disconnect" || status.type === "slowConsumer") {
        this.#receiver?.reset("transport_reset");
      }
    }
  }

  /** Publishes `bytes` to node `to`; a promise to wait on when too much is in flight. */
  publish(to: string, bytes: Uint8Array): Promise<void> | undefined {
    if (this.#closed) throw new Error("Transport is closed");
    if (bytes.length > this.maxPacketBytes) {
      throw new RangeError(`Packet of ${bytes.length} bytes is over max_payload`);
    }
    this.#nc.publish(`${this.#prefix}.${to}`, bytes);
    this.#inFlight += bytes.length;
    // Flush early (at half the bound) so the pipe stays full while the round trip runs.
    if (this.#inFlight >= this.#maxInFlight / 2) this.#flushing ??= this.#flush();
    if (this.#inFlight >= this.#maxInFlight && this.#flushing) return this.#room();
    return undefined;
  }

  async #room(): Promise<void> {
    while (this.#inFlight >= this.#maxInFlight && this.#flushing) await this.#flushing;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#inFlight >= this.#maxInFlight / 2 && !this.#closed) {
        const covered = this.#inFlight;
        await this.#nc.flush();
        this.#inFlight -= covered;
      }
    } catch {
      // The connection closed: publish() throws from now on.
      this.#closed = true;
    } finally {
      this.#flushing = undefined;
    }
  }

  /** Sets who gets incoming packets. */
  listen(receiver: TransportReceiver): void {
    this.#receiver = receiver;
  }

  /** Bytes published and not yet acknowledged (for tests and metrics). */
  get inFlightBytes(): number {
    return this.#inFlight;
  }

  /** Unsubscribes (and closes the connection if it owns it); safe to call twice. */
  async close(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#closed = true;
    if (!this.#sub.isClosed()) this.#sub.unsubscribe();
    if (this.#owns && !this.#nc.isClosed()) await this.#nc.close();
    // The status iterator ends only when the connection closes; do not wait on a shared one.
    if (this.#owns) await this.#statusDone;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
