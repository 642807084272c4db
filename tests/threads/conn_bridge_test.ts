import assert from "node:assert/strict";
import { bridgeConn, BridgedConn } from "../../lib/threads/conn_bridge.ts";
import { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import { bytes, MemoryConn, text, waitFor } from "../_helpers/relay.ts";

/** A few turns of the event loop (messages between the two ends cross in them). */
async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setTimeout(r, 0));
}

function bridged(conn: MemoryConn) {
  const { port1, port2 } = new MessageChannel();
  const bridge = bridgeConn(conn, port1);
  const remote = new BridgedConn(port2, conn.remoteAddr);
  return { bridge, remote };
}

Deno.test("conn bridge: bytes cross only as the far side reads, at most what it asks for", async () => {
  const conn = new MemoryConn();
  const { bridge, remote } = bridged(conn);
  try {
    conn.feed(new Uint8Array(1 << 20));
    conn.feed("tail");
    await turns();
    assert.equal(conn.unread, (1 << 20) + 4, "nothing read ahead");
    const p = new Uint8Array(10);
    assert.equal(await remote.read(p), 10);
    assert.equal(conn.unread, (1 << 20) + 4 - 10, "ten bytes taken, no more");
    const big = new Uint8Array(1 << 20);
    assert.equal(await remote.read(big), (1 << 20) - 10);
    const last = new Uint8Array(16);
    const n = await remote.read(last);
    assert.equal(text(last.subarray(0, n!)), "tail");
    assert.equal(remote.remoteAddr, conn.remoteAddr);
  } finally {
    remote.close();
    await bridge.closed;
  }
  assert.equal(conn.closed, true, "closing the far side closes the connection");
});

Deno.test("conn bridge: a write resolves once the connection took it; a stalled one holds", async () => {
  const conn = new MemoryConn(true); // takes no bytes until closed
  const { bridge, remote } = bridged(conn);
  const data = bytes("held");
  let settled = false;
  const write = remote.write(data).finally(() => settled = true);
  await turns();
  assert.equal(settled, false, "held while the connection does not take it");
  await assert.rejects(() => remote.write(bytes("x")), /One write at a time/);
  conn.close(); // its owner closed it
  await assert.rejects(() => write, Deno.errors.BadResource);
  remote.close();
  await bridge.closed;

  const kept = new MemoryConn(true);
  const third = bridged(kept);
  const pending = third.remote.write(bytes("held"));
  const reading = third.remote.read(new Uint8Array(4));
  await turns();
  third.bridge.close(); // the relay stops: the far side is told
  await assert.rejects(() => pending, Deno.errors.BadResource);
  assert.equal(await reading, null);
  assert.equal(kept.closed, true);
  third.remote.close();

  const open = new MemoryConn();
  const other = bridged(open);
  const payload = bytes("hello");
  assert.equal(await other.remote.write(payload), 5);
  payload.fill(0); // the bytes crossed as a copy: the caller may reuse its buffer at once
  assert.equal(open.text, "hello");
  other.remote.close();
  await other.bridge.closed;
});

Deno.test("conn bridge: the connection's end and its errors reach the far side", async () => {
  const conn = new MemoryConn();
  const { bridge, remote } = bridged(conn);
  const reading = remote.read(new Uint8Array(8));
  await turns();
  conn.close(); // its owner closed it: end of input
  assert.equal(await reading, null);
  assert.equal(await remote.read(new Uint8Array(8)), null, "and stays at the end");
  await assert.rejects(() => remote.write(bytes("x")), Deno.errors.BadResource);
  remote.close();
  await bridge.closed;
  await assert.rejects(() => remote.read(new Uint8Array(1)), Deno.errors.BadResource);
  remote.close(); // twice is fine
});

Deno.test("threads: connections handed to serve() run on the workers, across them, and end with the relay", async () => {
  const relay = await ThreadedRelay.listen({ hostname: "127.0.0.1", port: 0, threads: 2 });
  const conns: MemoryConn[] = [];
  try {
    const rx = new MemoryConn();
    const tx = new MemoryConn();
    relay.serve(rx, 0);
    relay.serve(tx, 1);
    conns.push(rx, tx);
    rx.feed("rx|");
    tx.feed("tx|");
    await waitFor(() => relay.workerOf("rx") === 0 && relay.workerOf("tx") === 1, 5_000, "both");
    tx.feed("rx|5|hello");
    await waitFor(() => rx.text === "tx|5|hello", 5_000, "the message across workers");
    // Placed on the worker with the fewest handed-over connections: one more on each.
    const a = new MemoryConn();
    const b = new MemoryConn();
    relay.serve(a);
    relay.serve(b);
    conns.push(a, b);
    await waitFor(
      () => relay.statsNow().workers.every((w) => w.relay.connections === 2),
      5_000,
      "two connections on each worker",
    );
    // Its owner closing it ends it on its worker, and frees its name.
    tx.close();
    await waitFor(() => relay.workerOf("tx") === undefined, 5_000, "tx freed");
    assert.throws(() => relay.serve(new MemoryConn(), 2), RangeError);
  } finally {
    await relay.close();
  }
  assert.ok(conns.every((c) => c.closed), "every handed-over connection closed with the relay");
  const late = new MemoryConn();
  relay.serve(late);
  assert.equal(late.closed, true, "closed at once once the relay is closing");
});
