import assert from "node:assert/strict";
import {
  CLUSTER_PROTOCOL_VERSION,
  ClusterProtocolError,
  dataHeaderBytes,
  decodePacket,
  encodeFrame,
  encodePacketHeader,
  FLAG_FIRST,
  FLAG_LAST,
  FLAG_OPEN,
  type Frame,
  FRAME_CHECK,
  FRAME_CLOSE,
  FRAME_CREDIT,
  FRAME_DATA,
  FRAME_END,
  FRAME_PING,
  FRAME_PONG,
  MAX_DATA_HEADER_BYTES,
} from "../../lib/cluster/frame.ts";
import { concat } from "../../lib/util/bytes.ts";

const b = (...x: number[]) => new Uint8Array(x);

/** Packet header of node "a", epoch 0x01020304. */
const HEADER = b(CLUSTER_PROTOCOL_VERSION, 1, 0x61, 1, 2, 3, 4);

const cases: { name: string; frame: Frame; wire: Uint8Array }[] = [
  {
    name: "DATA, first, last and open, with key",
    frame: {
      type: FRAME_DATA,
      pair: 7,
      seq: 0,
      flags: FLAG_FIRST | FLAG_LAST | FLAG_OPEN,
      total: 2,
      key: "k",
      payload: b(0xaa, 0xbb),
    },
    // type | pair | seq | flags | len | total | keyLen | key | payload
    wire: b(1, 0, 0, 0, 7, 0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 2, 0, 1, 0x6b, 0xaa, 0xbb),
  },
  {
    name: "DATA, middle chunk",
    frame: { type: FRAME_DATA, pair: 1, seq: 0x01000000, flags: 0, payload: b(9) },
    wire: b(1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9),
  },
  {
    name: "DATA, empty message",
    frame: {
      type: FRAME_DATA,
      pair: 1,
      seq: 3,
      flags: FLAG_FIRST | FLAG_LAST,
      total: 0,
      payload: b(),
    },
    wire: b(1, 0, 0, 0, 1, 0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0),
  },
  {
    name: "CREDIT",
    frame: { type: FRAME_CREDIT, pair: 0xffffffff, bytes: 65536 },
    wire: b(2, 255, 255, 255, 255, 0, 1, 0, 0),
  },
  {
    name: "END",
    frame: { type: FRAME_END, pair: 2, nextSeq: 5, reason: "sender_closed" },
    wire: concat([b(3, 0, 0, 0, 2, 0, 0, 0, 5, 13), new TextEncoder().encode("sender_closed")]),
  },
  {
    name: "CHECK",
    frame: { type: FRAME_CHECK, pair: 3, nextSeq: 258 },
    wire: b(7, 0, 0, 0, 3, 0, 0, 1, 2),
  },
  {
    name: "PING",
    frame: { type: FRAME_PING, pair: 0xdeadbeef },
    wire: b(5, 0xde, 0xad, 0xbe, 0xef),
  },
  {
    name: "PONG",
    frame: { type: FRAME_PONG, pair: 1 },
    wire: b(6, 0, 0, 0, 1),
  },
  {
    name: "CLOSE",
    frame: { type: FRAME_CLOSE, pair: 2, reason: "sequence_gap" },
    wire: concat([b(4, 0, 0, 0, 2, 12), new TextEncoder().encode("sequence_gap")]),
  },
];

Deno.test("cluster frames encode to the documented byte layout and decode back", async (t) => {
  assert.deepEqual(encodePacketHeader("a", 0x01020304), HEADER);
  for (const c of cases) {
    await t.step(c.name, () => {
      assert.deepEqual(encodeFrame(c.frame), c.wire);
      const roomy = encodeFrame(c.frame, HEADER.length);
      assert.deepEqual(roomy.subarray(HEADER.length), c.wire, "room is left in front");
      const packet = decodePacket(concat([HEADER, c.wire]));
      assert.equal(packet.from, "a");
      assert.equal(packet.epoch, 0x01020304);
      assert.deepEqual(packet.frames, [c.frame]);
    });
  }
});

Deno.test("a packet carries several frames in order", () => {
  const frames = cases.map((c) => c.frame);
  const packet = decodePacket(concat([HEADER, ...cases.map((c) => c.wire)]));
  assert.deepEqual(packet.frames, frames);
});

Deno.test("a packet cut at any position is refused, never misread", () => {
  const whole = concat([HEADER, ...cases.map((c) => c.wire)]);
  const boundaries = new Set<number>();
  let at = HEADER.length;
  for (const c of cases) boundaries.add(at += c.wire.length);
  for (let cut = 0; cut < whole.length; cut++) {
    if (boundaries.has(cut)) {
      // A cut between frames is a shorter valid packet: it holds the frames before the cut.
      const n = [...boundaries].filter((x) => x <= cut).length;
      assert.equal(decodePacket(whole.subarray(0, cut)).frames.length, n);
      continue;
    }
    assert.throws(() => decodePacket(whole.subarray(0, cut)), ClusterProtocolError, `cut ${cut}`);
  }
});

Deno.test("hostile packets are refused with a protocol error", async (t) => {
  const bad: [string, Uint8Array][] = [
    ["unknown version", b(9, 1, 0x61, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1)],
    ["empty node name", b(1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1)],
    ["no frames", HEADER],
    ["unknown frame type", concat([HEADER, b(9, 0, 0, 0, 1)])],
    ["unknown flags", concat([HEADER, b(1, 0, 0, 0, 1, 0, 0, 0, 0, 8, 0, 0, 0, 0)])],
    ["length past the end", concat([HEADER, b(1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0xff, 0, 0, 0)])],
    [
      "total shorter than the chunk",
      concat([HEADER, b(1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 5, 5)]),
    ],
    ["empty key", concat([HEADER, b(1, 0, 0, 0, 1, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0)])],
    ["reason not UTF-8", concat([HEADER, b(4, 0, 0, 0, 1, 1, 0xff)])],
  ];
  for (const [name, bytes] of bad) {
    await t.step(name, () => assert.throws(() => decodePacket(bytes), ClusterProtocolError));
  }
});

Deno.test("encoders refuse values that do not fit the layout", () => {
  assert.throws(() => encodePacketHeader("", 0), RangeError);
  assert.throws(() => encodePacketHeader("a".repeat(65), 0), RangeError);
  assert.throws(() => encodePacketHeader("a", 2 ** 32), RangeError);
  assert.throws(
    () => encodeFrame({ type: FRAME_DATA, pair: 1, seq: -1, flags: 0, payload: b() }),
    RangeError,
  );
  assert.throws(
    () =>
      encodeFrame({
        type: FRAME_DATA,
        pair: 1,
        seq: 0,
        flags: FLAG_FIRST,
        total: 0,
        payload: b(1),
      }),
    RangeError,
  );
  assert.throws(
    () =>
      encodeFrame({ type: FRAME_DATA, pair: 1, seq: 0, flags: FLAG_OPEN, key: "", payload: b() }),
    RangeError,
  );
  assert.throws(
    () => encodeFrame({ type: FRAME_CLOSE, pair: 1, reason: "x".repeat(256) }),
    RangeError,
  );
});

Deno.test("dataHeaderBytes matches the encoded header and MAX_DATA_HEADER_BYTES bounds it", () => {
  for (const flags of [0, FLAG_FIRST, FLAG_LAST, FLAG_OPEN, FLAG_FIRST | FLAG_OPEN | FLAG_LAST]) {
    const frame: Frame = {
      type: FRAME_DATA,
      pair: 1,
      seq: 0,
      flags,
      total: flags & FLAG_FIRST ? 10 : undefined,
      key: flags & FLAG_OPEN ? "abc" : undefined,
      payload: new Uint8Array(10),
    };
    const header = dataHeaderBytes(flags, 3);
    assert.equal(encodeFrame(frame).length, header + 10);
    assert.ok(header <= MAX_DATA_HEADER_BYTES + 3);
  }
});
