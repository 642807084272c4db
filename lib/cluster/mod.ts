/**
 * Cluster mode (`relay serve --cluster`, docs/CLUSTER.md): {@linkcode ClusterMesh} is the
 * relay server's mesh on NATS, built from the blocks below.
 * Import this module only when cluster mode is on: it loads the NATS client. The root
 * `mod.ts` does not re-export it for that reason.
 *
 * - {@linkcode ClusterNode}: a node's NATS connection, lease, claims, directory and streams.
 * - {@linkcode ClusterStreams} over a {@linkcode NodeTransport} ({@linkcode NatsTransport},
 *   {@linkcode PortTransport}): sender→receiver pairs with chunking, sequence numbers and credit.
 * - {@linkcode NodeLease}, {@linkcode NameClaims}, {@linkcode NameDirectory}: names on JetStream KV.
 * @module
 */

export { ClusterMesh, type ClusterMeshOptions } from "./mesh.ts";
export { ClusterNode, type ClusterNodeOptions } from "./node.ts";
export { ClusterStreams, type ClusterStreamsOptions, type ClusterStreamsStats } from "./streams.ts";
export type { Chunk, PairReceiver } from "./pair_receiver.ts";
export type { PairSender } from "./pair_sender.ts";
export { checkNodeName, type NodeTransport, type TransportReceiver } from "./transport.ts";
export { NatsTransport, type NatsTransportOptions } from "./nats_transport.ts";
export { createPortMesh, PortTransport, type PortTransportOptions } from "./port_transport.ts";
export { NodeLease, type NodeLeaseOptions } from "./lease.ts";
export {
  type ClaimHolder,
  type ClaimResult,
  NameClaims,
  type NameClaimsOptions,
} from "./claims.ts";
export { type DirectoryChange, NameDirectory } from "./directory.ts";
export {
  FENCE_REASONS,
  type FenceReason,
  PAIR_CLOSE_REASONS,
  PairClosedError,
  type PairCloseReason,
} from "./reasons.ts";
export * from "./limits.ts";
