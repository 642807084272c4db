/**
 * Tunnel sessions over an in-memory relay: flow control, half-close, resets, restarts,
 * reconnects and hostile frames, with real loopback sockets at both ends.
 */
import {
  decodeFrames,
  decodePacketHeader,
  type Frame,
  newSessionId,
  ResetCode,
  UNKNOWN_SESSION,
} from "../../lib/wire/tunnel.ts";
import { TUNNEL_MAX_STREAMS_PER_PEER } from "../../lib/limits.ts";
import type { StreamConn } from "../../lib/tunnel/stream.ts";
import {
  assert,
  assertEquals,
  connect,
  countingServer,
  deadPort,
  echoServer,
  echoThrough,
  endedEmpty,
  type FakeLink,
  FakeRelay,
  fakeTunnel,
  labAndLaptop,
  patternBytes,
  plainPacket,
  rawPeer,
  readAll,
  readToEnd,
  sameBytes,
  stall,
  waitFor,
  withDeadline,
  writeAllAndClose,
} from "../_helpers/tunnel.ts";

const ONE = new Uint8Array(1);
const decoder = new TextDecoder();

/** Opens a stream through `port` and waits for one echoed byte: the stream is up. */
async function openEchoed(port: number): Promise<Deno.TcpConn> {
  const conn = await connect(port);
  await conn.write(new Uint8Array([1]));
  assertEquals(await withDeadline(conn.read(new Uint8Array(1)), 5_000, "the echoed byte"), 1);
  return conn;
}

/** A dialer whose connections never complete: accepted streams stay "opening". */
const neverDial = () => new Promise<never>(() => {});

/** A local connection that never reads or ends (for streams opened by hand). */
function idleConn(): StreamConn {
  return {
    read: () => new Promise(() => {}),
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close() {},
  };
}

Deno.test("tunnel carries a 4 MiB full-duplex echo through small windows, with half-close", async () => {
  // A 64 KiB window forces dozens of WINDOW round trips per direction.
  await using t = labAndLaptop({ windowBytes: 64 * 1024 }, { windowBytes: 64 * 1024 });
  const data = patternBytes(4 * 1024 * 1024, 7);
  const got = await echoThrough(t.port, data);
  assert(got instanceof Uint8Array && sameBytes(got, data), "echo differs");
  await waitFor(() => t.lab.session?.streamCount === 0 && t.laptop.session?.streamCount === 0);
});

Deno.test("tunnel honours half-close: the reply arrives after the client shut its write side", async () => {
  const counter = countingServer();
  await using t = labAndLaptop({
    expose: new Map([["count", { hostname: "127.0.0.1", port: counter.port }]]),
  });
  const addr = t.laptop.forward({ port: 0, peer: "lab", service: "count" });
  const conn = await connect(addr.port);
  await writeAllAndClose(conn, patternBytes(300_000));
  assertEquals(decoder.decode(await readAll(conn)), "received 300000");
  conn.close();
  await counter.close();
});

Deno.test("a stalled stream stops only itself; another stream keeps flowing", async () => {
  await using t = labAndLaptop({ windowBytes: 256 * 1024 }, { windowBytes: 256 * 1024 });
  // The stalled client writes and never reads: its echo backs up through the windows and
  // the socket buffers until its writes stop.
  const stalled = await connect(t.port);
  const { written, writing } = await stall(stalled);
  const before = written();
  const t0 = performance.now();
  const data = patternBytes(1024 * 1024, 3);
  const got = await echoThrough(t.port, data);
  assert(got instanceof Uint8Array && sameBytes(got, data), "the second stream's echo differs");
  const ms = performance.now() - t0;
  assert(ms < 3_000, `the second stream took ${ms} ms`);
  assertEquals(written(), before, "the stalled stream moved while stalled");
  stalled.close();
  await writing;
});

Deno.test("a dead target resets the stream and closes the local connection promptly", async () => {
  await using t = labAndLaptop({
    expose: new Map([["dead", { hostname: "127.0.0.1", port: deadPort() }]]),
  });
  const addr = t.laptop.forward({ port: 0, peer: "lab", service: "dead" });
  const t0 = performance.now();
  const conn = await connect(addr.port);
  await conn.write(new TextEncoder().encode("hello"));
  const result = await readToEnd(conn);
  conn.close();
  assert(endedEmpty(result), "got bytes from a dead target");
  assert(performance.now() - t0 < 2_000, "the local connection was not closed promptly");
  await waitFor(() => (t.laptop.stats()?.streamsReset ?? 0) === 1);
});

Deno.test("streams from a peer outside --allow, or to an unknown service, are refused", async () => {
  await using t = labAndLaptop({ allow: ["laptop"] });
  await using stranger = fakeTunnel(t.relay, "stranger");
  const refused = [
    stranger.forward({ port: 0, peer: "lab", service: "echo" }),
    t.laptop.forward({ port: 0, peer: "lab", service: "nothing" }),
  ];
  for (const addr of refused) {
    assert(endedEmpty(await echoThrough(addr.port, new Uint8Array([1, 2, 3]))));
  }
  assertEquals(t.echo.accepted(), 0, "the target was dialled for a refused stream");
  const rejected = t.lab.stats()!.framesRejected;
  assertEquals([rejected.not_allowed, rejected.unknown_service], [1, 1]);
  await stranger.close();
});

Deno.test("malformed, unknown and foreign frames are rejected without touching other streams", async () => {
  await using t = labAndLaptop({ windowBytes: 128 * 1024 }, { windowBytes: 128 * 1024 });
  const data = patternBytes(2 * 1024 * 1024, 11);
  const transfer = echoThrough(t.port, data);

  await t.lab.ready();
  const evil: FakeLink = t.relay.connect("evil");
  const me = newSessionId();
  await evil.send("lab", plainPacket(me, UNKNOWN_SESSION, [{ type: "hello", ack: false }]));
  const answer = await withDeadline(evil.receive(), 5_000, "a HELLO answer");
  const labSession = decodePacketHeader(answer!.payload).sender.slice();
  const hostile: Uint8Array[] = [
    new Uint8Array([1, 2, 3]),
    new Uint8Array(200).fill(0xff),
    plainPacket(me, labSession, []).map((b, i) => i === 0 ? 99 : b),
    // Stream ids 1.. belong to laptop's streams: from evil they name nothing.
    plainPacket(me, labSession, [
      { type: "data", stream: 1, opener: true, data: new Uint8Array(100) },
      { type: "window", stream: 1, opener: false, increment: 1_000_000 },
      { type: "fin", stream: 1, opener: true },
      { type: "reset", stream: 1, opener: true, code: 0, reason: "go away" },
      { type: "accept", stream: 1, window: 65536 },
    ]),
    // An unknown frame type and an invalid frame; then a truncated frame.
    new Uint8Array([
      ...plainPacket(me, labSession, []),
      ...[0x7f, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0],
      ...[0x13, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0],
    ]),
    new Uint8Array([...plainPacket(me, labSession, []), ...[0x12, 1, 0, 0, 0, 1, 0, 0, 0, 50, 1]]),
    // Frames addressed to a session lab never had.
    plainPacket(me, newSessionId(), [{ type: "open", stream: 5, window: 65536, service: "echo" }]),
  ];
  for (const p of hostile) await evil.send("lab", p);
  const got = await transfer;
  assert(got instanceof Uint8Array && sameBytes(got, data), "the ongoing stream was disturbed");
  assertEquals(t.echo.accepted(), 1);
  const stats = t.lab.stats()!;
  assert((stats.packetsDropped.malformed ?? 0) >= 3, JSON.stringify(stats));
  assert((stats.framesRejected.unknown_stream ?? 0) >= 1, JSON.stringify(stats));
  assertEquals(stats.framesRejected.unknown_type, 1);
  assertEquals(stats.framesRejected.invalid, 1);

  // A flood of HELLOs and of DATA for no stream earns one HELLO answer and a bounded number
  // of RESETs, not one answer per frame.
  const flood: Frame[] = [];
  for (let i = 0; i < 20_000; i++) flood.push({ type: "hello", ack: false });
  for (let i = 1; i <= 20_000; i++) {
    flood.push({ type: "data", stream: i, opener: true, data: ONE });
  }
  await evil.send("lab", plainPacket(me, labSession, flood));
  await waitFor(() => (t.lab.stats()!.framesRejected.unknown_stream ?? 0) >= 20_000);
  let answers = 0;
  let hellos = 0;
  const collecting = (async () => {
    for (let m = await evil.receive(); m; m = await evil.receive()) {
      for (const f of decodeFrames(decodePacketHeader(m.payload).body)) {
        answers++;
        if (f.type === "hello") hellos++;
      }
    }
  })();
  await new Promise((r) => setTimeout(r, 300));
  await evil.close();
  await collecting;
  assert(hellos <= 2, `${hellos} HELLO answers`);
  assert(answers <= 4200, `${answers} answers to a flood`);
});

Deno.test("a restarted peer is noticed and its old streams are reset", async () => {
  await using t = labAndLaptop();
  const old = await openEchoed(t.port);
  assertEquals(t.lab.session!.streamCount, 1);
  // The laptop dies without a word: its link just drops, the relay frees the name.
  t.relay.links.get("laptop")!.kill();
  await t.laptop.close();
  old.close();
  assertEquals(t.lab.session!.streamCount, 1, "lab cannot know yet");
  await using second = fakeTunnel(t.relay, "laptop");
  const addr = second.forward({ port: 0, peer: "lab", service: "echo" });
  const fresh = await openEchoed(addr.port);
  await waitFor(() => t.lab.session!.streamCount === 1 && t.lab.stats()!.streamsReset === 1);
  assertEquals(t.lab.stats()!.peerRestarts, 1);
  fresh.close();
  await second.close();
});

Deno.test("a restarted peer that never calls back is found by a PING to its old session", async () => {
  await using t = labAndLaptop({ keepaliveMs: 100 });
  const old = await openEchoed(t.port);
  t.relay.links.get("laptop")!.kill();
  await t.laptop.close();
  old.close();
  await using second = fakeTunnel(t.relay, "laptop");
  await second.ready();
  // Lab pings the old session; the new laptop answers who it is now; lab resets the stream.
  await waitFor(() => t.lab.session!.streamCount === 0, 2_000, "the old stream to be reset");
  assertEquals(t.lab.stats()!.streamsReset, 1);
  assertEquals(t.lab.stats()!.peerRestarts, 1, "reset for silence, not for the restart");
  await second.close();
});

Deno.test("a peer that goes silent has its streams reset after three keepalives", async () => {
  await using t = labAndLaptop({ keepaliveMs: 100 }, { keepaliveMs: 100 });
  const conn = await openEchoed(t.port);
  // Idle but alive: pings keep it open past three keepalives.
  await new Promise((r) => setTimeout(r, 450));
  assertEquals(t.laptop.session!.streamCount, 1);
  // Now lab's messages vanish (a relay that black-holes them).
  t.relay.tap = (m) => m.from === "lab" ? null : undefined;
  const t0 = performance.now();
  const result = await readToEnd(conn);
  conn.close();
  assert(endedEmpty(result));
  const ms = performance.now() - t0;
  assert(ms < 1_500, `reset took ${ms} ms`);
  // Once lab is heard again, new streams work: a silent peer is not shut out for good.
  t.relay.tap = undefined;
  const data = patternBytes(10_000);
  const got = await echoThrough(t.port, data);
  assert(got instanceof Uint8Array && sameBytes(got, data), "no new stream after the silence");
});

Deno.test("after a relay restart the tunnel reconnects, retrying while its name is held", async () => {
  await using t = labAndLaptop();
  const during = await openEchoed(t.port);
  // The relay restarts, and something else holds "lab" for a moment.
  t.relay.restart();
  const squatter = t.relay.connect("lab");
  const result = await readToEnd(during);
  during.close();
  assert(endedEmpty(result), "an open stream survived the restart");
  await new Promise((r) => setTimeout(r, 300));
  assertEquals(t.lab.connects, 1, "lab registered while the name was held");
  squatter.kill();
  await waitFor(() => t.lab.connects === 2 && t.laptop.connects === 2, 3_000, "reconnects");
  const data = patternBytes(100_000);
  const got = await echoThrough(t.port, data);
  assert(got instanceof Uint8Array && sameBytes(got, data));
});

Deno.test("a tunnel that closes says BYE, and its peer's streams end at once", async () => {
  await using t = labAndLaptop({}, { keepaliveMs: 60_000 });
  const conn = await openEchoed(t.port);
  const t0 = performance.now();
  await t.lab.close();
  const result = await readToEnd(conn);
  conn.close();
  assert(endedEmpty(result));
  assert(performance.now() - t0 < 1_000, "the peer's stream outlived the BYE");
  assertEquals(t.laptop.session!.streamCount, 0);
});

Deno.test("a tunnel never dials anything but its exposed targets", async () => {
  const other = echoServer();
  await using t = labAndLaptop();
  // Whatever service a peer names, lab looks it up among its own; an address is no name.
  for (const service of [`127.0.0.1:${other.port}`, "default", "ECHO"]) {
    const addr = t.laptop.forward({ port: 0, peer: "lab", service });
    assert(endedEmpty(await echoThrough(addr.port, new Uint8Array([1]))));
  }
  assertEquals(other.accepted(), 0);
  assertEquals(t.echo.accepted(), 0);
  await other.close();
});

Deno.test("DATA beyond a stream's credit resets the stream; exactly the credit is accepted", async () => {
  await using t = labAndLaptop({ windowBytes: 64 * 1024 });
  await t.lab.ready();
  await using evil = await rawPeer(t.relay, "evil", "lab");
  // Lab's window is 64 KiB: one packet carries OPEN and then 64 KiB + 1 of DATA, all acted on
  // before anything drains, so the last byte is past the credit whatever the timing.
  await evil.send([
    { type: "open", stream: 1, window: 65536, service: "echo" },
    { type: "data", stream: 1, opener: true, data: new Uint8Array(60_000) },
    { type: "data", stream: 1, opener: true, data: new Uint8Array(5_537) },
  ]);
  const reset = await evil.next((f) => f.type === "reset" && f.stream === 1);
  assert(reset.type === "reset");
  assertEquals([reset.code, reset.reason], [
    ResetCode.protocol,
    "Peer sent more than its window allows",
  ]);
  assertEquals(t.lab.stats()!.resets.protocol_violation, 1);
  // The same with exactly the credit: accepted and echoed, not reset.
  await evil.send([
    { type: "open", stream: 3, window: 65536, service: "echo" },
    { type: "data", stream: 3, opener: true, data: new Uint8Array(60_000) },
    { type: "data", stream: 3, opener: true, data: new Uint8Array(5_536) },
  ]);
  const answer = await evil.next((f) => "stream" in f && f.stream === 3 && f.type !== "window");
  assertEquals(answer.type, "accept");
  const echoed = await evil.next((f) => "stream" in f && f.stream === 3 && f.type !== "window");
  assertEquals(echoed.type, "data");
  assertEquals(t.lab.stats()!.resets.protocol_violation, 1);
});

Deno.test("a peer gets at most 1024 streams at once; the next OPEN is refused until one ends", async () => {
  await using t = labAndLaptop({ dial: neverDial });
  await t.lab.ready();
  await using evil = await rawPeer(t.relay, "evil", "lab");
  const opens: Frame[] = [];
  for (let id = 1; id <= TUNNEL_MAX_STREAMS_PER_PEER + 1; id++) {
    opens.push({ type: "open", stream: id, window: 65536, service: "echo" });
  }
  await evil.send(opens);
  const refused = await evil.next((f) => f.type === "reset");
  assert(refused.type === "reset");
  assertEquals([refused.stream, refused.code], [TUNNEL_MAX_STREAMS_PER_PEER + 1, ResetCode.limit]);
  assertEquals(t.lab.session!.streamCount, TUNNEL_MAX_STREAMS_PER_PEER);
  assertEquals(t.lab.stats()!.framesRejected.too_many_streams, 1);
  // One stream ends; a new one then fits, and the limit still holds after it.
  await evil.send([
    { type: "reset", stream: 1, opener: true, code: 0, reason: "done" },
    { type: "open", stream: 5000, window: 65536, service: "echo" },
    { type: "open", stream: 5001, window: 65536, service: "echo" },
  ]);
  const next = await evil.next((f) => f.type === "reset");
  assert(next.type === "reset");
  assertEquals(next.stream, 5001);
  assertEquals(t.lab.session!.streamCount, TUNNEL_MAX_STREAMS_PER_PEER);
  assertEquals(t.lab.stats()!.framesRejected.too_many_streams, 2);
});

Deno.test("this side opens at most 1024 streams to one peer", async () => {
  await using t = labAndLaptop({ dial: neverDial });
  const session = await t.laptop.ready();
  for (let i = 0; i < TUNNEL_MAX_STREAMS_PER_PEER; i++) {
    await session.open("lab", "echo", idleConn());
  }
  await assert.rejects(
    session.open("lab", "echo", idleConn()),
    (e: Error) => e.message.includes(`${TUNNEL_MAX_STREAMS_PER_PEER} already open`),
  );
  assertEquals(session.stats().streamsOpened, TUNNEL_MAX_STREAMS_PER_PEER);
});

Deno.test("a stream the peer never accepts is reset after the open timeout, reason logged", async () => {
  await using t = labAndLaptop({ dial: neverDial }, { openTimeoutMs: 300 });
  const t0 = performance.now();
  const conn = await connect(t.port);
  await conn.write(new TextEncoder().encode("hello"));
  const result = await readToEnd(conn, 3_000);
  conn.close();
  const ms = performance.now() - t0;
  assert(endedEmpty(result), "the stream got an answer");
  assert(ms >= 250 && ms < 2_000, `the stream ended after ${Math.round(ms)} ms`);
  await waitFor(() => t.laptop.stats()?.resets.open_timeout === 1, 2_000, "an open_timeout reset");
  // Lab sees the RESET and drops its half too.
  await waitFor(() => t.lab.session?.streamCount === 0, 2_000, "lab to drop the stream");
});

Deno.test("a stream to a peer that never answers HELLO fails after the open timeout", async () => {
  // A relay without the control channel says nothing about offline names.
  const relay = new FakeRelay();
  relay.reportsOffline = false;
  await using t = labAndLaptop({}, { openTimeoutMs: 300 }, relay);
  const addr = t.laptop.forward({ port: 0, peer: "nobody", service: "echo" });
  const t0 = performance.now();
  assert(endedEmpty(await echoThrough(addr.port, new Uint8Array([1]), 3_000)));
  const ms = performance.now() - t0;
  assert(ms >= 250 && ms < 2_000, `the connection closed after ${Math.round(ms)} ms`);
});
