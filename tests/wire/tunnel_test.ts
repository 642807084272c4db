import { assert, assertEquals, assertThrows } from "../_helpers/tunnel.ts";
import fc from "fast-check";
import {
  decodeFrames,
  decodePacketHeader,
  encodeFrames,
  type Frame,
  FRAME_HEADER_BYTES,
  INITIAL_WINDOW_BYTES,
  MAX_DATA_BYTES,
  MAX_WINDOW_BYTES,
  newSessionId,
  PACKET_HEADER_BYTES,
  PACKET_PLAIN,
  SESSION_ID_BYTES,
  TUNNEL_VERSION,
  TunnelProtocolError,
  writePacketHeader,
} from "../../lib/wire/tunnel.ts";
import { ReceiveWindow, SendWindow } from "../../lib/tunnel/window.ts";
import { backoffMs } from "../../lib/tunnel/tunnel.ts";
import { bytesEqual as sameSession } from "../../lib/util/bytes.ts";

const bytes = (...b: number[]) => new Uint8Array(b);

Deno.test("tunnel frames encode to the documented byte layout", async (t) => {
  const cases: { name: string; frame: Frame; wire: Uint8Array }[] = [
    {
      name: "HELLO",
      frame: { type: "hello", ack: false },
      wire: bytes(1, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    },
    {
      name: "HELLO ack",
      frame: { type: "hello", ack: true },
      wire: bytes(1, 2, 0, 0, 0, 0, 0, 0, 0, 0),
    },
    {
      name: "PING",
      frame: { type: "ping", ack: false, data: bytes(1, 2, 3, 4, 5, 6, 7, 8) },
      wire: bytes(2, 0, 0, 0, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8),
    },
    {
      name: "BYE",
      frame: { type: "bye", reason: "bye" },
      wire: bytes(3, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0x62, 0x79, 0x65),
    },
    {
      name: "OPEN",
      frame: { type: "open", stream: 0x01020304, window: 0x200000, service: "web" },
      wire: bytes(0x10, 1, 1, 2, 3, 4, 0, 0, 0, 7, 0, 0x20, 0, 0, 0x77, 0x65, 0x62),
    },
    {
      name: "ACCEPT",
      frame: { type: "accept", stream: 7, window: 65536 },
      wire: bytes(0x11, 0, 0, 0, 0, 7, 0, 0, 0, 4, 0, 1, 0, 0),
    },
    {
      name: "DATA from the opener",
      frame: { type: "data", stream: 7, opener: true, data: bytes(9, 8) },
      wire: bytes(0x12, 1, 0, 0, 0, 7, 0, 0, 0, 2, 9, 8),
    },
    {
      name: "WINDOW from the acceptor",
      frame: { type: "window", stream: 0xffffffff, opener: false, increment: 1 },
      wire: bytes(0x13, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 4, 0, 0, 0, 1),
    },
    {
      name: "FIN",
      frame: { type: "fin", stream: 1, opener: true },
      wire: bytes(0x14, 1, 0, 0, 0, 1, 0, 0, 0, 0),
    },
    {
      name: "RESET",
      frame: { type: "reset", stream: 1, opener: false, code: 1, reason: "no" },
      wire: bytes(0x15, 0, 0, 0, 0, 1, 0, 0, 0, 3, 1, 0x6e, 0x6f),
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assertEquals(encodeFrames([c.frame]), c.wire);
      assertEquals(decodeFrames(c.wire), [c.frame]);
    });
  }
});

Deno.test("tunnel frame decoder rejects bad fields per frame and bad framing per packet", async (t) => {
  const invalid: { name: string; wire: Uint8Array }[] = [
    { name: "HELLO with a stream id", wire: bytes(1, 0, 0, 0, 0, 1, 0, 0, 0, 0) },
    { name: "HELLO with a body", wire: bytes(1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0) },
    { name: "PING of 3 bytes", wire: bytes(2, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3) },
    {
      name: "OPEN without opener flag",
      wire: bytes(0x10, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1, 0x61),
    },
    { name: "OPEN without a service", wire: bytes(0x10, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1) },
    {
      name: "OPEN window over 2^31-1",
      wire: bytes(0x10, 1, 0, 0, 0, 1, 0, 0, 0, 5, 0x80, 0, 0, 0, 0x61),
    },
    {
      name: "OPEN service not UTF-8",
      wire: bytes(0x10, 1, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 1, 0xff),
    },
    { name: "ACCEPT with opener flag", wire: bytes(0x11, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 1, 0, 0) },
    {
      name: "ACCEPT below the initial window",
      wire: bytes(0x11, 0, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 255, 255),
    },
    { name: "DATA on stream 0", wire: bytes(0x12, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1) },
    { name: "empty DATA", wire: bytes(0x12, 1, 0, 0, 0, 1, 0, 0, 0, 0) },
    { name: "WINDOW of 0", wire: bytes(0x13, 1, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0) },
    { name: "WINDOW of 3 bytes", wire: bytes(0x13, 1, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 1) },
    { name: "FIN with a body", wire: bytes(0x14, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0) },
    { name: "RESET without code", wire: bytes(0x15, 1, 0, 0, 0, 1, 0, 0, 0, 0) },
    { name: "unknown flag bits", wire: bytes(0x14, 0x81, 0, 0, 0, 1, 0, 0, 0, 0) },
  ];
  for (const c of invalid) {
    await t.step(`${c.name} is invalid, and the next frame still decodes`, () => {
      const next = encodeFrames([{ type: "fin", stream: 2, opener: true }]);
      const frames = decodeFrames(new Uint8Array([...c.wire, ...next]));
      assertEquals(frames.length, 2);
      assertEquals(frames[0].type, "invalid");
      assertEquals(frames[1], { type: "fin", stream: 2, opener: true });
    });
  }
  await t.step("an unknown type is skipped, not fatal", () => {
    const frames = decodeFrames(bytes(0x7e, 0, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2));
    assertEquals(frames, [{ type: "unknown", code: 0x7e, stream: 1 }]);
  });
  const fatal: { name: string; wire: Uint8Array }[] = [
    { name: "truncated header", wire: bytes(0x12, 1, 0, 0) },
    { name: "truncated body", wire: bytes(0x12, 1, 0, 0, 0, 1, 0, 0, 0, 5, 1, 2) },
    { name: "length over the limit", wire: bytes(0x12, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff) },
  ];
  for (const c of fatal) {
    await t.step(`${c.name} drops the packet`, () => {
      assertThrows(() => decodeFrames(c.wire), TunnelProtocolError);
    });
  }
  await t.step("a packet of another version or kind is refused", () => {
    const packet = new Uint8Array(PACKET_HEADER_BYTES);
    writePacketHeader(packet, PACKET_PLAIN, newSessionId(), newSessionId());
    assertEquals(decodePacketHeader(packet).kind, PACKET_PLAIN);
    packet[0] = TUNNEL_VERSION + 1;
    assertThrows(() => decodePacketHeader(packet), TunnelProtocolError, "version");
    packet[0] = TUNNEL_VERSION;
    packet[1] = 9;
    assertThrows(() => decodePacketHeader(packet), TunnelProtocolError, "kind");
    assertThrows(() => decodePacketHeader(packet.subarray(0, 5)), TunnelProtocolError);
  });
  await t.step("encoders refuse out-of-range fields", () => {
    assertThrows(() => encodeFrames([{ type: "data", stream: 0, opener: true, data: bytes(1) }]));
    assertThrows(() =>
      encodeFrames([{
        type: "data",
        stream: 1,
        opener: true,
        data: new Uint8Array(MAX_DATA_BYTES + 1),
      }])
    );
    assertThrows(() =>
      encodeFrames([{ type: "window", stream: 1, opener: true, increment: MAX_WINDOW_BYTES + 1 }])
    );
    assertThrows(() => encodeFrames([{ type: "open", stream: 1, window: 1 << 20, service: "" }]));
    assertThrows(() => encodeFrames([{ type: "accept", stream: 1, window: 1 }]));
  });
});

const streamId = fc.integer({ min: 1, max: 0xffffffff });
const text = fc.string({ unit: "grapheme", maxLength: 20 });
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ type: fc.constant("hello" as const), ack: fc.boolean() }),
  fc.record({
    type: fc.constant("ping" as const),
    ack: fc.boolean(),
    data: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  }),
  fc.record({ type: fc.constant("bye" as const), reason: text }),
  fc.record({
    type: fc.constant("open" as const),
    stream: streamId,
    window: fc.integer({ min: INITIAL_WINDOW_BYTES, max: MAX_WINDOW_BYTES }),
    service: fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }),
  }),
  fc.record({
    type: fc.constant("accept" as const),
    stream: streamId,
    window: fc.integer({ min: INITIAL_WINDOW_BYTES, max: MAX_WINDOW_BYTES }),
  }),
  fc.record({
    type: fc.constant("data" as const),
    stream: streamId,
    opener: fc.boolean(),
    data: fc.uint8Array({ minLength: 1, maxLength: 300 }),
  }),
  fc.record({
    type: fc.constant("window" as const),
    stream: streamId,
    opener: fc.boolean(),
    increment: fc.integer({ min: 1, max: MAX_WINDOW_BYTES }),
  }),
  fc.record({ type: fc.constant("fin" as const), stream: streamId, opener: fc.boolean() }),
  fc.record({
    type: fc.constant("reset" as const),
    stream: streamId,
    opener: fc.boolean(),
    code: fc.integer({ min: 0, max: 255 }),
    reason: text,
  }),
);

Deno.test("tunnel frames round-trip, and batches decode as the frames they join", () => {
  fc.assert(
    fc.property(
      fc.array(frameArb, { maxLength: 12 }),
      fc.array(frameArb, { maxLength: 12 }),
      (a, b) => {
        const joined = new Uint8Array([...encodeFrames(a), ...encodeFrames(b)]);
        assertEquals(decodeFrames(joined), [...a, ...b].map((f) => ({ ...f })));
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("tunnel decoders throw nothing but their own error on arbitrary bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (input) => {
      for (const decode of [decodeFrames, decodePacketHeader]) {
        try {
          decode(input);
        } catch (error) {
          if (!(error instanceof TunnelProtocolError)) throw error;
        }
      }
    }),
    { numRuns: 2000 },
  );
  // Mostly valid frames with one byte changed: also only the codec's error, or frames.
  fc.assert(
    fc.property(
      fc.array(frameArb, { minLength: 1, maxLength: 5 }),
      fc.nat(),
      fc.integer({ min: 0, max: 255 }),
      (frames, at, value) => {
        const wire = encodeFrames(frames);
        wire[at % wire.length] = value;
        try {
          for (const f of decodeFrames(wire)) assert(typeof f.type === "string");
        } catch (error) {
          if (!(error instanceof TunnelProtocolError)) throw error;
        }
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("session ids are unique and the header carries them", () => {
  const a = newSessionId();
  const b = newSessionId();
  assertEquals(a.length, SESSION_ID_BYTES);
  assert(!sameSession(a, b));
  const packet = new Uint8Array(PACKET_HEADER_BYTES + FRAME_HEADER_BYTES);
  writePacketHeader(packet, PACKET_PLAIN, a, b);
  const header = decodePacketHeader(packet);
  assert(sameSession(header.sender, a) && sameSession(header.receiver, b));
  assertEquals(header.body.length, FRAME_HEADER_BYTES);
});

Deno.test("flow-control window", async (t) => {
  await t.step("a receiver refuses data past the credit it gave", () => {
    const w = new ReceiveWindow(100, 25);
    assert(w.receive(60));
    assert(w.receive(40));
    assert(!w.receive(1));
    assertEquals(w.buffered, 100);
  });
  await t.step("credit comes back in batches of the threshold", () => {
    const w = new ReceiveWindow(100, 25);
    assert(w.receive(100));
    const steps: [number, number][] = [[10, 0], [10, 0], [10, 30], [24, 0], [1, 25], [45, 45]];
    for (const [drained, increment] of steps) assertEquals(w.drained(drained), increment);
    assertEquals(w.remaining, 100);
    assertThrows(() => w.drained(1), RangeError);
  });
  await t.step("a sender spends only its credit and waits for more", async () => {
    const s = new SendWindow(10);
    assertEquals(s.take(4), 4);
    assertEquals(s.take(100), 6);
    assertEquals(s.take(1), 0);
    let woke = false;
    const waiting = s.available().then(() => woke = true);
    await Promise.resolve();
    assert(!woke);
    s.grant(5);
    await waiting;
    assert(woke);
    assertThrows(() => s.grant(0), RangeError);
    assertThrows(() => s.grant(MAX_WINDOW_BYTES), RangeError);
    s.close();
    await s.available();
  });
  await t.step("sender and receiver agree under any schedule (property)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5000 }),
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 3000 })), { maxLength: 200 }),
        (size, ops) => {
          const send = new SendWindow(size);
          const recv = new ReceiveWindow(size);
          for (const [sending, n] of ops) {
            if (sending) {
              const k = send.take(n);
              if (k > 0) assert(recv.receive(k), "sender exceeded the receiver's window");
            } else {
              const k = Math.min(n, recv.buffered);
              const inc = k > 0 ? recv.drained(k) : 0;
              if (inc > 0) send.grant(inc);
            }
            assert(recv.buffered <= size);
            assert(send.credit + recv.buffered <= size);
            assertEquals(send.credit, recv.remaining);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

Deno.test("reconnect backoff doubles to its cap, with jitter in the upper half", () => {
  const opts = { reconnectMinMs: 200, reconnectMaxMs: 5000 };
  const table: [number, number, number][] = [[1, 100, 200], [2, 200, 400], [3, 400, 800], [
    6,
    2500,
    5000,
  ], [40, 2500, 5000]];
  for (const [failures, low, high] of table) {
    assertEquals(backoffMs(failures, opts, () => 0), low);
    assertEquals(backoffMs(failures, opts, () => 1), high);
  }
});
