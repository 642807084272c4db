/**
 * `relay serve --cluster nats://…`: the cluster flags and joining the cluster. The NATS client
 * (lib/cluster/) is loaded here by a dynamic `import()`, only when `--cluster` is given.
 * @module
 */

import type { Logger } from "@logtape/logtape";
import type { Flag, ParsedFlags } from "./flag_table.ts";
import { UsageError } from "./flags.ts";
import type { ClusterMesh } from "../cluster/mesh.ts";
import {
  CLUSTER_JOIN_TIMEOUT_MS,
  LEASE_RENEW_MS,
  LEASE_TTL_MS,
  MAX_NODE_NAME_BYTES,
  REJOIN_RETRY_MS,
} from "../limits.ts";
import { describeError } from "./common.ts";

const CLUSTER_GROUP = "Cluster mode on NATS (off by default; docs/CLUSTER.md)";

/** The cluster flags of `relay serve`. */
export const CLUSTER_FLAGS: readonly Flag[] = [
  {
    name: "cluster",
    env: "RELAY_CLUSTER",
    type: "string",
    value: "URLS",
    help: "join a cluster of relay nodes on NATS: nats://HOST:PORT[,nats://HOST:PORT…]",
    group: CLUSTER_GROUP,
  },
  {
    name: "node-name",
    env: "RELAY_NODE_NAME",
    type: "string",
    value: "NAME",
    defaultText: "host name and a random suffix",
    help: "this node's name in the cluster: letters, digits, - and _, unique per running node",
    group: CLUSTER_GROUP,
  },
  {
    name: "cluster-creds",
    env: "RELAY_CLUSTER_CREDS",
    type: "string",
    value: "FILE",
    help: "NATS credentials file (JWT and NKey seed) for the cluster connection",
    group: CLUSTER_GROUP,
  },
  {
    name: "cluster-tls-ca",
    env: "RELAY_CLUSTER_TLS_CA",
    type: "string",
    value: "FILE",
    help: "PEM CA certificate that signs the NATS servers' certificates (turns on TLS)",
    group: CLUSTER_GROUP,
  },
  {
    name: "cluster-replicas",
    env: "RELAY_CLUSTER_REPLICAS",
    type: "count",
    default: "1",
    help: "replicas of the name and lease buckets when this node creates them (3 on 3 servers)",
    group: CLUSTER_GROUP,
  },
];

const NODE_NAME = new RegExp(`^[A-Za-z0-9_-]{1,${MAX_NODE_NAME_BYTES}}$`);

/** The NATS URLs of `--cluster`, checked. */
export function parseClusterUrls(label: string, text: string): string[] {
  const urls = text.split(",").map((url) => url.trim()).filter((url) => url !== "");
  if (urls.length === 0) throw new UsageError(`${label} needs at least one nats://HOST:PORT`);
  for (const url of urls) {
    const match = /^(nats|tls):\/\/([^/:\s]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$/.exec(url);
    const port = match ? Number(match[3]) : 0;
    if (!match || port < 1 || port > 65535) {
      throw new UsageError(`${label}: ${JSON.stringify(url)} is not nats://HOST:PORT`);
    }
  }
  return urls;
}

/** The default node name: the host name (letters, digits, `-`, `_` only) and a random suffix. */
export function defaultNodeName(): string {
  let host = "relay";
  try {
    host = Deno.hostname().replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "") || host;
  } catch {
    // No host name permission or none set.
  }
  const suffix = Array.from(
    crypto.getRandomValues(new Uint8Array(3)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  return `${host.slice(0, MAX_NODE_NAME_BYTES - suffix.length - 1)}-${suffix}`;
}

/** What `--cluster` and its flags ask for, checked before anything starts. */
export interface ClusterSettings {
  servers: string[];
  node: string;
  replicas: number;
  creds?: string;
  tlsCa?: string;
}

/** Reads and checks the cluster flags; undefined without `--cluster`. */
export async function clusterSettings(flags: ParsedFlags): Promise<ClusterSettings | undefined> {
  const cluster = flags.string("cluster");
  const others = ["node-name", "cluster-creds", "cluster-tls-ca"].filter((f) =>
    flags.string(f) !== undefined
  );
  if (cluster === undefined) {
    if (others.length > 0) throw new UsageError(`${flags.label(others[0])} needs --cluster`);
    return undefined;
  }
  const servers = parseClusterUrls(flags.label("cluster"), cluster);
  const node = flags.string("node-name") ?? defaultNodeName();
  if (!NODE_NAME.test(node)) {
    throw new UsageError(
      `${flags.label("node-name")} ${
        JSON.stringify(node)
      }: use 1-${MAX_NODE_NAME_BYTES} letters, digits, - or _`,
    );
  }
  const read = async (flag: string): Promise<string | undefined> => {
    const path = flags.string(flag);
    if (path === undefined) return undefined;
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      throw new UsageError(`Cannot read ${flags.label(flag)} ${path}: ${describeError(error)}`);
    }
  };
  const creds = await read("cluster-creds");
  if (creds !== undefined && !/-----BEGIN NATS USER JWT-----/.test(creds)) {
    throw new UsageError(
      `${flags.label("cluster-creds")} ${
        flags.string("cluster-creds")
      }: not a NATS credentials file`,
    );
  }
  const tlsCa = await read("cluster-tls-ca");
  if (tlsCa !== undefined && !/-----BEGIN CERTIFICATE-----/.test(tlsCa)) {
    throw new UsageError(
      `${flags.label("cluster-tls-ca")} ${
        flags.string("cluster-tls-ca")
      }: no PEM certificate in it`,
    );
  }
  return { servers, node, replicas: flags.count("cluster-replicas")!, creds, tlsCa };
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
            error: describeError(error),
          });
        },
      });
    } catch (error) {
      const why = describeError(error);
      if (performance.now() + REJOIN_RETRY_MS > deadline || signal?.aborted) {
        throw new ClusterJoinError(
          `Cannot join the cluster at ${settings.servers.join(",")}: ${why}`,
        );
      }
      log.warn("Cannot join the cluster yet ({error}); retrying", { error: why });
      await new Promise((resolve) => setTimeout(resolve, REJOIN_RETRY_MS));
    }
  }
}
