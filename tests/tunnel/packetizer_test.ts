/**
 * The session's one writer: what it does when a packet cannot be built or sent (a lost
 * OPEN or FIN must not leave its stream hanging until a timeout), and how it builds them.
 */
import { logText, withLogs } from "../_helpers/logs.ts";
import {
  decodeFrames,
  decodePacketHeader,
  FRAME_HEADER_BYTES,
  isUnknownSession,
  MAX_DATA_BYTES,
  MAX_FRAMES_BYTES,
  newSessionId,
  PACKET_HEADER_BYTES,
} from "../../lib/wire/tunnel.ts";
import { encodePacket, MAX_SEALS_IN_FLIGHT, takePacket } from "../../lib/tunnel/packetizer.ts";
import {
  createCipherFactory,
  SEALED_HEADER_BYTES,
  SecretCipher,
  TAG_BYTES,
} from "../../lib/tunnel/crypto.ts";
import { Peer } from "../../lib/tunnel/peer.ts";
import {
  DATA_ROOM_BYTES,
  LINK_HEADROOM_BYTES,
  Stream,
  takeDataBuffer,
} from "../../lib/tunnel/stream.ts";
import {
  assert,
  assertEquals,
  echoThrough,
  endedEmpty,
  labAndLaptop,
  patternBytes,
  sameBytes,
  waitFor,
} from "../_helpers/tunnel.ts";

/** Whether a plain tunnel packet carries a frame of `type`. */
function carries(payload: Uint8Array, type: string): boolean {
  try {
    return decodeFrames(decodePacketHeader(payload).body).some((f) => f.type === type);
  } catch {
    return false;
  }
}

Deno.test("a packet the link refuses resets the streams it carried at once, logged at warning", async () => {
  await withLogs(async (records) => {
    // A long open timeout: the stream must end because its packet failed, not by timing out.
    await using t = labAndLaptop({}, { openTimeoutMs: 30_000 });
    let refused = 0;
    t.relay.tap = (m) => {
      if (m.from === "laptop" && refused === 0 && carries(m.payload, "open")) {
        refused++;
        throw new TypeError("Test: the link refuses this packet");
      }
    };
    const t0 = performance.now();
    const got = await echoThrough(t.port, new TextEncoder().encode("hello"), 5_000);
    const ms = performance.now() - t0;
    assertEquals(refused, 1);
    assert(endedEmpty(got), "the stream whose OPEN was lost got an answer");
    assert(ms < 2_000, `the stream ended ${Math.round(ms)} ms later`);
    const stats = t.laptop.stats()!;
    assertEquals(stats.packetsFailed, 1);
    assertEquals(stats.resets.send_failed, 1);
    const warning = records.find((r) =>
      r.level === "warning" && logText(r).includes("Cannot send a packet to lab")
    );
    assert(warning, "no warning about the failed packet");
    // The session goes on: the next stream works.
    const data = patternBytes(200_000, 3);
    const again = await echoThrough(t.port, data);
    assert(again instanceof Uint8Array && sameBytes(again, data), "no stream after the failure");
    await waitFor(() => t.laptop.session?.streamCount === 0, 2_000, "streams to close");
  });
});

Deno.test("a FIN lost with its packet resets its stream instead of leaving it half-open", async () => {
  await withLogs(async () => {
    await using t = labAndLaptop({}, { keepaliveMs: 60_000 });
    let refused = 0;
    t.relay.tap = (m) => {
      if (m.from === "laptop" && refused === 0 && carries(m.payload, "fin")) {
        refused++;
        throw new RangeError("Test: the link refuses this packet");
      }
    };
    // Without the FIN lab's side never ends, so this would hang until its deadline and throw;
    // with it reset, the local connection closes (whatever was echoed before that).
    await echoThrough(t.port, patternBytes(1_000), 5_000);
    assertEquals(refused, 1);
    await waitFor(
      () => (t.laptop.stats()?.resets.send_failed ?? 0) === 1,
      2_000,
      "the stream to be reset",
    );
    await waitFor(() => t.laptop.session?.streamCount === 0, 2_000, "the stream to be gone");
  });
});

/** A stream that only needs an id and a side, for building packets. */
function stubStream(id: number, local = true): Stream {
  return new Stream({
    owner: { sendData() {}, sendWindow() {}, sendFin() {}, sendReset() {}, ended() {} },
    peer: "lab",
    id,
    local,
    service: "web",
    windowBytes: 65536,
    sendCredit: 65536,
  });
}

function dataItem(stream: Stream, length: number, fill = 7) {
  const buffer = new Uint8Array(DATA_ROOM_BYTES + length);
  buffer.fill(fill, DATA_ROOM_BYTES);
  return { stream, buffer, length };
}

Deno.test("a packet takes control frames first, then WINDOWs, then stream frames in order", () => {
  const peer = new Peer("lab");
  peer.session = newSessionId();
  const a = stubStream(1);
  const b = stubStream(2, false);
  peer.data.push({ frame: { type: "fin", stream: 1, opener: true }, stream: a });
  peer.data.push(dataItem(b, 3));
  peer.windows.set(b, 5000);
  peer.control.push({ type: "ping", ack: true, data: new Uint8Array(8) });
  const contents = takePacket(peer)!;
  assertEquals(contents.streams, new Set([a, b]));
  const frames = decodeFrames(encodePacket(contents).frames);
  assertEquals(frames.map((f) => f.type), ["ping", "window", "fin", "data"]);
  assertEquals(peer.hasOutput(), false);
});

Deno.test("a lone large DATA frame is encoded in place in its buffer, others into a new one", () => {
  const peer = new Peer("lab");
  peer.session = newSessionId();
  const s = stubStream(1);
  const big = dataItem(s, 100_000);
  peer.data.push(big);
  const encoded = encodePacket(takePacket(peer)!);
  assert(encoded.room?.buffer === big.buffer.buffer, "the big DATA was copied");
  assertEquals(encoded.frames.length, FRAME_HEADER_BYTES + 100_000);
  peer.data.push(dataItem(s, 10), dataItem(s, 20));
  const small = encodePacket(takePacket(peer)!);
  assertEquals(small.inPlace, false);
  assert(small.room.buffer !== big.buffer.buffer, "the small DATA were not copied out");
  assertEquals(decodeFrames(small.frames).length, 2);
});

Deno.test("a packet is cut at MAX_FRAMES_BYTES, the rest waits for the next", () => {
  const peer = new Peer("lab");
  peer.session = newSessionId();
  const s = stubStream(1);
  for (let i = 0; i < 20; i++) peer.data.push(dataItem(s, 60_000));
  const first = takePacket(peer)!;
  const bytes = encodePacket(first).frames.length;
  assert(bytes <= MAX_FRAMES_BYTES, `${bytes} bytes in one packet`);
  assert(peer.hasOutput(), "nothing was left for the next packet");
  let total = first.items.length;
  while (peer.hasOutput()) total += takePacket(peer)!.items.length;
  assertEquals(total, 20);
});

Deno.test("before the peer's session is known only HELLO goes out; a bad frame fails encoding", () => {
  const peer = new Peer("lab");
  const s = stubStream(1);
  peer.control.push({ type: "hello", ack: false }, {
    type: "ping",
    ack: false,
    data: new Uint8Array(8),
  });
  peer.data.push(dataItem(s, 10));
  const contents = takePacket(peer)!;
  assertEquals(contents.frames.map((f) => f.type), ["hello"]);
  assertEquals(contents.hello, true);
  assertEquals(contents.items.length, 0);
  assertEquals(peer.hasOutput(), false);
  // An OPEN whose service is too long cannot be encoded: the packet fails with its stream.
  peer.session = newSessionId();
  peer.data.push({
    frame: { type: "open", stream: 1, window: 65536, service: "x".repeat(300) },
    stream: s,
  });
  const bad = takePacket(peer)!;
  assertEquals(bad.streams, new Set([s]));
  assert.throws(() => encodePacket(bad), RangeError);
});

Deno.test("sealed packets leave in counter order while several are sealed at once", async () => {
  const cipher = createCipherFactory(new TextEncoder().encode("a shared secret of 32 bytes or so"));
  await using t = labAndLaptop({ cipher }, { cipher });
  const counters: bigint[] = [];
  t.relay.tap = (m) => {
    if (m.from !== "laptop") return;
    const header = decodePacketHeader(m.payload);
    if (isUnknownSession(header.receiver)) return; // the HELLO, under its own key
    counters.push(
      new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(PACKET_HEADER_BYTES),
    );
  };
  const data = patternBytes(3_000_000, 5);
  const got = await echoThrough(t.port, data);
  assert(got instanceof Uint8Array && sameBytes(got, data), "the echo differs");
  assert(counters.length > MAX_SEALS_IN_FLIGHT, `only ${counters.length} packets`);
  for (let i = 1; i < counters.length; i++) {
    assert(counters[i] > counters[i - 1], `counter ${counters[i]} after ${counters[i - 1]}`);
  }
  assertEquals(t.lab.stats()?.packetsDropped ?? {}, {});
});

Deno.test("a packet is sealed where its frames lie: in the DATA read buffer, or the one encodePacket made", async () => {
  const cipher = new SecretCipher(
    new TextEncoder().encode("a shared secret of 32 bytes or so"),
    "me",
  );
  const peer = new Peer("lab");
  peer.session = newSessionId();
  const s = stubStream(1);
  const big = { stream: s, buffer: takeDataBuffer(), length: MAX_DATA_BYTES };
  big.buffer.fill(7, DATA_ROOM_BYTES, DATA_ROOM_BYTES + MAX_DATA_BYTES);
  peer.data.push(big);
  const encoded = encodePacket(takePacket(peer)!);
  const me = newSessionId();
  const sealed = await cipher.seal(
    "lab",
    me,
    peer.session,
    encoded.frames,
    LINK_HEADROOM_BYTES,
    true,
  );
  assert(sealed.buffer === big.buffer.buffer, "the big DATA was sealed into a new buffer");
  assertEquals(sealed.byteOffset, LINK_HEADROOM_BYTES);
  assertEquals(
    sealed.length,
    SEALED_HEADER_BYTES + FRAME_HEADER_BYTES + MAX_DATA_BYTES + TAG_BYTES,
  );
  assertEquals(decodePacketHeader(sealed).kind, 1);
  peer.data.push(dataItem(s, 10), dataItem(s, 20));
  const small = encodePacket(takePacket(peer)!);
  const smallSealed = await cipher.seal(
    "lab",
    me,
    peer.session,
    small.frames,
    LINK_HEADROOM_BYTES,
    true,
  );
  assert(
    smallSealed.buffer === small.frames.buffer,
    "the new packet buffer was not sealed in place",
  );
  // Without room around them, or without inPlace, the frames are left alone.
  const frames = small.frames.slice();
  const copy = await cipher.seal("lab", me, peer.session, frames, LINK_HEADROOM_BYTES, true);
  assert(copy.buffer !== frames.buffer);
  const kept = small.frames.slice();
  const notGiven = await cipher.seal("lab", me, peer.session, small.frames, LINK_HEADROOM_BYTES);
  assert(notGiven.buffer !== small.frames.buffer);
  assertEquals(small.frames, kept);
});
