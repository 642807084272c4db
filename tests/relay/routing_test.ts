/**
 * Routing when a name changes hands: a frame goes to whoever holds the destination name when
 * its header is read, never to a connection that held it before.
 */
import assert from "node:assert/strict";
import { RelayServer, type RelayServerOptions } from "../../lib/relay/server.ts";
import { bytes, expectText, RawPeer, waitFor } from "../_helpers/relay.ts";

function listen(options: RelayServerOptions = {}): Promise<RelayServer> {
  return RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...options });
}

function frame(dest: string, payload: Uint8Array): Uint8Array {
  const header = bytes(`${dest}|${payload.length}|`);
  const out = new Uint8Array(header.length + payload.length);
  out.set(header);
  out.set(payload, header.length);
  return out;
}

Deno.test("after a half-close frees a name, messages reach its new holder, not the old one", async () => {
  await using server = await listen();
  await using alice = await RawPeer.connect(server.port, "alice");
  await using bob1 = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "registration");
  // 4 MiB queued for bob1, who does not read: alice's destination cache now holds bob1.
  await alice.write(frame("bob", new Uint8Array(4 * 1024 * 1024)));
  await waitFor(() => server.stats().messages === 1, 5_000, "the 4 MiB message queued");
  await bob1.conn.closeWrite(); // shutdown(SHUT_WR): bob1 is done sending, its queue drains
  await waitFor(() => server.stats().registered === 1, 5_000, "bob1's name freed");
  await using bob2 = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "bob2 registered");
  await alice.write("bob|5|hello");
  await expectText(bob2, "alice|5|hello", 2_000);
  assert.equal(server.stats().messages, 2);
});

Deno.test("a frame begun to the old holder of a name finishes there; the next goes to the new one", async () => {
  await using server = await listen();
  await using alice = await RawPeer.connect(server.port, "alice");
  await using bob1 = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "registration");
  const size = 1_000_000;
  const payload = new Uint8Array(size).fill(7);
  const whole = frame("bob", payload);
  const split = 300_000;
  await alice.write(whole.subarray(0, split));
  // bob1 sees the start of the streamed frame, then stops sending while the rest is in flight.
  const start = await bob1.read(200_000);
  assert.equal(new TextDecoder().decode(start.subarray(0, 14)), `alice|${size}|`);
  await bob1.conn.closeWrite();
  await waitFor(() => server.stats().registered === 1, 5_000, "bob1's name freed");
  await using bob2 = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "bob2 registered");
  await alice.write(whole.subarray(split));
  await alice.write("bob|5|hello");
  await expectText(bob2, "alice|5|hello", 2_000);
  // bob1 gets the rest of its frame, whole and alone, then the relay closes it.
  const rest = await bob1.closed(5_000);
  assert.equal(rest.length, whole.length - "bob".length + "alice".length - 200_000);
  assert.ok(rest.every((b) => b === 7));
  assert.ok(await bob2.stillOpen(100), "bob2 gets nothing else");
  assert.equal(server.stats().messages, 2);
});

Deno.test("a frame whose receiver leaves mid-way is dropped, not counted as delivered", async () => {
  await using server = await listen();
  await using alice = await RawPeer.connect(server.port, "alice");
  const bob1 = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "registration");
  const whole = frame("bob", new Uint8Array(1_000_000).fill(9));
  await alice.write(whole.subarray(0, 300_000));
  await bob1.read(100_000);
  await bob1.close();
  // The relay sees an end of input (like a half-close) and knows bob1 is gone once writing
  // to it fails: more of the frame makes it write.
  await alice.write(whole.subarray(300_000, 600_000));
  await waitFor(() => server.stats().connections === 1, 5_000, "bob1 gone");
  await using bob2 = await RawPeer.connect(server.port, "bob");
  await waitFor(() => server.stats().registered === 2, 5_000, "bob2 registered");
  await alice.write(whole.subarray(600_000));
  await alice.write("bob|5|hello");
  await expectText(bob2, "alice|5|hello", 2_000);
  assert.ok(await bob2.stillOpen(100), "bob2 gets nothing else");
  const stats = server.stats();
  assert.equal(stats.messages, 1, "only hello was delivered");
  assert.equal(stats.dropped.receiver_gone, 1);
});

Deno.test("many name hand-overs under traffic: every message reaches the holder of its time", async () => {
  await using server = await listen();
  await using alice = await RawPeer.connect(server.port, "alice");
  await waitFor(() => server.stats().registered === 1, 5_000, "alice registered");
  for (let round = 0; round < 20; round++) {
    const holder = await RawPeer.connect(server.port, "bob");
    await waitFor(() => server.stats().registered === 2, 5_000, `holder ${round} registered`);
    const text = `r${round}`;
    await alice.write(`bob|${text.length}|${text}`);
    await expectText(holder, `alice|${text.length}|${text}`, 2_000);
    await holder.conn.closeWrite();
    await holder.closed(2_000);
    await holder.close();
    await waitFor(() => server.stats().registered === 1, 5_000, `holder ${round} gone`);
  }
  assert.equal(server.stats().messages, 20);
});
