import assert from "node:assert/strict";
import { RegistrationError, RelayClient } from "../../lib/client/client.ts";
import { RelayServer } from "../../lib/relay/server.ts";
import { bytes, delay, RawPeer, text, waitFor } from "../_helpers/relay.ts";

function listen(options: Parameters<typeof RelayServer.listen>[0] = {}) {
  return RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...options });
}

Deno.test("RelayClient registers, sends and receives", async () => {
  await using server = await listen();
  await using alice = await RelayClient.connect({ port: server.port, name: "alice" });
  await using bob = await RelayClient.connect({ port: server.port, name: "bob" });
  assert.equal(server.stats().registered, 2);
  await alice.send("bob", bytes("hello"));
  const message = await bob.receive();
  assert.equal(message?.from, "alice");
  assert.equal(text(message!.payload), "hello");
});

Deno.test("RelayClient rejects a taken name and the first owner keeps it", async () => {
  await using server = await listen();
  await using first = await RelayClient.connect({ port: server.port, name: "dev" });
  await assert.rejects(
    () => RelayClient.connect({ port: server.port, name: "dev" }),
    (error) => error instanceof RegistrationError && /dev/.test(error.message),
  );
  await first.send("dev", bytes("still mine"));
  assert.equal(text((await first.receive())!.payload), "still mine");
});

Deno.test("RelayClient rejects invalid names and oversized payloads", async () => {
  await using server = await listen();
  await assert.rejects(() => RelayClient.connect({ port: server.port, name: "a|b" }), TypeError);
  await using c = await RelayClient.connect({ port: server.port, name: "c" });
  await assert.rejects(() => c.send("", bytes("x")), TypeError);
  await assert.rejects(() => c.send("d", new Uint8Array(16 * 1024 * 1024 + 1)), RangeError);
});

Deno.test("RelayClient delivers messages sent right as it registers", async () => {
  await using server = await listen();
  await using raw = await RawPeer.connect(server.port, "raw");
  await waitFor(() => server.stats().registered === 1);
  // Queue messages for "late" right as it registers: they race the confirmation probe.
  const connecting = RelayClient.connect({ port: server.port, name: "late" });
  await waitFor(() => server.stats().registered === 2);
  await raw.write("late|3|onelate|3|two");
  await using late = await connecting;
  const got = [text((await late.receive())!.payload), text((await late.receive())!.payload)];
  assert.deepEqual(got, ["one", "two"]);
});

Deno.test("RelayClient moves 16 MiB intact in both directions", async () => {
  await using server = await listen();
  await using a = await RelayClient.connect({ port: server.port, name: "a" });
  await using b = await RelayClient.connect({ port: server.port, name: "b" });
  const big = new Uint8Array(16 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 997) big[i] = i % 251;
  const [, got] = await Promise.all([a.send("b", big), b.receive()]);
  assert.equal(got!.payload.length, big.length);
  assert.deepEqual(got!.payload, big);
  await b.send("a", got!.payload);
  assert.deepEqual((await a.receive())!.payload, big);
});

Deno.test("RelayClient keepalives hold the connection past the idle timeout", async () => {
  await using server = await listen({ idleTimeoutMs: 300 });
  await using quiet = await RelayClient.connect({
    port: server.port,
    name: "quiet",
    keepaliveMs: 100,
  });
  await using silent = await RelayClient.connect({
    port: server.port,
    name: "silent",
    keepaliveMs: 0,
  });
  await delay(700);
  assert.equal(await silent.receive(), undefined, "silent client was dropped");
  await quiet.send("quiet", bytes("alive"));
  assert.equal(text((await quiet.receive())!.payload), "alive");
});

Deno.test("RelayClient iterates messages and ends when the relay goes away", async () => {
  const server = await listen();
  await using a = await RelayClient.connect({ port: server.port, name: "a" });
  for (let i = 0; i < 3; i++) await a.send("a", bytes(`m${i}`));
  const seen: string[] = [];
  for await (const m of a) {
    seen.push(text(m.payload));
    if (seen.length === 3) await server.close();
  }
  assert.deepEqual(seen, ["m0", "m1", "m2"]);
  await a.closed;
  await assert.rejects(() => a.send("a", bytes("x")), /closed/);
});

Deno.test("RelayClient close() is safe twice and send after close fails", async () => {
  await using server = await listen();
  const a = await RelayClient.connect({ port: server.port, name: "a" });
  await a.close();
  await a.close();
  await assert.rejects(() => a.send("a", bytes("x")), /closed/);
  await waitFor(() => server.stats().connections === 0);
});

Deno.test("RelayClient connect fails clearly when nothing listens or on timeout", async () => {
  const server = await listen();
  const port = server.port;
  await server.close();
  await assert.rejects(() => RelayClient.connect({ port, name: "x" }));
  // A listener that never answers: registration cannot be confirmed.
  using mute = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of mute) accepted.push(c);
  })();
  await assert.rejects(
    () => RelayClient.connect({ port: mute.addr.port, name: "x", connectTimeoutMs: 200 }),
    /no confirmation within 200 ms/,
  );
  mute.close();
  await accepting.catch(() => {});
  for (const c of accepted) c.close();
});
