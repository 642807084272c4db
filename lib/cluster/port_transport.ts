/**
 * An in-process node transport over MessagePorts: one port per peer, packets moved by
 * transferring their ArrayBuffer (no copy when the array spans its whole buffer). It serves
 * worker threads of one process (issue 15) and tests, with the same layer above it as NATS.
 * @module
 */

import { checkNodeName, type NodeTransport, type TransportReceiver } from "./transport.ts";

/** Largest packet by default: the same as NATS's default `max_payload`, so chunking is tested. */
export const PORT_MAX_PACKET_BYTES = 1024 * 1024;

/** Options of {@linkcode PortTransport}. */
export interface PortTransportOptions {
  /**
   * Largest packet accepted.
   * @default PORT_MAX_PACKET_BYTES
   */
  maxPacketBytes?: number;
}

/** A node transport whose peers are reached through MessagePorts. */
export class PortTransport implements NodeTransport {
  /** This node's name. */
  readonly node: string;
  /** Largest packet accepted. */
  readonly maxPacketBytes: number;
  readonly #ports: Map<string, MessagePort>;
  #receiver: TransportReceiver | undefined;
  #closed = false;

  /**
   * A node's transport; `createPortMesh` makes a full mesh of them.
   * @param node this node's name
   * @param ports one port per peer node, keyed by the peer's name
   */
  constructor(node: string, ports: Map<string, MessagePort>, options: PortTransportOptions = {}) {
    this.node = checkNodeName(node);
    this.maxPacketBytes = options.maxPacketBytes ?? PORT_MAX_PACKET_BYTES;
    this.#ports = ports;
    for (const port of ports.values()) {
      port.onmessage = (event: MessageEvent<ArrayBuffer>) => {
        if (!this.#closed) this.#receiver?.packet(new Uint8Array(event.data));
      };
    }
  }

  /** Sends `bytes` to `to`; the buffer is transferred when the array spans all of it. */
  publish(to: string, bytes: Uint8Array): undefined {
    if (this.#closed) throw new Error("Transport is closed");
    if (bytes.length > this.maxPacketBytes) {
      throw new RangeError(`Packet of ${bytes.length} bytes is over the limit`);
    }
    const port = this.#ports.get(to);
    if (!port) throw new Error(`No port to node ${to}`);
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength &&
      bytes.buffer instanceof ArrayBuffer;
    const buffer = whole ? bytes.buffer as ArrayBuffer : bytes.slice().buffer;
    port.postMessage(buffer, [buffer]);
  }

  /** Sets who gets incoming packets. */
  listen(receiver: TransportReceiver): void {
    this.#receiver = receiver;
  }

  /** Closes every port; safe to call twice. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const port of this.#ports.values()) port.close();
    }
    return Promise.resolve();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** A full mesh of port transports between `nodes`, in this thread (tests, or before handing
 * each node's ports to its worker). */
export function createPortMesh(
  nodes: readonly string[],
  options: PortTransportOptions = {},
): Map<string, PortTransport> {
  const ports = new Map(nodes.map((n) => [n, new Map<string, MessagePort>()]));
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      const channel = new MessageChannel();
      ports.get(nodes[i])!.set(nodes[j], channel.port1);
      ports.get(nodes[j])!.set(nodes[i], channel.port2);
    }
  }
  return new Map(nodes.map((n) => [n, new PortTransport(n, ports.get(n)!, options)]));
}
