import { assert, assertEquals } from "./_assert.ts";
import { startWebRelay } from "./_helpers.ts";
import { WebServer } from "../../lib/web/server.ts";
import { expectText, RawPeer, waitFor } from "../_helpers/relay.ts";
import { hexDump, RelayError, RelayWebClient } from "../../lib/web/static/client.js";

Deno.test("client.js registers over /ws and talks to a TCP client by name", async (t) => {
  await using server = await startWebRelay();
  const web = await RelayWebClient.connect({ url: server.wsUrl, name: "web" });
  try {
    await using tcp = await RawPeer.connect(server.relay.port, "tcp");
    await waitFor(() => server.relay.stats().registered === 2);
    assertEquals(web.welcome?.op, "welcome");

    await t.step("send: text and binary arrive byte for byte", async () => {
      await web.send("tcp", "hello");
      await expectText(tcp, "web|5|hello");
      const binary = Uint8Array.from({ length: 256 }, (_, i) => i);
      await web.send("tcp", binary);
      await expectText(tcp, "web|256|");
      assertEquals(await tcp.read(256), binary);
    });
    await t.step("receive: the sender and the payload", async () => {
      await tcp.write("web|2|hi");
      const message = await web.receive();
      assertEquals([message?.from, message?.text(), message?.isText()], ["tcp", "hi", true]);
      await tcp.write(new Uint8Array([...new TextEncoder().encode("web|3|"), 0, 255, 7]));
      const binary = await web.receive();
      assertEquals(binary?.payload, new Uint8Array([0, 255, 7]));
      assertEquals(binary?.isText(), false);
      assert(hexDump(binary!.payload).startsWith("000000  00 ff 07"));
    });
    await t.step("a message larger than one WebSocket message and the window", async () => {
      const big = Uint8Array.from({ length: 3 * 1024 * 1024 }, (_, i) => i & 0xff);
      const sent = web.send("tcp", big);
      await expectText(tcp, `web|${big.length}|`, 10_000);
      assertEquals(await tcp.read(big.length, 10_000), big);
      await sent;
    });
    await t.step("who lists names; ping is a barrier", async () => {
      assertEquals(await web.who(), { names: ["tcp", "web"], more: false });
      const pong = await web.ping();
      assertEquals(pong.dropped, 0);
    });
    await t.step("an unknown destination is reported as a relay-error event", async () => {
      const errors: { reason: string; dest?: string }[] = [];
      web.addEventListener("relay-error", (e) => errors.push((e as CustomEvent).detail));
      await web.send("nobody", "?");
      const pong = await web.ping();
      assertEquals(pong.dropped, 1);
      await waitFor(() => errors.length === 1, 5_000, "the error event");
      assertEquals([errors[0].reason, errors[0].dest], ["unknown_destination", "nobody"]);
    });
    await t.step("watch: online and offline", async () => {
      const events: string[] = [];
      web.addEventListener("online", (e) => events.push(`+${(e as CustomEvent).detail}`));
      web.addEventListener("offline", (e) => events.push(`-${(e as CustomEvent).detail}`));
      assertEquals(await web.watch(["tcp", "later"]), ["tcp"]);
      await using later = await RawPeer.connect(server.relay.port, "later");
      await waitFor(() => events.includes("+later"), 5_000, "later online");
      await later.close();
      await waitFor(() => events.includes("-later"), 5_000, "later offline");
    });
  } finally {
    web.close();
  }
});

Deno.test("client.js waits for ping barriers, so a full receiver pauses it instead of closing it", async () => {
  await using server = await startWebRelay({
    maxBufferBytes: 64 * 1024,
    maxMessageBytes: 128 * 1024,
    writeTimeoutMs: 0,
  });
  const web = await RelayWebClient.connect({ url: server.wsUrl, name: "web" });
  try {
    await using tcp = await RawPeer.connect(server.relay.port, "tcp");
    await waitFor(() => server.relay.stats().registered === 2);
    // 12 MiB in 64 KiB messages to a receiver that reads nothing yet: far over the 4 MiB the
    // relay lets a WebSocket leave unread, so only the barriers keep the connection open.
    const piece = new Uint8Array(64 * 1024).fill(7);
    const count = 192;
    const sends = Array.from({ length: count }, () => web.send("tcp", piece));
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assertEquals(server.web.webSocketOverflows, 0);
    assert(web.connected, "still connected");
    const header = `web|${piece.length}|`;
    for (let i = 0; i < count; i++) {
      await expectText(tcp, header, 10_000);
      assertEquals((await tcp.read(piece.length, 10_000))[piece.length - 1], 7);
    }
    await Promise.all(sends);
  } finally {
    web.close();
  }
});

Deno.test("client.js: a taken name is refused with its reason", async () => {
  await using server = await startWebRelay();
  await using holder = await RawPeer.connect(server.relay.port, "taken");
  await waitFor(() => server.relay.stats().registered === 1);
  let error: unknown;
  try {
    (await RelayWebClient.connect({ url: server.wsUrl, name: "taken" })).close();
  } catch (e) {
    error = e;
  }
  assert(error instanceof RelayError, String(error));
  assertEquals(error.reason, "name_taken");
  void holder;
});

Deno.test("client.js reconnects and registers again after the connection drops", async () => {
  await using server = await startWebRelay();
  const port = server.web.port;
  const web = await RelayWebClient.connect({ url: server.wsUrl, name: "phoenix" });
  try {
    const reasons: string[] = [];
    let opens = 0;
    web.addEventListener("reconnecting", (e) => reasons.push((e as CustomEvent).detail.reason));
    web.addEventListener("open", () => opens++);
    // The HTTP side goes away (its WebSockets with it) and comes back on the same port.
    await server.web.close();
    await waitFor(() => reasons.length > 0, 5_000, "a reconnect attempt");
    await waitFor(() => server.relay.stats().registered === 0, 5_000, "the name freed");
    await using again = await WebServer.listen({
      relay: server.relay,
      hostname: "127.0.0.1",
      port,
    });
    await waitFor(() => opens === 1 && web.connected, 15_000, "registered again");
    assertEquals(server.relay.names(), ["phoenix"]);
    await using tcp = await RawPeer.connect(server.relay.port, "tcp");
    await waitFor(() => server.relay.stats().registered === 2);
    await web.send("tcp", "back");
    await expectText(tcp, "phoenix|4|back");
    void again;
  } finally {
    web.close();
  }
});

Deno.test("client.js keeps itself alive within the relay's idle timeout", async () => {
  await using server = await startWebRelay({ idleTimeoutMs: 600 });
  const web = await RelayWebClient.connect({ url: server.wsUrl, name: "quiet" });
  try {
    assertEquals(web.welcome?.limits.keepalive_ms, 200);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assertEquals(server.relay.stats().disconnects.idle_timeout, undefined);
    assertEquals(server.relay.names(), ["quiet"]);
  } finally {
    web.close();
  }
});
