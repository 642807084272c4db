/**
 * The transports every transport and stream test runs against: NATS (one real nats-server,
 * one connection per node) and in-process MessagePorts.
 * @module
 */

import { NatsTransport } from "../../lib/cluster/nats_transport.ts";
import { createPortMesh } from "../../lib/cluster/port_transport.ts";
import type { NodeTransport, TransportReceiver } from "../../lib/cluster/transport.ts";
import { connectTo, NATS_SKIP, NatsServer } from "./_nats.ts";

/** Transports for a set of nodes, closed together. */
export interface TransportSet extends AsyncDisposable {
  get(node: string): NodeTransport;
  /** Kills the NATS server under the nodes (NATS only). */
  server?: NatsServer;
}

/** A named way to build a {@linkcode TransportSet}. */
export interface TransportKind {
  name: string;
  /** Why tests on this kind are skipped, if they are. */
  skip?: string;
  make(nodes: string[], options?: { maxInFlightBytes?: number }): Promise<TransportSet>;
}

/** NATS and MessagePort transports. */
export const TRANSPORT_KINDS: TransportKind[] = [
  {
    name: "ports",
    make(nodes) {
      const mesh = createPortMesh(nodes);
      return Promise.resolve({
        get: (node) => mesh.get(node)!,
        async [Symbol.asyncDispose]() {
          for (const t of mesh.values()) await t.close();
        },
      });
    },
  },
  {
    name: "nats",
    skip: NATS_SKIP,
    async make(nodes, options = {}) {
      const server = await NatsServer.start();
      const transports = new Map<string, NatsTransport>();
      try {
        for (const node of nodes) {
          const nc = await connectTo(server.url, node);
          transports.set(
            node,
            await NatsTransport.open(nc, { node, ownsConnection: true, ...options }),
          );
        }
      } catch (error) {
        for (const t of transports.values()) await t.close();
        await server.stop();
        throw error;
      }
      return {
        server,
        get: (node) => transports.get(node)!,
        async [Symbol.asyncDispose]() {
          for (const t of transports.values()) await t.close();
          await server.stop();
        },
      };
    },
  },
];

/** A transport that drops the packets whose publish index (0-based) is in `drop`. */
export class DroppingTransport implements NodeTransport {
  readonly #inner: NodeTransport;
  readonly #drop: (index: number, bytes: Uint8Array) => boolean;
  #count = 0;
  /** Packets dropped so far. */
  dropped = 0;

  constructor(inner: NodeTransport, drop: (index: number, bytes: Uint8Array) => boolean) {
    this.#inner = inner;
    this.#drop = drop;
  }
  get node(): string {
    return this.#inner.node;
  }
  get maxPacketBytes(): number {
    return this.#inner.maxPacketBytes;
  }
  /** Packets handed to the inner transport. */
  get published(): number {
    return this.#count - this.dropped;
  }
  publish(to: string, bytes: Uint8Array): Promise<void> | undefined {
    if (this.#drop(this.#count++, bytes)) {
      this.dropped++;
      return undefined;
    }
    return this.#inner.publish(to, bytes);
  }
  listen(receiver: TransportReceiver): void {
    this.#inner.listen(receiver);
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Collects packets and resets a transport hands up. */
export class Collector implements TransportReceiver {
  readonly packets: Uint8Array[] = [];
  readonly resets: string[] = [];
  #waiters: { n: number; resolve: () => void }[] = [];

  packet(bytes: Uint8Array): void {
    this.packets.push(bytes);
    this.#waiters = this.#waiters.filter((w) => {
      if (this.packets.length < w.n) return true;
      w.resolve();
      return false;
    });
  }
  reset(reason: string): void {
    this.resets.push(reason);
  }

  /** Resolves once `n` packets arrived; rejects after `timeoutMs`. */
  async waitFor(n: number, timeoutMs = 5_000): Promise<void> {
    if (this.packets.length >= n) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        new Promise<void>((resolve) => this.#waiters.push({ n, resolve })),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`Got ${this.packets.length} of ${n} packets`)),
            timeoutMs,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}
