/** End-to-end encryption of tunnel packets: the cipher alone, then sessions over a tapped relay. */
import { createCipherFactory, SecretCipher } from "../../lib/tunnel/crypto.ts";
import {
  decodePacketHeader,
  encodeFrames,
  newSessionId,
  PACKET_HEADER_BYTES,
  UNKNOWN_SESSION,
} from "../../lib/wire/tunnel.ts";
import type { Tunnel, TunnelOptions } from "../../lib/tunnel/tunnel.ts";
import {
  assert,
  assertEquals,
  containsBytes,
  echoServer,
  echoThrough,
  endedEmpty,
  FakeRelay,
  fakeTunnel,
  plainPacket,
  sameBytes,
  type Tapped,
  waitFor,
} from "../_helpers/tunnel.ts";

const encoder = new TextEncoder();
const SECRET = encoder.encode("correct horse battery staple, 32+ bytes");
const OTHER = encoder.encode("another secret entirely, also long enough");

Deno.test("sealed packets open only unchanged, once, between the right names and secret", async (t) => {
  const lab = newSessionId();
  const laptop = newSessionId();
  const frames = encodeFrames([{
    type: "data",
    stream: 1,
    opener: true,
    data: encoder.encode("hi"),
  }]);
  const sender = new SecretCipher(SECRET, "laptop");
  const seal = () => sender.seal("lab", laptop, lab, frames);
  const open = (cipher: SecretCipher, packet: Uint8Array, from = "laptop") =>
    cipher.open(from, decodePacketHeader(packet), packet);

  await t.step("the right receiver gets the frames back", async () => {
    const receiver = new SecretCipher(SECRET, "lab");
    const packet = await seal();
    assert(!containsBytes(packet, encoder.encode("hi")));
    assertEquals(await open(receiver, packet), frames);
  });
  await t.step("any changed byte, header or body, fails authentication", async () => {
    const receiver = new SecretCipher(SECRET, "lab");
    const packet = await seal();
    for (
      const at of [1, 5, 20, PACKET_HEADER_BYTES + 3, PACKET_HEADER_BYTES + 9, packet.length - 1]
    ) {
      const bad = packet.slice();
      bad[at] ^= 0x40;
      // A changed kind byte is refused as a header; every other change fails the tag.
      let header;
      try {
        header = decodePacketHeader(bad);
      } catch {
        continue;
      }
      await assert.rejects(receiver.open("laptop", header, bad), { message: /authentication/ });
    }
    assertEquals(await open(receiver, packet), frames, "the genuine packet still opens");
  });
  await t.step("a replayed or reordered packet is refused", async () => {
    const receiver = new SecretCipher(SECRET, "lab");
    const first = await seal();
    const second = await seal();
    await open(receiver, second);
    await assert.rejects(open(receiver, second), { message: /Replayed/ });
    await assert.rejects(open(receiver, first), { message: /Replayed/ });
  });
  await t.step("another secret, or another claimed sender, cannot open it", async () => {
    await assert.rejects(open(new SecretCipher(OTHER, "lab"), await seal()), {
      message: /authentication/,
    });
    await assert.rejects(open(new SecretCipher(SECRET, "lab"), await seal(), "mallory"), {
      message: /authentication/,
    });
    await assert.rejects(open(new SecretCipher(SECRET, "lab2"), await seal()), {
      message: /authentication/,
    });
  });
  await t.step(
    "packets opened at once are accepted in order; a replay among them is not",
    async () => {
      const receiver = new SecretCipher(SECRET, "lab");
      const packets: Uint8Array[] = [];
      for (let i = 0; i < 8; i++) packets.push(await seal());
      // All started before any finishes, the first of them making the key.
      const opened = await Promise.allSettled(
        [...packets, packets[3]].map((p) => open(receiver, p)),
      );
      assertEquals(opened.map((r) => r.status), [...Array(8).fill("fulfilled"), "rejected"]);
      assertEquals(receiver.derivations, 1, "the key of the pair was derived more than once");
      await assert.rejects(open(receiver, packets[7]), { message: /Replayed/ });
    },
  );
  await t.step("a packet sealed with headroom has those bytes free in front of it", async () => {
    const packet = await sender.seal("lab", laptop, lab, frames, 300);
    assertEquals(packet.byteOffset, 300);
    assertEquals(await open(new SecretCipher(SECRET, "lab"), packet), frames);
  });
  await t.step("each packet has a fresh nonce", async () => {
    const a = await seal();
    const b = await seal();
    const counter = (p: Uint8Array) => new DataView(p.buffer).getBigUint64(PACKET_HEADER_BYTES);
    assertEquals(counter(b), counter(a) + 1n);
  });
});

function tunnel(relay: FakeRelay, name: string, options: Partial<TunnelOptions> = {}): Tunnel {
  return fakeTunnel(relay, name, { openTimeoutMs: 1_000, ...options });
}

Deno.test("encrypted tunnels: the relay sees only ciphertext; wrong, missing or replayed keys fail", async (t) => {
  const relay = new FakeRelay();
  const seen: Tapped[] = [];
  relay.tap = (m) => void seen.push({ ...m, payload: m.payload.slice() });
  const echo = echoServer();
  const expose = new Map([["very-secret-service", { hostname: "127.0.0.1", port: echo.port }]]);
  await using lab = tunnel(relay, "lab", { expose, cipher: createCipherFactory(SECRET) });
  await using laptop = tunnel(relay, "laptop", { cipher: createCipherFactory(SECRET) });
  const marker = encoder.encode("PLAINTEXT-MARKER-that-must-never-cross-the-relay ");
  const data = new Uint8Array(marker.length * 20_000);
  for (let i = 0; i < 20_000; i++) data.set(marker, i * marker.length);

  await t.step("data flows, and no tapped message holds plaintext", async () => {
    const addr = laptop.forward({ port: 0, peer: "lab", service: "very-secret-service" });
    const got = await echoThrough(addr.port, data);
    assert(got instanceof Uint8Array && sameBytes(got, data), "the echo differs");
    assert(seen.length > 10);
    const probe = marker.subarray(0, 24);
    for (const m of seen) {
      assert(!containsBytes(m.payload, probe), "plaintext crossed the relay");
      assert(!containsBytes(m.payload, encoder.encode("very-secret-service")));
      assertEquals(m.payload[1], 1, "a packet was not sealed");
    }
  });

  await t.step("a replayed OPEN is refused and dials nothing", async () => {
    const dialled = echo.accepted();
    const toLab = seen.filter((m) => m.from === "laptop" && m.to === "lab");
    const dropped = lab.stats()!.packetsDropped.rejected ?? 0;
    for (const m of toLab) relay.route("laptop", "lab", m.payload);
    await waitFor(() => (lab.stats()!.packetsDropped.rejected ?? 0) >= dropped + toLab.length);
    assertEquals(echo.accepted(), dialled);
  });

  await t.step("a tampered packet is dropped; the stream never reaches the target", async () => {
    const dialled = echo.accepted();
    relay.tap = (m) => {
      if (m.from !== "laptop") return;
      const bad = m.payload.slice();
      bad[bad.length - 20] ^= 1;
      return bad;
    };
    const addr = laptop.forward({ port: 0, peer: "lab", service: "very-secret-service" });
    const got = await echoThrough(addr.port, encoder.encode("hello"));
    assert(endedEmpty(got));
    assertEquals(echo.accepted(), dialled);
    relay.tap = undefined;
  });

  await t.step("a peer with another secret cannot open streams", async () => {
    await using mallory = tunnel(relay, "mallory", { cipher: createCipherFactory(OTHER) });
    const addr = mallory.forward({ port: 0, peer: "lab", service: "very-secret-service" });
    const dialled = echo.accepted();
    const got = await echoThrough(addr.port, encoder.encode("hello"));
    assert(endedEmpty(got));
    assertEquals(echo.accepted(), dialled);
  });

  await t.step("a peer without a secret is refused", async () => {
    const plain = relay.connect("plain");
    const hello = plainPacket(newSessionId(), UNKNOWN_SESSION, [{ type: "hello", ack: false }]);
    await plain.send("lab", hello);
    await waitFor(() => (lab.stats()!.packetsDropped.not_encrypted ?? 0) === 1);
    plain.kill();
  });
  await lab.close();
  await laptop.close();
  await echo.close();
});

/** A sealed packet from `sender` (its session `from`) to the lab's session `to`. */
function sealer(name = "laptop") {
  const cipher = new SecretCipher(SECRET, name);
  const frames = encodeFrames([{ type: "hello", ack: false }]);
  return (from: Uint8Array, to: Uint8Array) => cipher.seal("lab", from, to, frames);
}

function openAt(receiver: SecretCipher, packet: Uint8Array, from = "laptop") {
  return receiver.open(from, decodePacketHeader(packet), packet);
}

/** A packet that looks sealed, from a session pair never seen, that no secret opens. */
function forgery(to: Uint8Array): Uint8Array {
  const packet = crypto.getRandomValues(new Uint8Array(PACKET_HEADER_BYTES + 8 + 40));
  packet[0] = 1;
  packet[1] = 1;
  packet.set(newSessionId(), 2);
  packet.set(to, 18);
  return packet;
}

Deno.test("forged packets naming new session pairs cost a bounded number of key derivations per peer", async () => {
  const lab = newSessionId();
  const receiver = new SecretCipher(SECRET, "lab", { newPairsBurst: 8, newPairRefillMs: 250 });
  const t0 = performance.now();
  let unopened = 0;
  for (let i = 0; i < 2_000; i++) {
    try {
      await openAt(receiver, forgery(i % 2 ? lab : UNKNOWN_SESSION), "mallory");
      assert.fail("a forgery opened");
    } catch (error) {
      if ((error as Error).message.includes("refused unopened")) unopened++;
    }
  }
  const allowed = 8 + Math.ceil((performance.now() - t0) / 250) + 1;
  assert(
    receiver.derivations <= allowed,
    `${receiver.derivations} derivations for 2,000 forgeries`,
  );
  assert(unopened >= 2_000 - allowed, `${unopened} refused unopened`);

  // Another peer is not held back by mallory's flood.
  const seal = sealer("laptop");
  const laptop = newSessionId();
  assertEquals(
    await openAt(receiver, await seal(laptop, lab)),
    encodeFrames([{ type: "hello", ack: false }]),
  );

  // Mallory itself gets a derivation again once its bucket refills: a real peer that was
  // refused retries its HELLO every second and gets through.
  const honest = sealer("mallory");
  const session = newSessionId();
  const deadline = performance.now() + 2_000;
  for (;;) {
    try {
      await openAt(receiver, await honest(session, lab), "mallory");
      break;
    } catch (error) {
      assert((error as Error).message.includes("refused unopened"), (error as Error).message);
      assert(performance.now() < deadline, "the bucket never refilled");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
});

Deno.test("keys of ended sessions are retired: their packets are refused, and nothing is sealed to them again", async (t) => {
  const lab = newSessionId();
  await t.step("a session forgotten by the session layer cannot be replayed", async () => {
    const receiver = new SecretCipher(SECRET, "lab");
    const seal = sealer();
    const old = newSessionId();
    const first = await seal(old, lab);
    const second = await seal(old, lab);
    await openAt(receiver, first);
    receiver.forget("laptop", old);
    await assert.rejects(openAt(receiver, first), { message: /ended session/ });
    await assert.rejects(openAt(receiver, second), { message: /ended session/ });
  });
  await t.step("a receive key dropped for room is retired, never derived afresh", async () => {
    const receiver = new SecretCipher(SECRET, "lab", { newPairsBurst: 1_000 });
    const sessions = Array.from({ length: 40 }, () => newSessionId());
    const packets = [];
    for (const s of sessions) {
      // A cipher per session, as a tunnel makes them (one per relay link).
      const p = await sealer()(s, lab);
      packets.push(p);
      await openAt(receiver, p);
    }
    // 40 sessions: at most 4 keys are live, 32 pairs are remembered, the rest are below the
    // floor. None of the early packets opens again, whichever way it was forgotten.
    for (const p of packets.slice(0, 36)) {
      await assert.rejects(openAt(receiver, p), { message: /ended session/ });
    }
    for (const p of packets.slice(36)) {
      await assert.rejects(openAt(receiver, p), { message: /Replayed/ });
    }
  });
  await t.step(
    "after forget, sealing to the ended session fails instead of reusing a nonce",
    async () => {
      const cipher = new SecretCipher(SECRET, "lab");
      const peer = newSessionId();
      const frames = encodeFrames([{ type: "hello", ack: true }]);
      await cipher.seal("laptop", lab, peer, frames);
      cipher.forget("laptop", peer);
      await assert.rejects(cipher.seal("laptop", lab, peer, frames), { message: /ended session/ });
      // The unknown session (HELLO before the handshake) keeps its one key and counter.
      const a = await cipher.seal("laptop", lab, UNKNOWN_SESSION, frames);
      const b = await cipher.seal("laptop", lab, UNKNOWN_SESSION, frames);
      const counter = (p: Uint8Array) => new DataView(p.buffer).getBigUint64(PACKET_HEADER_BYTES);
      assertEquals(counter(b), counter(a) + 1n);
    },
  );
  await t.step("send keys dropped for room are retired too", async () => {
    const cipher = new SecretCipher(SECRET, "lab");
    const frames = encodeFrames([{ type: "hello", ack: true }]);
    const peers = Array.from({ length: 6 }, () => newSessionId());
    for (const p of peers) await cipher.seal("laptop", lab, p, frames);
    await assert.rejects(cipher.seal("laptop", lab, peers[0], frames), {
      message: /ended session/,
    });
    await cipher.seal("laptop", lab, peers[5], frames);
  });
});

Deno.test("a tunnel without the peer's secret fails its stream at once, naming the secret, not after the open timeout", async () => {
  const relay = new FakeRelay();
  const echo = echoServer();
  const expose = new Map([["web", { hostname: "127.0.0.1", port: echo.port }]]);
  await using lab = tunnel(relay, "lab", { expose, cipher: createCipherFactory(SECRET) });
  await using plain = tunnel(relay, "plain", { openTimeoutMs: 10_000 });
  // The lab tries to reach the plain tunnel, so sealed HELLOs (retried every second) reach it.
  const fromLab = lab.forward({ port: 0, peer: "plain", service: "web" });
  const labSide = echoThrough(fromLab.port, encoder.encode("from the lab"), 8_000);
  const addr = plain.forward({ port: 0, peer: "lab", service: "web" });
  const started = performance.now();
  const got = await echoThrough(addr.port, encoder.encode("hello"), 8_000);
  const tookMs = performance.now() - started;
  assert(endedEmpty(got), "the stream did not end empty");
  assert(tookMs < 5_000, `the stream took ${Math.round(tookMs)} ms to fail`);
  assertEquals(echo.accepted(), 0);
  assert(endedEmpty(await labSide), "the lab's stream to the plain tunnel did not end empty");
  await echo.close();
});
