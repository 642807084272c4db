/**
 * The counters of a relay on several workers, as one relay's.
 * @module
 */

import { MESSAGE_SIZE_BUCKETS_BYTES, type RelayStats } from "../relay/server.ts";
import type { WorkerStats } from "./messages.ts";

/**
 * The sum of the workers' counters, as one relay's: a message that crossed from one worker to
 * another is counted by both servers as delivered, and once here. With `cluster`, the mesh is
 * the process's one node: its name, the names on other nodes (the siblings' names are this
 * node's), and the pairs in of every worker.
 */
export function sumStats(workers: WorkerStats[], usedBytes: number, cluster = false): RelayStats {
  const all = workers.map((w) => w.relay);
  const out: RelayStats = {
    connections: 0,
    registered: 0,
    accepted: 0,
    refused: {},
    messages: 0,
    bytes: 0,
    dropped: {},
    disconnects: {},
    memory: { usedBytes, budgetBytes: all[0]?.memory.budgetBytes ?? 0 },
    queuedBytes: 0,
    messageSizes: new Array<number>(MESSAGE_SIZE_BUCKETS_BYTES.length + 1).fill(0),
  };
  const add = (into: Record<string, number>, from: Record<string, number | undefined>) => {
    for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + (v ?? 0);
  };
  for (const s of all) {
    out.connections += s.connections;
    out.registered += s.registered;
    out.accepted += s.accepted;
    out.messages += s.messages;
    out.bytes += s.bytes;
    out.queuedBytes += s.queuedBytes;
    add(out.refused, s.refused);
    add(out.dropped, s.dropped);
    add(out.disconnects as Record<string, number>, s.disconnects);
    s.messageSizes.forEach((n, i) => out.messageSizes[i] += n);
  }
  for (const { crossed } of workers) {
    out.messages -= crossed.messages;
    out.bytes -= crossed.bytes;
    crossed.messageSizes.forEach((n, i) => out.messageSizes[i] -= n);
  }
  const mesh = all[0]?.mesh;
  if (cluster && mesh) {
    const remoteNames = { ...mesh.remoteNames };
    delete remoteNames[mesh.node];
    let pairsIn = 0;
    for (const s of all) pairsIn += s.mesh?.pairsIn ?? 0;
    out.mesh = { node: mesh.node, remoteNames, pairsIn };
  }
  return out;
}
