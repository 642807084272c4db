import assert from "node:assert/strict";
import { WorkerMesh } from "../../lib/threads/worker_mesh.ts";
import { NameTable } from "../../lib/threads/name_table.ts";
import { PresenceLog } from "../../lib/threads/presence_log.ts";
import { sharedBudgetBuffer, sharedUsedBytes } from "../../lib/relay/memory_budget.ts";
import type { PairReceiver } from "../../lib/cluster/pair_receiver.ts";
import { WORKER_PAIR_WINDOW_BYTES } from "../../lib/limits.ts";
import { waitFor } from "../_helpers/relay.ts";

const KiB = 1024;

Deno.test("threads: a stream-layer pair between workers charges what waits for its receiver to the budget, at most one window", async () => {
  const table = NameTable.create(16).buffer;
  const presenceLog = PresenceLog.create().buffer;
  const budget = sharedBudgetBuffer(2);
  const channel = new MessageChannel();
  const mesh = (index: number, port: MessagePort) =>
    new WorkerMesh({
      index,
      table,
      presenceLog,
      peers: new Map([[`w${1 - index}`, port]]),
      hint: () => {},
      maxMessageBytes: 16 * 1024 * KiB,
      ringBytes: 64 * KiB,
      budget: { buffer: budget, slot: index },
    });
  await using w0 = mesh(0, channel.port1);
  await using w1 = mesh(1, channel.port2);
  let receiver: PairReceiver | undefined;
  w1.listen({ pair: (r) => receiver = r, fenced: () => {}, changed: () => {} });
  w0.listen({ pair: (r) => r.close(), fenced: () => {}, changed: () => {} });
  // Opened before worker 1's ring reaches worker 0: this pair takes the stream layer.
  const pair = w0.open("w1", "tx|rx");
  const message = new Uint8Array(4 * WORKER_PAIR_WINDOW_BYTES).fill(1);
  const sent = pair.send(message);
  // Nobody reads: what came waits on worker 1, charged to its slot, and no more than the window.
  await waitFor(() => receiver !== undefined && receiver.bufferedBytes > 0, 5_000, "the pair");
  await waitFor(() => sharedUsedBytes(budget) > 0, 5_000, "the chunks charged");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(receiver!.bufferedBytes, WORKER_PAIR_WINDOW_BYTES, "one window in flight");
  assert.equal(sharedUsedBytes(budget), receiver!.bufferedBytes);
  // Read (as the receiving server does into a queue, charged there): no longer charged here.
  let got = 0;
  while (got < message.length) {
    const chunk = await receiver!.read(AbortSignal.timeout(5_000));
    assert.ok(chunk !== null);
    got += chunk.bytes.length;
  }
  await sent;
  assert.equal(got, message.length);
  await waitFor(() => sharedUsedBytes(budget) === 0, 5_000, "the budget given back");
  // A receiver that closes with chunks waiting gives them back too.
  const again = pair.send(message);
  await waitFor(() => sharedUsedBytes(budget) >= WORKER_PAIR_WINDOW_BYTES, 5_000, "charged");
  receiver!.close("receiver_closed");
  assert.equal(sharedUsedBytes(budget), 0);
  await again.catch(() => {});
  pair.end();
});
