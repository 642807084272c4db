import assert from "node:assert/strict";
import { RelayServer, type RelayServerOptions } from "../../lib/relay/server.ts";
import { AuthPolicy, hashToken } from "../../lib/relay/auth.ts";
import { ControlPeer } from "../_helpers/control.ts";
import { bytes, expectText, RawPeer, text, waitFor } from "../_helpers/relay.ts";
import { encodeControl } from "../../lib/wire/control.ts";
import {
  ERROR_EVENT_INTERVAL_MS,
  MAX_CONTROL_BYTES,
  MAX_ERROR_DESTINATIONS,
  MAX_WATCHED_NAMES,
} from "../../lib/limits.ts";
import { VERSION } from "../../lib/version.ts";

function listen(options: RelayServerOptions = {}) {
  return RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...options });
}

Deno.test("hello gets a welcome with the limits in force, then registered", async (t) => {
  await t.step("defaults", async () => {
    await using server = await listen();
    await using peer = await ControlPeer.connect(server.port, { name: "alice", client: "test" });
    assert.deepEqual(await peer.event(), {
      op: "welcome",
      v: 1,
      relay: VERSION,
      limits: {
        max_message_bytes: 16777216,
        max_control_bytes: MAX_CONTROL_BYTES,
        register_timeout_ms: 3000,
        idle_timeout_ms: 30000,
        keepalive_ms: 10000,
      },
      names_owned: false,
      listing: true,
      deliver: "framed",
    });
    assert.deepEqual(await peer.event(), { op: "registered", name: "alice" });
    assert.equal(server.stats().registered, 1);
  });
  await t.step("options: limits, auth file, listing off, idle timeout off", async () => {
    await using server = await listen({
      maxMessageBytes: 1024,
      registerTimeoutMs: 500,
      idleTimeoutMs: 0,
      listing: false,
      auth: AuthPolicy.fromDigests({ lab: await hashToken("t") }),
    });
    await using peer = await ControlPeer.connect(server.port, {});
    const welcome = await peer.event();
    assert.deepEqual(welcome.limits, {
      max_message_bytes: 1024,
      max_control_bytes: MAX_CONTROL_BYTES,
      register_timeout_ms: 500,
      idle_timeout_ms: 0,
      keepalive_ms: 0,
    });
    assert.equal(welcome.names_owned, true);
    assert.equal(welcome.listing, false);
    // Without a name in hello, registration is a separate request.
    await peer.send({ op: "register", id: "r", name: "bob" });
    assert.deepEqual(await peer.event(), { op: "registered", id: "r", name: "bob" });
  });
});

Deno.test("an opted-in client gets framed delivery even with --deliver payload", async () => {
  await using server = await listen({ deliver: "payload" });
  await using framed = await ControlPeer.register(server.port, "framed");
  await using seed = await RawPeer.connect(server.port, "seed");
  await waitFor(() => server.stats().registered === 2);
  await seed.write("framed|5|hello");
  const got = await framed.next();
  assert.equal(got.name, "seed");
  assert.equal(text(got.payload), "hello");
  await framed.sendTo("seed", "raw");
  await expectText(seed, "raw"); // the seed receiver still gets the payload only
});

Deno.test("registration refusals say why, then close", async (t) => {
  await using server = await listen({
    auth: AuthPolicy.fromDigests({ lab: await hashToken("right") }),
  });
  await using holder = await ControlPeer.register(server.port, "taken");
  const cases: [string, Record<string, unknown>, string][] = [
    ["taken", { name: "taken" }, "name_taken"],
    ["invalid", { name: "a|b" }, "invalid_name"],
    ["too long", { name: "x".repeat(256) }, "invalid_name"],
    ["control char", { name: "a\nb" }, "invalid_name"],
    ["owned, no token", { name: "lab" }, "auth_required"],
    ["owned, wrong token", { name: "lab", token: "wrong" }, "bad_token"],
    ["token with a space", { name: "lab", token: "a b" }, "bad_token"],
    ["version 2", { v: 2, name: "new" }, "unsupported_version"],
  ];
  for (const [label, hello, reason] of cases) {
    await t.step(label, async () => {
      await using peer = await ControlPeer.connect(server.port, hello);
      const frames = await peer.closed();
      const events = frames.map((f) => f.event);
      const refused = events.at(-1);
      assert.equal(refused.op, "refused");
      assert.equal(refused.reason, reason);
      assert.equal(typeof refused.message, "string");
      assert.ok(!JSON.stringify(events).includes("right"), "never shows a token");
    });
  }
  await t.step("the right token registers; the holder kept its name", async () => {
    await using _lab = await ControlPeer.register(server.port, "lab", { token: "right" });
    await holder.sendTo("taken", "still mine");
    assert.equal(text((await holder.next()).payload), "still mine");
  });
});

Deno.test("register rate and register timeout are refused with their reason", async (t) => {
  await t.step("rate_limited", async () => {
    await using server = await listen({ registerRate: { limit: 1, intervalMs: 60_000 } });
    await using _first = await ControlPeer.register(server.port, "one");
    await using second = await ControlPeer.connect(server.port, { name: "two" });
    const events = (await second.closed()).map((f) => f.event);
    assert.equal(events.at(-1).reason, "rate_limited");
  });
  await t.step("register_timeout", async () => {
    await using server = await listen({ registerTimeoutMs: 150 });
    await using peer = await ControlPeer.connect(server.port, {}); // hello, no name
    const events = (await peer.closed(3_000)).map((f) => f.event);
    assert.deepEqual(events.map((e) => e.op), ["welcome", "refused"]);
    assert.equal(events[1].reason, "register_timeout");
    assert.equal(server.stats().disconnects.register_timeout, 1);
  });
});

Deno.test("refusals at accept: refused for an opted-in client, silence for a seed client", async (t) => {
  await t.step("too_many_connections", async () => {
    await using server = await listen({ maxConnections: 1 });
    await using _holder = await ControlPeer.register(server.port, "holder");
    await using opted = await ControlPeer.connect(server.port, { name: "late" });
    const events = (await opted.closed()).map((f) => f.event);
    assert.deepEqual(events.map((e) => [e.op, e.reason]), [["refused", "too_many_connections"]]);
    await using seed = await RawPeer.connect(server.port, "seed");
    assert.equal((await seed.closed()).length, 0);
    assert.equal(server.stats().refused.too_many_connections, 2);
  });
  await t.step("too_many_connections_per_ip", async () => {
    await using server = await listen({ maxConnectionsPerIp: 1 });
    await using _holder = await ControlPeer.register(server.port, "holder");
    await using opted = await ControlPeer.connect(server.port, { name: "late" });
    const events = (await opted.closed()).map((f) => f.event);
    assert.equal(events[0].reason, "too_many_connections_per_ip");
  });
  await t.step("a refused client that says nothing is closed within the peek time", async () => {
    await using server = await listen({ maxConnections: 1 });
    await using _holder = await ControlPeer.register(server.port, "holder");
    await using mute = await RawPeer.connect(server.port);
    assert.equal((await mute.closed(2_000)).length, 0);
  });
});

Deno.test("ping is a barrier: its pong comes after what was sent before is routed", async () => {
  await using server = await listen();
  await using a = await ControlPeer.register(server.port, "a");
  await using b = await ControlPeer.register(server.port, "b");
  const before = Date.now();
  await a.write(
    new Uint8Array([
      ...bytes("b|3|one"),
      ...bytes("nobody|1|x"),
      ...bytes("b|3|two"),
      ...encodeControl({ op: "ping", id: 7 }),
    ]),
  );
  const events = [await a.event(), await a.event()];
  assert.equal(events[0].reason, "unknown_destination");
  const pong = events[1];
  assert.equal(pong.op, "pong");
  assert.equal(pong.id, 7);
  assert.equal(pong.dropped, 1);
  assert.ok(pong.time >= before - 1000 && pong.time <= Date.now() + 1000);
  // Both messages were queued for b before the pong was written.
  assert.equal(server.stats().messages, 2);
  assert.equal(text((await b.next()).payload), "one");
  assert.equal(text((await b.next()).payload), "two");
  await a.send({ op: "ping", id: 8 });
  assert.equal((await a.event()).dropped, 0, "dropped counts since the previous pong");
});

Deno.test("a message whose receiver leaves mid-way counts in the sender's pong dropped", async () => {
  await using server = await listen();
  await using a = await ControlPeer.register(server.port, "a");
  const bob = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "registration");
  const size = 1_000_000;
  const head = bytes(`bob|${size}|`);
  await a.write(new Uint8Array([...head, ...new Uint8Array(300_000)]));
  await bob.read(100_000);
  await bob.close();
  // More of the frame makes the relay write to bob and find it gone.
  await a.write(new Uint8Array(300_000));
  await waitFor(() => server.stats().connections === 1, 5_000, "bob gone");
  await a.write(new Uint8Array(size - 600_000));
  await a.send({ op: "ping", id: 1 });
  const pong = await a.event();
  assert.equal(pong.op, "pong");
  assert.equal(pong.dropped, 1);
  assert.equal(server.stats().dropped.receiver_gone, 1);
  await a.send({ op: "ping", id: 2 });
  assert.equal((await a.event()).dropped, 0, "dropped counts since the previous pong");
});

Deno.test("delivery errors are rate-limited per destination with a count", async () => {
  await using server = await listen();
  await using a = await ControlPeer.register(server.port, "a");
  const five = Array.from({ length: 5 }, () => "ghost|1|x").join("");
  await a.write(five + text(encodeControl({ op: "ping", id: 1 })));
  assert.deepEqual(await a.event(), {
    op: "error",
    reason: "unknown_destination",
    dest: "ghost",
    count: 1,
    message: 'No client has the name "ghost"',
  });
  assert.deepEqual([(await a.event()).op, 0], ["pong", 0]);
  // The four held back are told with the next event about the destination, a window later.
  await new Promise((r) => setTimeout(r, ERROR_EVENT_INTERVAL_MS + 50));
  await a.write("ghost|1|x" + text(encodeControl({ op: "ping", id: 2 })));
  const next = await a.event();
  assert.equal(next.count, 5);
  assert.equal((await a.event()).dropped, 1);
  assert.equal(server.stats().dropped.unknown_destination, 6);
});

Deno.test("delivery errors name at most 64 destinations a second; pong counts them all", async () => {
  await using server = await listen();
  await using a = await ControlPeer.register(server.port, "a");
  const n = MAX_ERROR_DESTINATIONS + 36;
  const frames = Array.from({ length: n }, (_, i) => `ghost${i}|1|x`).join("");
  await a.write(frames + text(encodeControl({ op: "ping" })));
  const events = [];
  for (;;) {
    const e = await a.event();
    if (e.op === "pong") {
      assert.equal(e.dropped, n);
      break;
    }
    events.push(e);
  }
  assert.equal(events.length, MAX_ERROR_DESTINATIONS);
  assert.deepEqual(events[0].dest, "ghost0");
});

Deno.test("an oversized message gets message_too_large, then bye, then close", async () => {
  await using server = await listen({ maxMessageBytes: 1024 });
  await using a = await ControlPeer.register(server.port, "a");
  await using b = await ControlPeer.register(server.port, "b");
  await a.write("b|2048|" + "x".repeat(100));
  const events = (await a.closed()).map((f) => f.event);
  assert.deepEqual(events[0], {
    op: "error",
    reason: "message_too_large",
    dest: "b",
    size: 2048,
    limit: 1024,
    message: "Message of 2048 bytes is larger than the limit of 1024 bytes",
  });
  assert.equal(events[1].op, "bye");
  assert.equal(events[1].reason, "protocol_error");
  assert.equal(events.length, 2);
  assert.ok(await b.quiet(50), "the receiver got nothing and stays");
  assert.equal(server.stats().disconnects.protocol_error, 1);
});

Deno.test("who lists names sorted by UTF-8 bytes, by prefix, in pages", async (t) => {
  await using server = await listen();
  const names = ["lab-02", "lab-01", "Zed", "lab-10", "ü", "\u{1F600}", "\uFFFD", "lab"];
  const peers = await Promise.all(names.map((n) => RawPeer.connect(server.port, n)));
  await using asker = await ControlPeer.register(server.port, "asker");
  await waitFor(() => server.stats().registered === names.length + 1);
  try {
    await t.step("all, sorted by bytes (U+FFFD before U+1F600)", async () => {
      await asker.send({ op: "who", id: 1 });
      assert.deepEqual(await asker.event(), {
        op: "names",
        id: 1,
        names: ["Zed", "asker", "lab", "lab-01", "lab-02", "lab-10", "ü", "\uFFFD", "\u{1F600}"],
        more: false,
      });
    });
    await t.step("prefix, limit and after", async () => {
      await asker.send({ op: "who", id: 2, prefix: "lab-", limit: 2 });
      assert.deepEqual(await asker.event(), {
        op: "names",
        id: 2,
        names: ["lab-01", "lab-02"],
        more: true,
      });
      await asker.send({ op: "who", id: 3, prefix: "lab-", after: "lab-02", limit: 2 });
      assert.deepEqual(await asker.event(), {
        op: "names",
        id: 3,
        names: ["lab-10"],
        more: false,
      });
      await asker.send({ op: "who", id: 4, prefix: "nobody" });
      assert.deepEqual(await asker.event(), { op: "names", id: 4, names: [], more: false });
    });
    await t.step("a bad limit is bad_request and the connection stays", async () => {
      for (const limit of [0, 1001, "5"]) {
        await asker.send({ op: "who", id: 5, limit });
        const e = await asker.event();
        assert.deepEqual([e.op, e.id, e.reason], ["error", 5, "bad_request"]);
      }
    });
    await t.step("the list follows registrations", async () => {
      await peers.pop()!.close(); // "lab" leaves
      await waitFor(() => server.stats().registered === names.length);
      await asker.send({ op: "who", prefix: "lab" });
      assert.deepEqual((await asker.event()).names, ["lab-01", "lab-02", "lab-10"]);
    });
  } finally {
    for (const p of peers) await p.close();
  }
});

Deno.test("who pages are cut to fit one control frame", async () => {
  await using server = await listen();
  const long = Array.from(
    { length: 300 },
    (_, i) => `${String(i).padStart(3, "0")}${"n".repeat(240)}`,
  );
  const peers = await Promise.all(long.map((n) => RawPeer.connect(server.port, n)));
  await using asker = await ControlPeer.register(server.port, "~asker");
  await waitFor(() => server.stats().registered === long.length + 1);
  try {
    const got: string[] = [];
    let after: string | undefined;
    for (let page = 0; page < 10; page++) {
      await asker.send({ op: "who", limit: 1000, after });
      const frame = await asker.next();
      assert.ok(frame.payload.length <= MAX_CONTROL_BYTES, `page of ${frame.payload.length} B`);
      got.push(...frame.event.names);
      if (!frame.event.more) break;
      after = got.at(-1);
    }
    assert.deepEqual(got, [...long, "~asker"]);
  } finally {
    for (const p of peers) await p.close();
  }
});

Deno.test("--listing off refuses who but not watch", async () => {
  await using server = await listen({ listing: false });
  await using a = await ControlPeer.register(server.port, "a");
  await a.send({ op: "who", id: 1 });
  const e = await a.event();
  assert.deepEqual([e.op, e.id, e.reason], ["error", 1, "listing_disabled"]);
  await a.send({ op: "watch", id: 2, names: ["a", "b"] });
  assert.deepEqual(await a.event(), { op: "watching", id: 2, online: ["a"] });
});

Deno.test("watch: who is online now, then online and offline events", async () => {
  await using server = await listen();
  await using w = await ControlPeer.register(server.port, "watcher");
  await using bob = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2);
  await w.send({ op: "watch", id: 3, names: ["bob", "carol", "bob"] });
  assert.deepEqual(await w.event(), { op: "watching", id: 3, online: ["bob"] });
  await using carol = await ControlPeer.register(server.port, "carol");
  assert.deepEqual(await w.event(), { op: "online", name: "carol" });
  await bob.close();
  assert.deepEqual(await w.event(), { op: "offline", name: "bob" });
  await w.send({ op: "unwatch", id: 4, names: ["carol"] });
  assert.deepEqual(await w.event(), { op: "unwatched", id: 4 });
  await carol.close();
  await waitFor(() => server.stats().registered === 1);
  assert.ok(await w.quiet(50), "no event for a name no longer watched");
  await w.send({ op: "watch", id: 5, names: ["ok", "bad|name"] });
  assert.equal((await w.event()).reason, "bad_request");
});

Deno.test("watch is capped per client, all or nothing", async () => {
  await using server = await listen();
  await using w = await ControlPeer.register(server.port, "w");
  const names = Array.from({ length: MAX_WATCHED_NAMES }, (_, i) => `n${i}`);
  await w.send({ op: "watch", id: 1, names });
  assert.deepEqual(await w.event(), { op: "watching", id: 1, online: [] });
  await w.send({ op: "watch", id: 2, names: ["n0", "n1"] }); // already watched: no more room used
  assert.equal((await w.event()).op, "watching");
  await w.send({ op: "watch", id: 3, names: ["one-more"] });
  const e = await w.event();
  assert.deepEqual([e.op, e.id, e.reason], ["error", 3, "too_many_watches"]);
  await w.send({ op: "unwatch", id: 4, names: ["n0"] });
  await w.event();
  await w.send({ op: "watch", id: 5, names: ["one-more"] });
  assert.equal((await w.event()).op, "watching");
});

Deno.test("bye tells an opted-in client why the relay closes it", async (t) => {
  await t.step("idle_timeout", async () => {
    await using server = await listen({ idleTimeoutMs: 150 });
    await using a = await ControlPeer.register(server.port, "a");
    const events = (await a.closed(3_000)).map((f) => f.event);
    assert.deepEqual(events, [
      { op: "bye", reason: "idle_timeout", message: "Nothing sent within the idle timeout" },
    ]);
  });
  await t.step("server_shutdown", async () => {
    const server = await listen();
    await using a = await ControlPeer.register(server.port, "a");
    await using seed = await RawPeer.connect(server.port, "seed");
    await waitFor(() => server.stats().registered === 2);
    await server.close();
    assert.deepEqual((await a.closed()).map((f) => [f.event.op, f.event.reason]), [
      ["bye", "server_shutdown"],
    ]);
    assert.equal((await seed.closed()).length, 0, "a seed client is closed without a word");
  });
});

Deno.test("requests before registering: hello first, only ping answered", async (t) => {
  await using server = await listen();
  await t.step("the first request must be hello", async () => {
    await using peer = await ControlPeer.connect(server.port);
    await peer.send({ op: "ping" });
    const events = (await peer.closed()).map((f) => f.event);
    assert.deepEqual(events.map((e) => [e.op, e.reason]), [["bye", "bad_control"]]);
  });
  await t.step("ping, who and unknown ops before register", async () => {
    await using peer = await ControlPeer.connect(server.port, {});
    assert.equal((await peer.event()).op, "welcome");
    await peer.send({ op: "ping", id: 1 });
    assert.deepEqual([(await peer.event()).op], ["pong"]);
    await peer.send({ op: "who", id: 2 });
    assert.equal((await peer.event()).reason, "not_registered");
    await peer.send({ op: "fly", id: 3 });
    assert.equal((await peer.event()).reason, "unknown_op");
    await peer.send({ op: "hello", v: 1, id: 4 });
    assert.equal((await peer.event()).reason, "bad_request");
    await peer.send({ op: "register", id: 5, name: "late" });
    assert.deepEqual(await peer.event(), { op: "registered", id: 5, name: "late" });
    await peer.send({ op: "register", id: 6, name: "again" });
    assert.equal((await peer.event()).reason, "bad_request");
  });
  await t.step("a data frame before registering closes with bad_control", async () => {
    await using peer = await ControlPeer.connect(server.port, {});
    await peer.sendTo("bob", "hi");
    const events = (await peer.closed()).map((f) => f.event);
    assert.deepEqual(events.map((e) => e.op), ["welcome", "bye"]);
    assert.equal(events[1].reason, "bad_control");
  });
});

Deno.test("hostile control payloads close only their sender, after a bye", async (t) => {
  await using server = await listen();
  await using bystander = await ControlPeer.register(server.port, "bystander");
  const cases: [string, string, string][] = [
    ["over 64 KiB", `|${MAX_CONTROL_BYTES + 1}|`, "bad_control"],
    ["not JSON", "|5|hello", "bad_control"],
    ["a JSON array", "|2|[]", "bad_control"],
    ["no op", '|8|{"id":1}', "bad_control"],
    // Caught by the frame parser (more than 20 digits), as for any frame.
    ["endless length", "|" + "1".repeat(30), "protocol_error"],
  ];
  for (const [label, input, reason] of cases) {
    await t.step(label, async () => {
      await using a = await ControlPeer.register(server.port, "a");
      await a.write(input);
      const events = (await a.closed()).map((f) => f.event);
      assert.deepEqual(events.map((e) => [e.op, e.reason]), [["bye", reason]]);
    });
  }
  await t.step("the same before registering", async () => {
    await using a = await ControlPeer.connect(server.port);
    await a.write("|5|hello");
    const events = (await a.closed()).map((f) => f.event);
    assert.deepEqual(events.map((e) => [e.op, e.reason]), [["bye", "bad_control"]]);
  });
  await t.step("an unknown op gets an error and the connection stays", async () => {
    await using a = await ControlPeer.register(server.port, "a");
    await a.send({ op: "teleport", id: "x" });
    assert.deepEqual(await a.event(), {
      op: "error",
      id: "x",
      reason: "unknown_op",
      message: 'Unknown op "teleport"',
    });
    await a.send({ op: "ping" });
    assert.equal((await a.event()).op, "pong");
  });
  await bystander.send({ op: "ping" });
  assert.equal((await bystander.event()).op, "pong", "the bystander is untouched");
});

Deno.test("a client that floods who and never reads is paused, its queue bounded", async () => {
  const maxBufferBytes = 64 * 1024;
  await using server = await listen({ maxBufferBytes, writeTimeoutMs: 400 });
  const names = Array.from({ length: 200 }, (_, i) => `${i}`.padStart(200, "x"));
  const peers = await Promise.all(names.map((n) => RawPeer.connect(server.port, n)));
  try {
    await using greedy = await ControlPeer.register(server.port, "greedy");
    await waitFor(() => server.stats().registered === names.length + 1);
    const who = encodeControl({ op: "who", limit: 1000 });
    const flood = new Uint8Array(who.length * 5_000);
    for (let i = 0; i < 5_000; i++) flood.set(who, i * who.length);
    // Each reply is ~40 KiB; 5,000 of them would be 200 MiB. The client never reads.
    const writing = greedy.write(flood).catch(() => {});
    // Sampled until the write timeout ends it as a slow consumer (the others are untouched).
    let peak = 0;
    const deadline = Date.now() + 5_000;
    while ((server.stats().disconnects.slow_consumer ?? 0) === 0) {
      assert.ok(Date.now() < deadline, "the greedy client was never dropped");
      peak = Math.max(peak, server.stats().queuedBytes);
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(peak < 2 * maxBufferBytes + 512 * 1024, `queued ${peak} bytes`);
    await greedy.close();
    await writing;
    assert.equal(server.stats().registered, names.length);
  } finally {
    for (const p of peers) await p.close();
  }
});

Deno.test("seed clients see no difference", async (t) => {
  await using server = await listen();
  await t.step("`|` then not a digit is an empty name, closed at once", async () => {
    await using peer = await RawPeer.connect(server.port);
    await peer.write("|x");
    assert.equal((await peer.closed(1_000)).length, 0);
  });
  await t.step("a seed frame to the empty name is dropped, the sender stays", async () => {
    await using seed = await RawPeer.connect(server.port, "seed");
    await seed.write('|13|{"op":"ping"}seed|2|ok');
    await expectText(seed, "seed|2|ok");
    assert.equal(server.stats().dropped.unknown_destination, 1);
  });
  await t.step("a seed sender to an opted-in receiver, and back", async () => {
    await using seed = await RawPeer.connect(server.port, "s");
    await using opted = await ControlPeer.register(server.port, "o");
    await seed.write("o|2|hi");
    const got = await opted.next();
    assert.deepEqual([got.name, text(got.payload)], ["s", "hi"]);
    await opted.sendTo("s", "yo");
    await expectText(seed, "o|2|yo");
  });
});

Deno.test("a hello split at every byte registers", async () => {
  await using server = await listen();
  const stream = new Uint8Array([
    ...encodeControl({ op: "hello", v: 1, name: "split" }),
    ...bytes("split|2|me"),
  ]);
  for (let cut = 1; cut < stream.length; cut++) {
    await using peer = await ControlPeer.connect(server.port);
    await peer.write(stream.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 1));
    await peer.write(stream.subarray(cut));
    assert.equal((await peer.event()).op, "welcome");
    assert.equal((await peer.event()).op, "registered");
    assert.equal(text((await peer.next()).payload), "me", `cut at ${cut}`);
    await peer.close();
    await waitFor(() => server.stats().registered === 0);
  }
});

Deno.test("requests after registering are read split at every byte", async () => {
  await using server = await listen();
  await using peer = await ControlPeer.register(server.port, "split");
  const stream = new Uint8Array([
    ...encodeControl({ op: "ping", id: "p" }),
    ...bytes("split|2|me"),
    ...bytes("|0|"), // a keepalive to the relay
    ...encodeControl({ op: "who", id: "w" }),
  ]);
  for (let cut = 1; cut < stream.length; cut++) {
    await peer.write(stream.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 1));
    await peer.write(stream.subarray(cut));
    assert.deepEqual([(await peer.event()).id], ["p"], `cut at ${cut}`);
    assert.equal(text((await peer.next()).payload), "me");
    assert.deepEqual(await peer.event(), { op: "names", id: "w", names: ["split"], more: false });
  }
});

Deno.test("a keepalive to the relay (|0|) holds an opted-in client past the idle timeout", async () => {
  await using server = await listen({ idleTimeoutMs: 200 });
  await using peer = await ControlPeer.register(server.port, "k");
  for (let i = 0; i < 6; i++) {
    await new Promise((r) => setTimeout(r, 80));
    await peer.write("|0|");
  }
  await peer.send({ op: "ping" });
  assert.equal((await peer.event()).op, "pong");
});
