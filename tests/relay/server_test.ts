import assert from "node:assert/strict";
import { RelayServer, type RelayServerOptions } from "../../lib/relay/server.ts";
import { bytes, delay, expectText, RawPeer, waitFor } from "../_helpers/relay.ts";

function listen(options: RelayServerOptions = {}): Promise<RelayServer> {
  return RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...options });
}

/** Connects raw peers with the given names and waits until all are registered. */
async function peers(server: RelayServer, ...names: string[]): Promise<RawPeer[]> {
  const before = server.stats().registered;
  const out = await Promise.all(names.map((n) => RawPeer.connect(server.port, n)));
  await waitFor(() => server.stats().registered === before + names.length, 5_000, "registration");
  return out;
}

Deno.test("relay delivers a message framed with the sender's name", async () => {
  await using server = await listen();
  const [alice, bob] = await peers(server, "alice", "bob");
  await using _a = alice;
  await using _b = bob;
  await alice.write("bob|5|hello");
  await expectText(bob, "alice|5|hello");
  await bob.write("alice|2|hi");
  await expectText(alice, "bob|2|hi");
  assert.equal(server.stats().messages, 2);
});

Deno.test("relay keeps each sender's order and parses many frames per read", async () => {
  await using server = await listen();
  const [alice, bob] = await peers(server, "alice", "bob");
  await using _a = alice;
  await using _b = bob;
  let batch = "";
  let expected = "";
  for (let i = 0; i < 5_000; i++) {
    const payload = `m${i}`;
    batch += `bob|${payload.length}|${payload}`;
    expected += `alice|${payload.length}|${payload}`;
  }
  await alice.write(batch);
  assert.equal(await bob.readText(expected.length), expected);
});

Deno.test("relay handles a stream split at every byte", async () => {
  await using server = await listen();
  const [alice, bob] = await peers(server, "alice", "bob");
  await using _a = alice;
  await using _b = bob;
  alice.conn.setNoDelay(true);
  const frames = "bob|3|abcbob|0|bob|10|0123456789";
  for (const ch of frames) {
    await alice.write(ch);
    await delay(1);
  }
  await expectText(bob, "alice|3|abcalice|10|0123456789");
});

Deno.test("a message to yourself is delivered; zero-length messages never are", async () => {
  await using server = await listen();
  const [alice, bob] = await peers(server, "alice", "bob");
  await using _a = alice;
  await using _b = bob;
  await alice.write("alice|0|bob|0|alice|4|self");
  await expectText(alice, "alice|4|self");
  assert.ok(await bob.stillOpen(100), "bob must receive nothing");
  assert.ok(await alice.stillOpen(50), "nothing more for alice");
});

Deno.test("an unknown destination drops the payload and keeps the sender", async () => {
  await using server = await listen();
  const [alice] = await peers(server, "alice");
  await using _a = alice;
  await alice.write("nobody|5|hello");
  await alice.write("alice|2|ok");
  await expectText(alice, "alice|2|ok");
  assert.equal(server.stats().dropped.unknown_destination, 1);
});

Deno.test("registry rejects a duplicate name and keeps the first", async () => {
  await using server = await listen();
  const [first] = await peers(server, "dev");
  await using _f = first;
  await using second = await RawPeer.connect(server.port, "dev");
  assert.equal((await second.closed()).length, 0);
  await first.write("dev|2|ok");
  await expectText(first, "dev|2|ok");
  assert.equal(server.stats().disconnects.name_taken, 1);
});

Deno.test("a name is free again as soon as its connection ends", async () => {
  await using server = await listen();
  const [first] = await peers(server, "dev");
  await first.close();
  await waitFor(() => server.stats().registered === 0, 5_000, "release");
  const [again] = await peers(server, "dev");
  await using _a = again;
  await again.write("dev|1|x");
  await expectText(again, "dev|1|x");
});

Deno.test("invalid names close the connection", async (t) => {
  await using server = await listen();
  const cases: [string, Uint8Array][] = [
    ["empty", bytes("|")],
    ["control character", bytes("a\tb|")],
    ["DEL", bytes("a\x7fb|")],
    ["longer than 255 bytes", bytes("x".repeat(256) + "|")],
    ["endless, no separator", bytes("y".repeat(600))],
    ["invalid UTF-8", new Uint8Array([0x61, 0xff, 0x7c])],
    ["empty token", bytes("a:|")],
  ];
  for (const [label, input] of cases) {
    await t.step(label, async () => {
      await using peer = await RawPeer.connect(server.port);
      await peer.write(input);
      assert.equal((await peer.closed()).length, 0);
    });
  }
  assert.equal(server.stats().registered, 0);
  await t.step("a 255-byte UTF-8 name is accepted", async () => {
    const name = "é".repeat(127) + "x"; // 255 bytes
    const [peer] = await peers(server, name);
    await using _p = peer;
    await peer.write(`${name}|1|!`);
    assert.equal(await peer.readText(bytes(name).length + 4), `${name}|1|!`);
  });
});

Deno.test("register timeout closes silent and half-named connections", async () => {
  await using server = await listen({ registerTimeoutMs: 150 });
  await using silent = await RawPeer.connect(server.port);
  await using half = await RawPeer.connect(server.port);
  await half.write("half-na");
  const started = Date.now();
  await silent.closed(2_000);
  await half.closed(2_000);
  assert.ok(Date.now() - started < 1_500);
  assert.equal(server.stats().disconnects.register_timeout, 2);
});

Deno.test("protocol errors disconnect only the sender", async (t) => {
  await using server = await listen({ maxMessageBytes: 1024 });
  const [watcher] = await peers(server, "watcher");
  await using _w = watcher;
  const cases: [string, string][] = [
    ["letters in the length", "watcher|12a|"],
    ["empty length", "watcher||"],
    ["sign in the length", "watcher|+5|hello"],
    ["space in the length", "watcher| 5|hello"],
    ["21 digits", "watcher|000000000000000000001|x"],
    ["above the message limit", "watcher|1025|"],
    ["absurd length", "watcher|99999999999999999999|"],
    ["destination longer than 255 bytes", "d".repeat(300)],
  ];
  for (const [label, input] of cases) {
    await t.step(label, async () => {
      const [bad] = await peers(server, "bad");
      await using _b = bad;
      await bad.write(input);
      await bad.closed(2_000);
      await waitFor(() => server.stats().registered === 1, 2_000, "release");
    });
  }
  assert.equal(server.stats().disconnects.protocol_error, cases.length);
  await watcher.write("watcher|2|ok");
  await expectText(watcher, "watcher|2|ok");
});

Deno.test("idle clients are dropped; keepalives and sending keep them", async () => {
  await using server = await listen({ idleTimeoutMs: 300 });
  const [idle, busy, target] = await peers(server, "idle", "busy", "target");
  await using _i = idle;
  await using _b = busy;
  await using _t = target;
  for (let i = 0; i < 6; i++) {
    await delay(100);
    await busy.write("busy|0|");
    // Receiving is not activity: target gets messages but sends nothing.
    await busy.write("target|1|x");
  }
  await idle.closed(1_000);
  await target.closed(1_000);
  assert.ok(await busy.stillOpen(50));
  assert.equal(server.stats().disconnects.idle_timeout, 2);
});

Deno.test("--deliver payload sends only the payload bytes", async () => {
  await using server = await listen({ deliver: "payload" });
  const [a, b] = await peers(server, "a", "b");
  await using _a = a;
  await using _b = b;
  await a.write("b|5|hellob|3|abc");
  await expectText(b, "helloabc");
});

Deno.test("frames from two senders into one receiver never interleave", async () => {
  await using server = await listen({ maxBufferBytes: 256 * 1024 });
  const [s1, s2, rx] = await peers(server, "s1", "s2", "rx");
  await using _1 = s1;
  await using _2 = s2;
  await using _r = rx;
  const sizes = [1, 70_000, 300, 200_000, 16_384, 5, 100_000, 65_536];
  const send = async (peer: RawPeer, tag: number) => {
    for (let round = 0; round < 3; round++) {
      for (const [i, size] of sizes.entries()) {
        const payload = new Uint8Array(size).fill(tag * 16 + i);
        payload[0] = round;
        await peer.write(new Uint8Array([...bytes(`rx|${size}|`), ...payload]));
      }
    }
  };
  const sending = Promise.all([send(s1, 1), send(s2, 2)]);
  const next = { s1: 0, s2: 0 };
  for (let n = 0; n < sizes.length * 6; n++) {
    let header = "";
    while (!/^s[12]\|\d+\|$/.test(header)) header += await rx.readText(1);
    const [from, len] = header.split("|");
    const sender = from as "s1" | "s2";
    const index = next[sender]++;
    const size = sizes[index % sizes.length];
    assert.equal(Number(len), size, `frame ${index} from ${sender}`);
    const payload = await rx.read(size);
    const fill = (sender === "s1" ? 1 : 2) * 16 + (index % sizes.length);
    assert.equal(payload[0], Math.floor(index / sizes.length));
    assert.ok(payload.subarray(1).every((b) => b === fill), `payload of ${sender} #${index}`);
  }
  await sending;
  assert.deepEqual(next, { s1: 24, s2: 24 });
});

Deno.test("a stalled receiver gets everything in order once it reads again", async () => {
  await using server = await listen({ maxBufferBytes: 1024 * 1024 });
  const [tx, rx] = await peers(server, "tx", "rx");
  await using _t = tx;
  await using _r = rx;
  const total = 24 * 1024 * 1024;
  const chunk = 256 * 1024;
  const sending = (async () => {
    for (let at = 0; at < total; at += chunk) {
      const payload = new Uint8Array(chunk);
      for (let i = 0; i < chunk; i += 4096) payload[i] = ((at + i) / 4096) & 0xff;
      await tx.write(new Uint8Array([...bytes(`rx|${chunk}|`), ...payload]));
    }
  })();
  await delay(500); // receiver stalls while the sender pushes
  assert.ok(server.stats().connections === 2, "nobody was dropped");
  for (let at = 0; at < total; at += chunk) {
    const header = `tx|${chunk}|`;
    assert.equal(await rx.readText(header.length), header);
    const payload = await rx.read(chunk);
    for (let i = 0; i < chunk; i += 4096) assert.equal(payload[i], ((at + i) / 4096) & 0xff);
  }
  await sending;
});

Deno.test("a receiver that accepts nothing is disconnected as a slow consumer", async () => {
  await using server = await listen({ maxBufferBytes: 64 * 1024, writeTimeoutMs: 300 });
  const [tx, rx] = await peers(server, "tx", "rx");
  await using _t = tx;
  await using _r = rx;
  const payload = new Uint8Array(1024 * 1024);
  const frame = new Uint8Array([...bytes(`rx|${payload.length}|`), ...payload]);
  // Push until the relay stops taking bytes from the sender; rx never reads.
  const sending = (async () => {
    for (let i = 0; i < 64; i++) await tx.write(frame);
  })();
  await waitFor(() => server.stats().disconnects.slow_consumer === 1, 5_000, "slow consumer");
  // With the receiver gone its frames are discarded and the sender goes on.
  await sending;
  await tx.write("tx|2|ok");
  await expectText(tx, "tx|2|ok");
});

Deno.test("a sender that dies mid-message does not disturb the receiver", async () => {
  await using server = await listen();
  const [tx, other, rx] = await peers(server, "tx", "other", "rx");
  await using _o = other;
  await using _r = rx;
  await tx.write("rx|1000|" + "x".repeat(500));
  await other.write("rx|2|ok");
  await expectText(rx, "other|2|ok");
  await tx.close();
  await waitFor(() => server.stats().connections === 2, 2_000, "sender gone");
  await other.write("rx|3|yes");
  await expectText(rx, "other|3|yes");
});

Deno.test("--max-connections refuses connections past the limit", async () => {
  await using server = await listen({ maxConnections: 2 });
  const [a, b] = await peers(server, "a", "b");
  await using _a = a;
  await using _b = b;
  await using c = await RawPeer.connect(server.port, "c");
  await c.closed(2_000);
  assert.equal(server.stats().refused.too_many_connections, 1);
  await a.write("b|1|z");
  await expectText(b, "a|1|z");
});

Deno.test("close() ends every connection and is safe twice", async () => {
  const server = await listen();
  const [a] = await peers(server, "a");
  await server.close();
  await server.close();
  await a.closed(2_000);
  await a.close();
  await assert.rejects(() => RawPeer.connect(server.port));
});

Deno.test("bad input from one client never disturbs another", async () => {
  await using server = await listen({ registerTimeoutMs: 200 });
  const [a, b] = await peers(server, "a", "b");
  await using _a = a;
  await using _b = b;
  const junk = await Promise.all(Array.from({ length: 20 }, () => RawPeer.connect(server.port)));
  const garbage = crypto.getRandomValues(new Uint8Array(4096));
  await Promise.all(junk.map((p, i) => p.write(i % 2 ? garbage : bytes(`j${i}|x|`))));
  for (const p of junk) await p.close();
  await a.write("b|4|fine");
  await expectText(b, "a|4|fine");
});

Deno.test("a sender that dies mid-way through a streamed large message ends the receiver", async () => {
  await using server = await listen();
  const [tx, rx] = await peers(server, "tx", "rx");
  await using _r = rx;
  await tx.write(new Uint8Array([...bytes("rx|1000000|"), ...new Uint8Array(200_000)]));
  // The first 200 kB go out as they arrive: the receiver has a partial frame.
  assert.equal((await rx.read(200_000 + "tx|1000000|".length)).length, 200_011);
  await tx.close();
  await rx.closed(2_000);
  assert.equal(server.stats().disconnects.sender_aborted, 1);
});

Deno.test("a sender of many medium frames to a stalled receiver is held back", async () => {
  await using server = await listen({ maxBufferBytes: 1024 * 1024 });
  const [tx, rx] = await peers(server, "tx", "rx");
  await using _r = rx;
  const frame = new Uint8Array([...bytes("rx|65536|"), ...new Uint8Array(65536)]);
  let stop = false;
  const sending = (async () => {
    while (!stop) await tx.write(frame);
  })().catch(() => {});
  await delay(1_000);
  // Budget plus what the kernel buffers hold on the way; unbounded would be hundreds of MiB.
  const queued = server.stats().bytes;
  stop = true;
  await tx.close();
  await sending;
  assert.ok(queued < 32 * 1024 * 1024, `relay took ${queued} bytes for a stalled receiver`);
});

Deno.test("a timeout of 0 is off", async () => {
  await using server = await listen({ registerTimeoutMs: 0, idleTimeoutMs: 0, writeTimeoutMs: 0 });
  await using silent = await RawPeer.connect(server.port);
  const [idle] = await peers(server, "idle");
  await using _i = idle;
  assert.ok(await silent.stillOpen(300), "no register timeout");
  assert.ok(await idle.stillOpen(100), "no idle timeout");
  await idle.write("idle|2|ok");
  await expectText(idle, "idle|2|ok");
});

Deno.test("per-connection lines are at debug; an info summary counts the activity when there was some", async () => {
  const { configure, reset } = await import("@logtape/logtape");
  const records: { level: string; message: string; properties: Record<string, unknown> }[] = [];
  await configure({
    reset: true,
    sinks: {
      memory: (r) =>
        records.push({
          level: r.level,
          message: r.message.map((part) => String(part)).join(""),
          properties: r.properties as Record<string, unknown>,
        }),
    },
    loggers: [
      { category: ["relay"], lowestLevel: "info", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  try {
    await using server = await RelayServer.listen({
      hostname: "127.0.0.1",
      port: 0,
      summaryIntervalMs: 100,
      registerTimeoutMs: 400, // the sweep, which logs the summary, runs every 100 ms
    });
    const a = await RawPeer.connect(server.port, "a");
    await using _b = await RawPeer.connect(server.port, "b");
    await waitFor(() => server.stats().registered === 2, 5_000, "registration");
    await a.close();
    await waitFor(() => server.stats().connections === 1, 5_000, "a gone");
    const summary = () =>
      records.find((r) => /connected, .* registered, .* disconnected/.test(r.message));
    await waitFor(() => summary() !== undefined, 5_000, "a summary");
    assert.equal(
      records.filter((r) => /^(Connection from|Registered|Disconnected)/.test(r.message)).length,
      0,
    );
    // The two connections and the disconnect may straddle two summaries: add them up.
    await new Promise((r) => setTimeout(r, 300));
    const summaries = records.filter((r) => /connected, .* registered/.test(r.message));
    const total = (key: string) => summaries.reduce((n, r) => n + Number(r.properties[key]), 0);
    assert.deepEqual([total("connected"), total("newly"), total("disconnected")], [2, 2, 1]);
    const count = summaries.length;
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(
      records.filter((r) => /connected, .* registered/.test(r.message)).length,
      count,
      "no summary without activity",
    );
  } finally {
    await reset();
  }
});
