/**
 * Joining the cluster at start (`relay serve --cluster`): the settings the CLI checked, and a
 * join that is retried while NATS comes up. The NATS client is loaded here by a dynamic
 * `import()`, only when a cluster is joined. With `--threads N` the process is one node:
 * worker 0 joins, for every worker (lib/threads/cluster_mesh.ts).
 * @module
 */

import type { Logger } from "@logtape/logtape";
import type { ClusterMesh } from "./mesh.ts";
import {
  CLUSTER_JOIN_TIMEOUT_MS,
  LEASE_RENEW_MS,
  LEASE_TTL_MS,
  REJOIN_RETRY_MS,
} from "../limits.ts";
import { errorText } from "../util/async.ts";
import { permanentJoinFailure } from "./join_errors.ts";

/** What `--cluster` and its flags ask for, checked before anything starts. */
export interface ClusterSettings {
  /** The NATS servers, `nats://HOST:PORT`. */
  servers: string[];
  /** This node's name in the cluster. */
  node: string;
  /** Replicas of the buckets when this node creates them. */
  replicas: number;
  /** NATS credentials (JWT and NKey seed), the file's text. */
  creds?: string;
  /** PEM CA certificate of the NATS servers (turns on TLS). */
  tlsCa?: string;
}

/** A failure to join the cluster at start: a runtime failure (exit 1), one line. */
export class ClusterJoinError extends Error {
  /** @param message says which servers and why */
  constructor(message: string) {
    super(message);
    this.name = "ClusterJoinError";
  }
}

/**
 * Joins the cluster (loads the NATS client now); logs the join and every rejoin. NATS started
 * at the same moment (a compose file) may not serve JetStream yet: joining is retried for
 * `CLUSTER_JOIN_TIMEOUT_MS`, with a warning each time.
 * @throws {ClusterJoinError} when the cluster could not be joined in that time
 */
export async function joinCluster(
  settings: ClusterSettings,
  log: Logger,
  signal?: AbortSignal,
  describe: (error: unknown) => string = errorText,
): Promise<ClusterMesh> {
  const { ClusterMesh } = await import("../cluster/mesh.ts");
  const { credsAuthenticator } = await import("@nats-io/transport-node");
  const connection: Record<string, unknown> = {};
  if (settings.creds !== undefined) {
    connection.authenticator = credsAuthenticator(new TextEncoder().encode(settings.creds));
  }
  if (settings.tlsCa !== undefined) connection.tls = { ca: settings.tlsCa };
  let first = true;
  const deadline = performance.now() + CLUSTER_JOIN_TIMEOUT_MS;
  for (;;) {
    try {
      return await ClusterMesh.start({
        servers: settings.servers,
        node: settings.node,
        replicas: settings.replicas,
        connection,
        onJoined: (node) => {
          log.info(
            "{how} cluster as node {node} via {server}: lease {lease} s, renewed every {renew} s",
            {
              how: first ? "Joined" : "Rejoined",
              node: settings.node,
              server: node.nc.getServer(),
              lease: LEASE_TTL_MS / 1000,
              renew: LEASE_RENEW_MS / 1000,
            },
          );
          first = false;
        },
        onRejoinFailed: (error) => {
          log.warn("Rejoining the cluster failed, retrying: {error}", {
            error: describe(error),
          });
        },
      });
    } catch (error) {
      const why = describe(error);
      const permanent = permanentJoinFailure(error); // retrying would be refused alike
      if (permanent || performance.now() + REJOIN_RETRY_MS > deadline || signal?.aborted) {
        throw new ClusterJoinError(
          `Cannot join the cluster at ${settings.servers.join(",")}: ${why}${
            permanent ? `: ${permanent}` : ""
          }`,
        );
      }
      log.warn("Cannot join the cluster yet ({error}); retrying", { error: why });
      await new Promise((resolve) => setTimeout(resolve, REJOIN_RETRY_MS));
    }
  }
}
