/**
 * The node transport: the only thing the cluster's routing layer needs from the network.
 * It moves whole packets from this node to a named node, and hands packets from any node to
 * one receiver. It promises order per sending node and nothing else: packets may be lost on a
 * reset (credit, sequence numbers and chunking live above it, in `ClusterStreams`).
 *
 * Implementations: `NatsTransport` (per-node subjects on NATS) between processes and
 * `PortTransport` (MessagePorts) between workers of one process.
 * @module
 */

/** What a transport calls on the layer above it. */
export interface TransportReceiver {
  /** A packet from some node, in that node's order. The receiver may keep `bytes`. */
  packet(bytes: Uint8Array): void;
  /**
   * Packets to or from this node may have been lost (for example a NATS reconnect): every
   * pair must close rather than risk a silent gap.
   */
  reset(reason: string): void;
}

/** Moves packets between nodes. */
export interface NodeTransport extends AsyncDisposable {
  /** This node's name. */
  readonly node: string;
  /** Largest packet `publish` accepts, in bytes (NATS: the server's `max_payload`). */
  readonly maxPacketBytes: number;
  /**
   * Sends `bytes` to node `to`. The transport owns `bytes` from the call on: never change or
   * reuse the array afterwards. Returns nothing while the transport has room, or a promise
   * that resolves once it has room again: a caller that awaits it bounds what is in flight,
   * and a caller that publishes several packets without awaiting in between lets the
   * transport write them together (one socket write, not one per packet).
   * @throws {RangeError} when `bytes` is over {@linkcode maxPacketBytes}
   * @throws {Error} when the transport is closed
   */
  publish(to: string, bytes: Uint8Array): Promise<void> | undefined;
  /** Sets who gets incoming packets and resets (one receiver; a second call replaces it). */
  listen(receiver: TransportReceiver): void;
  /** Stops sending and receiving; safe to call twice. */
  close(): Promise<void>;
}

/** Node names are NATS subject tokens: letters, digits, `-` and `_`, at most 64 bytes. */
export const NODE_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Returns `node` if it is a valid node name.
 * @throws {TypeError} when `node` is not a valid node name
 */
export function checkNodeName(node: string): string {
  if (!NODE_NAME_PATTERN.test(node)) {
    throw new TypeError(`Node name must be 1 to 64 letters, digits, '-' or '_': ${node}`);
  }
  return node;
}
