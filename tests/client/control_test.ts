import assert from "node:assert/strict";
import {
  ControlRequestError,
  type DeliveryError,
  type PresenceChange,
  RegistrationError,
  RelayClient,
} from "../../lib/client/client.ts";
import { RelayServer, type RelayServerOptions } from "../../lib/relay/server.ts";
import { AuthPolicy, hashToken } from "../../lib/relay/auth.ts";
import { bytes, expectText, RawPeer, text, waitFor } from "../_helpers/relay.ts";

function listen(options: RelayServerOptions = {}) {
  return RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...options });
}

Deno.test("RelayClient exposes the relay's welcome and uses its message limit", async () => {
  await using server = await listen({ maxMessageBytes: 1000, idleTimeoutMs: 9000 });
  await using a = await RelayClient.connect({ port: server.port, name: "a" });
  assert.equal(a.welcome.op, "welcome");
  assert.equal(a.welcome.limits.max_message_bytes, 1000);
  assert.equal(a.welcome.limits.keepalive_ms, 3000);
  assert.equal(a.welcome.names_owned, false);
  assert.equal(a.welcome.listing, true);
  assert.equal(a.maxMessageBytes, 1000);
  await assert.rejects(
    () => a.send("a", new Uint8Array(1001)),
    (e) => e instanceof RangeError && /limit of 1000 bytes/.test(e.message),
  );
  await a.send("a", new Uint8Array(1000));
  assert.equal((await a.receive())!.payload.length, 1000);
});

Deno.test("RelayClient accepts messages up to a relay limit above 16 MiB", async () => {
  const size = 16 * 1024 * 1024 + 10;
  await using server = await listen({ maxMessageBytes: size, maxBufferBytes: 32 * 1024 * 1024 });
  await using a = await RelayClient.connect({ port: server.port, name: "a" });
  await using b = await RelayClient.connect({ port: server.port, name: "b" });
  const big = new Uint8Array(size);
  big[size - 1] = 7;
  const [, got] = await Promise.all([a.send("b", big), b.receive()]);
  assert.equal(got!.payload.length, size);
  assert.equal(got!.payload[size - 1], 7);
});

Deno.test("RegistrationError carries the relay's typed reason", async (t) => {
  await using server = await listen({
    auth: AuthPolicy.fromDigests({ lab: await hashToken("right") }, { requireAuth: false }),
  });
  await using holder = await RelayClient.connect({ port: server.port, name: "taken" });
  const cases: [string, { name: string; token?: string }, string][] = [
    ["name_taken", { name: "taken" }, "name_taken"],
    ["auth_required", { name: "lab" }, "auth_required"],
    ["bad_token", { name: "lab", token: "wrong" }, "bad_token"],
  ];
  for (const [label, options, reason] of cases) {
    await t.step(label, async () => {
      await assert.rejects(
        () => RelayClient.connect({ port: server.port, ...options }),
        (e) =>
          e instanceof RegistrationError && e.reason === reason &&
          e.message.includes(JSON.stringify(options.name)),
      );
    });
  }
  await t.step("too_many_connections at accept", async () => {
    await using full = await listen({ maxConnections: 1 });
    await using _first = await RelayClient.connect({ port: full.port, name: "first" });
    await assert.rejects(
      () => RelayClient.connect({ port: full.port, name: "second" }),
      (e) => e instanceof RegistrationError && e.reason === "too_many_connections",
    );
  });
  assert.equal(holder.name, "taken");
});

Deno.test("RelayClient against a relay without the control channel fails with no_answer", async () => {
  // What a seed relay does with `|…`: an empty name, closed at once.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of listener) {
      await conn.read(new Uint8Array(64));
      conn.close();
    }
  })();
  await assert.rejects(
    () => RelayClient.connect({ port: listener.addr.port, name: "x" }),
    (e) => e instanceof RegistrationError && e.reason === "no_answer" && /control/.test(e.message),
  );
  listener.close();
  await serving.catch(() => {});
});

Deno.test("flush tells whether what was sent reached someone", async () => {
  await using server = await listen();
  const seen: DeliveryError[] = [];
  await using a = await RelayClient.connect({
    port: server.port,
    name: "a",
    onError: (e) => seen.push(e),
  });
  await using b = await RelayClient.connect({ port: server.port, name: "b" });
  await a.send("b", bytes("hi"));
  assert.deepEqual(await a.flush(), { dropped: 0, errors: [] });
  assert.equal(text((await b.receive())!.payload), "hi");
  await a.send("nobody", bytes("x"));
  await a.send("nobody", bytes("y"));
  const result = await a.flush();
  assert.equal(result.dropped, 2);
  assert.equal(result.errors.length, 1);
  assert.deepEqual(
    { ...result.errors[0], message: undefined },
    {
      reason: "unknown_destination",
      dest: "nobody",
      count: 1,
      size: undefined,
      limit: undefined,
      message: undefined,
    },
  );
  assert.deepEqual(seen, result.errors);
});

Deno.test("ping measures the round trip with the relay's clock", async () => {
  await using server = await listen();
  await using a = await RelayClient.connect({ port: server.port, name: "a" });
  const before = Date.now();
  const pong = await a.ping();
  assert.ok(pong.rttMs >= 0 && pong.rttMs < 2000);
  assert.ok(Math.abs(pong.time - before) < 2000);
  assert.equal(pong.dropped, 0);
});

Deno.test("who follows pages; listing off is a typed error", async () => {
  await using server = await listen();
  // Long names: 300 of them do not fit one page (pages are cut at 64 KiB).
  const names = Array.from(
    { length: 300 },
    (_, i) => `p${String(i).padStart(3, "0")}`.padEnd(250, "x"),
  );
  const peers = await Promise.all(names.map((n) => RawPeer.connect(server.port, n)));
  try {
    await using a = await RelayClient.connect({ port: server.port, name: "a" });
    await waitFor(() => server.stats().registered === names.length + 1);
    assert.deepEqual(await a.who("p"), names);
    assert.deepEqual(await a.who("a"), ["a"]);
    assert.deepEqual((await a.who()).length, names.length + 1);
  } finally {
    for (const p of peers) await p.close();
  }
  await using closed = await listen({ listing: false });
  await using c = await RelayClient.connect({ port: closed.port, name: "c" });
  assert.equal(c.welcome.listing, false);
  await assert.rejects(
    () => c.who(),
    (e) => e instanceof ControlRequestError && e.reason === "listing_disabled",
  );
  assert.equal((await c.ping()).dropped, 0, "the connection stays");
});

Deno.test("watch reports who is online and then presence changes", async () => {
  await using server = await listen();
  const changes: PresenceChange[] = [];
  await using w = await RelayClient.connect({
    port: server.port,
    name: "w",
    onPresence: (c) => changes.push(c),
  });
  await using bob = await RelayClient.connect({ port: server.port, name: "bob" });
  assert.deepEqual(await w.watch(["bob", "carol"]), ["bob"]);
  const carol = await RelayClient.connect({ port: server.port, name: "carol" });
  await bob.close();
  await waitFor(() => server.stats().registered === 2);
  await w.ping(); // reads the events that came before the pong
  assert.deepEqual(changes, [{ name: "carol", online: true }, { name: "bob", online: false }]);
  await w.unwatch(["carol"]);
  await carol.close();
  await w.ping();
  assert.equal(changes.length, 2);
  await assert.rejects(
    () => w.watch(Array.from({ length: 300 }, (_, i) => `n${i}`)),
    (e) => e instanceof ControlRequestError && e.reason === "too_many_watches",
  );
  await assert.rejects(() => w.watch(["a|b"]), TypeError);
});

Deno.test("RelayClient works with a relay in --deliver payload mode", async () => {
  await using server = await listen({ deliver: "payload" });
  await using a = await RelayClient.connect({ port: server.port, name: "a" });
  await using b = await RelayClient.connect({ port: server.port, name: "b" });
  await a.send("b", bytes("framed anyway"));
  const got = await b.receive();
  assert.deepEqual([got?.from, text(got!.payload)], ["a", "framed anyway"]);
  await using seed = await RawPeer.connect(server.port, "seed");
  await waitFor(() => server.stats().registered === 3);
  await a.send("seed", bytes("raw"));
  await expectText(seed, "raw");
});

Deno.test("the relay's bye is kept, and requests fail with it", async () => {
  await using server = await listen({ idleTimeoutMs: 150 });
  await using a = await RelayClient.connect({ port: server.port, name: "a", keepaliveMs: 0 });
  assert.equal(await a.receive(), undefined);
  assert.deepEqual(a.bye, {
    reason: "idle_timeout",
    message: "Nothing sent within the idle timeout",
  });
  await assert.rejects(() => a.ping(), /closed/);
});

Deno.test("a plaintext RelayClient at a TLS port is refused with tls_port, at once", async () => {
  const fixture = (name: string) =>
    Deno.readTextFile(new URL(`../fixtures/${name}`, import.meta.url));
  await using server = await RelayServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: await fixture("server.pem"), key: await fixture("server.key") },
  });
  const started = performance.now();
  const error = await RelayClient.connect({ port: server.port, name: "plain" }).then(
    () => undefined,
    (e) => e,
  );
  assert.ok(error instanceof RegistrationError, `not a RegistrationError: ${error}`);
  assert.equal(error.reason, "tls_port");
  assert.match(error.message, /^Cannot register "plain" at 127\.0\.0\.1:\d+: this port serves TLS/);
  assert.ok(performance.now() - started < 2_000, "the refusal was not prompt");
});
