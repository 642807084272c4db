import { assert, assertEquals } from "./_assert.ts";
import { maskedFrame, rawWebSocket, startWebRelay, WsPeer } from "./_helpers.ts";
import { bytes, expectText, RawPeer, waitFor } from "../_helpers/relay.ts";

/** Every byte value, twice, so a payload is binary-safe only if nothing is altered. */
function allBytes(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + 3) & 0xff);
}

/** Sends `data` as WebSocket messages of the given sizes, in turn. */
function sendSplit(peer: WsPeer, data: Uint8Array, sizes: number[]): void {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length];
    peer.send(data.subarray(at, at + n));
    at += n;
  }
}

function frame(dest: string, payload: Uint8Array): Uint8Array {
  const head = bytes(`${dest}|${payload.length}|`);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

Deno.test("a WebSocket client and a TCP client talk by name both ways, binary-safe", async (t) => {
  await using server = await startWebRelay();
  await using ws = await WsPeer.open(server.wsUrl);
  // The registration and the frames are split at odd places across messages.
  sendSplit(ws, bytes("web-a|"), [1, 2]);
  await waitFor(() => server.relay.stats().registered === 1, 5_000, "web-a registered");
  await using tcp = await RawPeer.connect(server.relay.port, "tcp-b");
  await waitFor(() => server.relay.stats().registered === 2, 5_000, "tcp-b registered");

  await t.step("WebSocket to TCP, one byte per message and in uneven pieces", async () => {
    const payload = allBytes(512);
    sendSplit(ws, frame("tcp-b", payload), [1]);
    await expectText(tcp, "web-a|512|");
    assertEquals(await tcp.read(512), payload);
    sendSplit(ws, frame("tcp-b", payload), [3, 100, 7]);
    await expectText(tcp, "web-a|512|");
    assertEquals(await tcp.read(512), payload);
  });

  await t.step("two frames in one message, and a frame split across three", async () => {
    const both = new Uint8Array([...frame("tcp-b", bytes("one")), ...frame("tcp-b", bytes("two"))]);
    ws.send(both);
    await expectText(tcp, "web-a|3|oneweb-a|3|two");
  });

  await t.step("TCP to WebSocket", async () => {
    const payload = allBytes(300);
    await tcp.write(frame("web-a", payload));
    assertEquals(await ws.readText("tcp-b|300|".length), "tcp-b|300|");
    assertEquals(await ws.read(300), payload);
  });

  await t.step("a 3 MiB message each way arrives whole", async () => {
    const big = allBytes(3 * 1024 * 1024);
    sendSplit(ws, frame("tcp-b", big), [65_536, 10_000]);
    await expectText(tcp, `web-a|${big.length}|`, 10_000);
    assertEquals(await tcp.read(big.length, 10_000), big);
    await tcp.write(frame("web-a", big));
    assertEquals(await ws.readText(`tcp-b|${big.length}|`.length, 10_000), `tcp-b|${big.length}|`);
    assertEquals(await ws.read(big.length, 10_000), big);
  });

  await t.step("a WebSocket to a WebSocket", async () => {
    await using other = await WsPeer.open(server.wsUrl);
    other.send("web-c|");
    await waitFor(() => server.relay.stats().registered === 3, 5_000, "web-c registered");
    ws.send(frame("web-c", bytes("hi")));
    assertEquals(await other.readText("web-a|2|hi".length), "web-a|2|hi");
  });
});

Deno.test("a WebSocket gets the same limits as TCP: a frame over the limit closes it", async () => {
  await using server = await startWebRelay({ maxMessageBytes: 1024 });
  await using ws = await WsPeer.open(server.wsUrl);
  ws.send("big|");
  await waitFor(() => server.relay.stats().registered === 1, 5_000, "registered");
  ws.send("nobody|2048|");
  await ws.closed();
  await waitFor(() => (server.relay.stats().disconnects.protocol_error ?? 0) === 1);
});

Deno.test("the register timeout applies to a silent WebSocket", async () => {
  await using server = await startWebRelay({ registerTimeoutMs: 200 });
  await using ws = await WsPeer.open(server.wsUrl);
  await ws.closed(3_000);
  assertEquals(server.relay.stats().disconnects.register_timeout, 1);
});

Deno.test("/ws checks Origin", async (t) => {
  await t.step(
    "default: same origin and programs without Origin pass, other sites are refused",
    async () => {
      await using server = await startWebRelay();
      const port = server.web.port;
      const foreign = await rawWebSocket(port, { Origin: "http://evil.example" });
      foreign.conn.close();
      assertEquals(foreign.status, 403);
      const same = await rawWebSocket(port, { Origin: `http://127.0.0.1:${port}` });
      same.conn.close();
      assertEquals(same.status, 101);
      const none = await rawWebSocket(port);
      none.conn.close();
      assertEquals(none.status, 101);
    },
  );
  await t.step("--ws-origins lists origins; * allows any", async () => {
    await using listed = await startWebRelay({}, { wsOrigins: ["https://lab.example.org"] });
    for (const [origin, status] of [["https://lab.example.org", 101], ["https://other.org", 403]]) {
      const answer = await rawWebSocket(listed.web.port, { Origin: String(origin) });
      answer.conn.close();
      assertEquals(answer.status, status, String(origin));
    }
    await using any = await startWebRelay({}, { wsOrigins: ["*"] });
    const answer = await rawWebSocket(any.web.port, { Origin: "https://anywhere.example" });
    answer.conn.close();
    assertEquals(answer.status, 101);
  });
});

Deno.test("a WebSocket receiver that stops reading holds the relay's memory to its budget", async () => {
  const budget = 256 * 1024;
  await using server = await startWebRelay({ maxBufferBytes: budget, writeTimeoutMs: 0 });
  // A WebSocket opened by hand that registers, then never reads a byte.
  const slow = await rawWebSocket(server.web.port);
  try {
    await slow.conn.write(maskedFrame(bytes("slow|")));
    await waitFor(() => server.relay.stats().registered === 1, 5_000, "slow registered");
    await using sender = await RawPeer.connect(server.relay.port, "fast");
    const chunk = frame("slow", allBytes(64 * 1024));
    const total = 64 * 1024 * 1024;
    let written = 0;
    let lastProgress = Date.now();
    // Write until the relay stops taking bytes from the sender for 1.5 s (it is paused).
    const writing = (async () => {
      while (written < total) {
        await sender.write(chunk);
        written += chunk.length;
        lastProgress = Date.now();
      }
    })();
    writing.catch(() => {});
    await waitFor(() => Date.now() - lastProgress > 1_500, 30_000, "the sender to be paused");
    assert(written < total, `the sender was never paused (${written} bytes written)`);
    const queued = server.relay.stats().queuedBytes;
    const inSocket = server.web.webSocketBufferedBytes();
    // The outbox may go over budget by the frame being routed; the socket holds at most
    // the high water mark plus one write batch.
    assert(queued <= budget + 2 * 65_536 + 256 * 1024, `queued ${queued} bytes`);
    assert(inSocket <= 256 * 1024 + 256 * 1024, `WebSocket buffered ${inSocket} bytes`);
    assertEquals(server.relay.stats().connections, 2, "nobody was disconnected");
    sender.conn.close();
    await writing.catch(() => {});
  } finally {
    slow.conn.close();
  }
});

Deno.test("a WebSocket that sends more than the relay reads is closed, not buffered", async () => {
  const budget = 64 * 1024;
  await using server = await startWebRelay({
    maxBufferBytes: budget,
    maxMessageBytes: 64 * 1024,
    writeTimeoutMs: 0,
  });
  const slow = await rawWebSocket(server.web.port);
  try {
    await slow.conn.write(maskedFrame(bytes("slow|")));
    await using ws = await WsPeer.open(server.wsUrl);
    ws.send("flood|");
    await waitFor(() => server.relay.stats().registered === 2, 5_000, "both registered");
    // 8 MiB to a receiver that never reads: the relay stops reading the WebSocket, which
    // cannot be paused, so past one message and 4 MiB unread it is closed.
    const piece = frame("slow", allBytes(64 * 1024));
    for (let i = 0; i < 128; i++) ws.send(piece);
    await ws.closed(10_000);
    assertEquals(server.web.webSocketOverflows, 1, "closed for too much unread input");
  } finally {
    slow.conn.close();
  }
});
