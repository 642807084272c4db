/**
 * Timeouts: held-back senders and idleness, the write timeout turned off, and the defaults
 * (3 s register, 30 s idle, 30 s write) measured once each, all at the same time.
 */
import assert from "node:assert/strict";
import { RelayServer, type RelayServerOptions } from "../../lib/relay/server.ts";
import { bytes, expectText, RawPeer, stalledPair, waitFor } from "../_helpers/relay.ts";

function listen(options: RelayServerOptions = {}): Promise<RelayServer> {
  return RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...options });
}

Deno.test("time held back by a full receiver is not idle", async () => {
  await using server = await listen({
    idleTimeoutMs: 300,
    writeTimeoutMs: 1_200,
    maxBufferBytes: 64 * 1024,
  });
  const { rx, tx } = await stalledPair(server);
  // The receiver keeps alive but takes no bytes; the sender's one frame fills its queue.
  const keepalive = setInterval(() => rx.feed("rx|0|"), 100);
  try {
    tx.feed(new Uint8Array([...bytes("rx|100000|"), ...new Uint8Array(100_000)]));
    // Held back four idle timeouts long, until the receiver is dropped as a slow consumer.
    await waitFor(() => server.stats().disconnects.slow_consumer === 1, 3_000, "slow consumer");
  } finally {
    clearInterval(keepalive);
  }
  assert.equal(tx.closed, false, "the held sender was not taken for idle");
  // Released now, with nothing more to read: the wait itself counted as activity.
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(tx.closed, false, "the time it was held does not count once it goes on");
  tx.feed("tx|2|ok");
  await waitFor(() => tx.text === "tx|2|ok", 2_000, "the sender's own message");
  assert.equal(server.stats().disconnects.idle_timeout, undefined);
});

Deno.test("with the write timeout off, a sender held back past the idle timeout is let go", async () => {
  await using server = await listen({
    idleTimeoutMs: 300,
    writeTimeoutMs: 0,
    maxBufferBytes: 64 * 1024,
  });
  const { rx, tx } = await stalledPair(server);
  const keepalive = setInterval(() => rx.feed("rx|0|"), 100);
  try {
    const started = performance.now();
    tx.feed(new Uint8Array([...bytes("rx|100000|"), ...new Uint8Array(100_000)]));
    await waitFor(() => tx.closed, 3_000, "the held sender to be let go");
    const ms = performance.now() - started;
    assert.ok(ms >= 300, `let go after ${ms} ms, before the idle timeout`);
    assert.equal(server.stats().disconnects.held_back, 1);
    // The receiver is not dropped: with the write timeout off, slowness is allowed.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(rx.closed, false);
    assert.equal(server.stats().disconnects.slow_consumer, undefined);
  } finally {
    clearInterval(keepalive);
  }
});

Deno.test("zero-length frames to another client are never forwarded", async () => {
  await using server = await listen();
  await using alice = await RawPeer.connect(server.port, "alice");
  await using bob = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "registration");
  await alice.write("bob|0|bob|0|bob|2|hibob|0|");
  // Had `alice|0|` been forwarded, it would come first.
  await expectText(bob, "alice|2|hi");
  assert.ok(await bob.stillOpen(150), "nothing after the one real message");
  assert.equal(server.stats().messages, 1);
});

Deno.test({
  name: "default timeouts: 3 s to register, 30 s idle, 30 s without the receiver reading",
  // One slow test for the three defaults, run side by side (about 31 s in all).
  async fn() {
    await using server = await listen();
    const register = (async () => {
      const started = performance.now();
      await using silent = await RawPeer.connect(server.port);
      await silent.closed(6_000);
      return (performance.now() - started) / 1000;
    })();
    const idle = (async () => {
      await using peer = await RawPeer.connect(server.port, "idle");
      // Timed from before the last bytes are sent: the relay's idle clock starts when it reads
      // them, which can be well before their echo reaches this test on a busy machine.
      const started = performance.now();
      await peer.write("idle|2|up");
      await expectText(peer, "idle|2|up");
      await peer.closed(35_000);
      return (performance.now() - started) / 1000;
    })();
    const write = (async () => {
      await using rx = await RawPeer.connect(server.port, "stalled");
      await using tx = await RawPeer.connect(server.port, "pusher");
      await rx.write("stalled|0|");
      await tx.write("pusher|2|up");
      await expectText(tx, "pusher|2|up");
      // The receiver keeps alive, so only the write timeout can end it.
      const keepalive = setInterval(() => rx.write("stalled|0|").catch(() => {}), 5_000);
      const started = performance.now();
      const frame = new Uint8Array([...bytes(`stalled|${1 << 20}|`), ...new Uint8Array(1 << 20)]);
      let stop = false;
      const pushing = (async () => {
        while (!stop) await tx.write(frame, 40_000);
      })().catch(() => {});
      try {
        // Watched from the relay's side: reading rx here would drain it.
        await waitFor(
          () => server.stats().disconnects.slow_consumer === 1,
          40_000,
          "write timeout",
        );
        return (performance.now() - started) / 1000;
      } finally {
        clearInterval(keepalive);
        stop = true;
        await tx.close();
        await pushing;
      }
    })();
    const [registerS, idleS, writeS] = await Promise.all([register, idle, write]);
    console.log(
      `register ${registerS.toFixed(1)} s, idle ${idleS.toFixed(1)} s, write ${
        writeS.toFixed(1)
      } s`,
    );
    assert.ok(registerS >= 2.9 && registerS < 4.5, `register timeout after ${registerS} s`);
    assert.ok(idleS >= 29.9 && idleS < 32, `idle timeout after ${idleS} s`);
    assert.ok(writeS >= 29.9 && writeS < 33, `write timeout after ${writeS} s`);
    const { disconnects } = server.stats();
    assert.equal(disconnects.register_timeout, 1);
    assert.equal(disconnects.idle_timeout, 1);
    assert.equal(disconnects.slow_consumer, 1);
  },
});
