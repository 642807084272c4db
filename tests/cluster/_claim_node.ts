/**
 * A cluster node in its own process, for tests that SIGKILL it: takes its lease, claims the
 * names given, prints one JSON line with the results, then holds them until killed.
 *
 * Usage: deno run -A tests/cluster/_claim_node.ts SERVER_URL NODE NAME…
 * @module
 */

import { connect } from "@nats-io/transport-node";
import { NodeLease } from "../../lib/cluster/lease.ts";
import { NameClaims } from "../../lib/cluster/claims.ts";

const [url, node, ...names] = Deno.args;
const nc = await connect({ servers: url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
const lease = await NodeLease.start(nc, { node, replicas: 3 });
const claims = await NameClaims.open(nc, lease, { replicas: 3 });
const results = [];
for (const name of names) results.push((await claims.claim(name)).ok);
console.log(JSON.stringify({ ready: true, epoch: lease.epoch, results }));
await lease.fenced; // never, until killed
