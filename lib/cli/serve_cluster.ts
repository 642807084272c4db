/**
 * `relay serve --cluster nats://…`: the cluster flags and joining the cluster. The NATS client
 * (lib/cluster/) is loaded here by a dynamic `import()`, only when `--cluster` is given.
 * @module
 */

import type { Logger } from "@logtape/logtape";
import type { Flag, ParsedFlags } from "./flag_table.ts";
import { UsageError } from "./flags.ts";
import type { ClusterMesh } from "../cluster/mesh.ts";
import { MAX_NODE_NAME_BYTES } from "../limits.ts";
import { describeError } from "./common.ts";
import { type ClusterSettings, joinCluster as join } from "../cluster/join.ts";
import { credsProblem } from "../cluster/creds.ts";

export { ClusterJoinError, type ClusterSettings } from "../cluster/join.ts";

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

/**
 * The default node name: the host name (letters, digits, `-`, `_` only) and a random suffix,
 * at most `room` bytes.
 */
export function defaultNodeName(room: number = MAX_NODE_NAME_BYTES): string {
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
  return `${host.slice(0, room - suffix.length - 1)}-${suffix}`;
}

/**
 * Reads and checks the cluster flags; undefined without `--cluster`. With `--threads N` the
 * process is still one node of that name (its workers share it, lib/threads/cluster_mesh.ts).
 */
export async function clusterSettings(
  flags: ParsedFlags,
  _threads = 1,
): Promise<ClusterSettings | undefined> {
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
  const credsWrong = creds === undefined ? undefined : await credsProblem(creds);
  if (credsWrong !== undefined) {
    throw new UsageError(
      `${flags.label("cluster-creds")} ${flags.string("cluster-creds")}: ${credsWrong}`,
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

/**
 * Joins the cluster as one node (`--threads 1`; with more, worker 0 joins for the process);
 * logs the join and every rejoin, retrying for `CLUSTER_JOIN_TIMEOUT_MS` (lib/cluster/join.ts).
 * @throws {ClusterJoinError} when the cluster could not be joined in that time
 */
export function joinCluster(
  settings: ClusterSettings,
  log: Logger,
  signal?: AbortSignal,
): Promise<ClusterMesh> {
  return join(settings, log, signal, describeError);
}
