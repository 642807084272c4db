/**
 * The soak's cases: valid exchanges whose every byte is checked, and the hostile ones the relay
 * must survive (malformed headers, absurd lengths, bad registrations, duplicate names, abrupt
 * closes, half-sent and stalled frames, slow readers, raw garbage), plus tunnel streams. Each
 * case opens its own connections, counts into the context's report, and closes what it opened.
 * @module
 */

import { encodeFrame, encodeRegister, MessageDecoder } from "../../lib/wire/relay.ts";
import { concat } from "../../lib/util/bytes.ts";
import { sleep } from "../../lib/util/async.ts";
import { type Context, Peer } from "./peer.ts";
import { makePayload, payloadIsIntact, type Random } from "./random.ts";

/** Time the relay gets to close a connection that broke the protocol. */
const CLOSE_EXPECTED_MS = 5_000;
/** Time a valid exchange gets, generous because 2 cores are shared with everything else. */
export const EXCHANGE_TIMEOUT_MS = 20_000;
/** Stalled-frame cases wait for the idle timeout, so they run only when it is this short. */
export const MAX_STALL_IDLE_MS = 10_000;

const enc = new TextEncoder();

/** Case kinds and their weights in the random mix. */
export const CASE_WEIGHTS = {
  valid_exchange: 6,
  unknown_destination: 1,
  duplicate_name: 1,
  malformed_header: 2,
  absurd_length: 2,
  bad_registration: 2,
  half_frame_close: 2,
  half_frame_fin: 1,
  abrupt_close: 2,
  random_bytes: 1,
  slow_reader: 1,
  no_registration: 0.3,
  half_frame_stall: 0.3,
  tunnel_stream: 3,
};
/** A kind of case. */
export type CaseKind = keyof typeof CASE_WEIGHTS;
/** Cases of clients that keep the protocol; every other case is a fault the relay must survive. */
export const WELL_BEHAVED = new Set<CaseKind>(["valid_exchange", "tunnel_stream"]);

/** A name no other case uses. */
export function uniqueName(ctx: Context, role: string): string {
  return `soak-${ctx.nextId()}-${role}`;
}

/**
 * Sends a checkable message to itself, after `before`, and waits for it to come back intact:
 * proof that `name` is registered to this connection and routes.
 */
async function selfCheck(
  ctx: Context,
  peer: Peer,
  decoder: MessageDecoder,
  name: string,
  before: Uint8Array = new Uint8Array(0),
): Promise<boolean> {
  const size = ctx.rng.int(8, 100);
  const probe = makePayload(ctx.rng.int(0, 0xffffffff), size);
  if (!await peer.send(concat([before, encodeFrame(name, probe)]))) return false;
  const got = await peer.receive(decoder, 1, EXCHANGE_TIMEOUT_MS);
  return got !== undefined && got[0].name === name && payloadIsIntact(got[0].payload, size);
}

/** Registers and confirms it (the relay sends no acknowledgement of its own). */
export function register(ctx: Context, peer: Peer, decoder: MessageDecoder, name: string) {
  return selfCheck(ctx, peer, decoder, name, encodeRegister(name));
}

function messageSize(rng: Random, max: number): number {
  const r = rng.next();
  if (r < 0.6) return rng.int(4, 512);
  if (r < 0.9) return rng.int(513, 64 * 1024);
  if (r < 0.98) return rng.int(64 * 1024, 256 * 1024);
  return max;
}

/** Expects the relay to close `peer` after bad bytes; counts it or reports a failure. */
async function expectClosed(ctx: Context, peer: Peer, kind: string, what: string) {
  if (await peer.closedByPeer(CLOSE_EXPECTED_MS)) ctx.report.badClosed++;
  else ctx.fail("bad_connection_kept", `${kind}: relay kept the connection open after ${what}`);
}

/** Every case, by kind. */
export const CASES: Record<CaseKind, (ctx: Context) => Promise<void>> = {
  async valid_exchange(ctx) {
    const { rng } = ctx;
    const [a, b] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const [da, db] = [new MessageDecoder(), new MessageDecoder()];
      const [na, nb] = [uniqueName(ctx, "a"), uniqueName(ctx, "b")];
      const registered = await Promise.all([register(ctx, a, da, na), register(ctx, b, db, nb)]);
      if (!registered.every(Boolean)) {
        const why = `${a.ended || "ok"} / ${b.ended || "ok"}`;
        ctx.fail("registration_failed", `valid_exchange: ${na} or ${nb} did not register (${why})`);
        return;
      }
      const count = rng.int(1, 20);
      const sizes = Array.from({ length: count }, () => messageSize(rng, ctx.maxMessageBytes));
      const frames = sizes.flatMap((size) => {
        const message = encodeFrame(nb, makePayload(rng.int(0, 0xffffffff), size));
        // Keepalives between messages must never be delivered.
        return rng.next() < 0.3 ? [encodeFrame(na, new Uint8Array(0)), message] : [message];
      });
      const sending = (async () => {
        for (const f of frames) if (!await a.send(f, EXCHANGE_TIMEOUT_MS)) return false;
        return true;
      })();
      const [sent, got] = await Promise.all([sending, b.receive(db, count, EXCHANGE_TIMEOUT_MS)]);
      if (!sent || got === undefined) {
        ctx.fail("message_lost", `valid_exchange: ${count} messages ${na} → ${nb} not all arrived`);
        return;
      }
      for (let i = 0; i < count; i++) {
        if (got[i].name !== na || !payloadIsIntact(got[i].payload, sizes[i])) {
          ctx.fail("message_corrupt", `valid_exchange: message ${i} of ${count} differs`);
          return;
        }
      }
      ctx.report.messagesVerified += count;
      const reply = makePayload(rng.int(0, 0xffffffff), 100);
      await b.send(encodeFrame(na, reply));
      const back = await a.receive(da, 1, EXCHANGE_TIMEOUT_MS);
      if (back === undefined || back[0].name !== nb || !payloadIsIntact(back[0].payload, 100)) {
        ctx.fail("message_lost", `valid_exchange: reply ${nb} → ${na} did not arrive intact`);
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      a.close();
      b.close();
    }
  },

  async unknown_destination(ctx) {
    const peer = await Peer.open(ctx);
    try {
      const decoder = new MessageDecoder();
      const name = uniqueName(ctx, "u");
      if (!await register(ctx, peer, decoder, name)) {
        ctx.fail(
          "registration_failed",
          `unknown_destination: ${name} did not register (${peer.ended})`,
        );
        return;
      }
      const lost = Array.from(
        { length: ctx.rng.int(1, 10) },
        () => encodeFrame(`nobody-${ctx.nextId()}`, ctx.rng.bytes(ctx.rng.int(0, 2000))),
      );
      if (!await selfCheck(ctx, peer, decoder, name, concat(lost))) {
        ctx.fail("message_lost", "unknown_destination: the sender's own message did not return");
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      peer.close();
    }
  },

  async duplicate_name(ctx) {
    const [first, second] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const decoder = new MessageDecoder();
      const name = uniqueName(ctx, "d");
      if (!await register(ctx, first, decoder, name)) {
        ctx.fail(
          "registration_failed",
          `duplicate_name: ${name} did not register (${first.ended})`,
        );
        return;
      }
      await second.send(encodeRegister(name));
      await expectClosed(ctx, second, "duplicate_name", "a taken name");
      if (!await selfCheck(ctx, first, decoder, name)) {
        ctx.fail("message_lost", "duplicate_name: the first owner lost its name");
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      first.close();
      second.close();
    }
  },

  async malformed_header(ctx) {
    const { rng } = ctx;
    const bad = rng.pick([
      "bob|1x|",
      "bob||",
      "bob|-1|",
      "bob| 5|",
      "bob|5 |hello",
      `${"n".repeat(rng.int(256, 2000))}|1|x`,
      `${"n".repeat(rng.int(256, 2000))}`,
      "|||||",
      "bob|0x10|",
      "bob|5|hello|bad|",
    ]);
    const peer = await Peer.open(ctx);
    const prefix = rng.next() < 0.5
      ? encodeFrame("someone", rng.bytes(rng.int(0, 100)))
      : new Uint8Array(0);
    await peer.send(concat([encodeRegister(uniqueName(ctx, "m")), prefix, enc.encode(bad)]));
    await expectClosed(ctx, peer, "malformed_header", JSON.stringify(bad.slice(0, 20)));
  },

  async absurd_length(ctx) {
    const { rng } = ctx;
    const length = rng.pick([
      String(ctx.maxMessageBytes + 1),
      String(ctx.maxMessageBytes + rng.int(2, 1_000_000)),
      "9".repeat(20),
      "1" + "0".repeat(rng.int(20, 40)),
      "0".repeat(21) + "1",
      String(Number.MAX_SAFE_INTEGER),
      "18446744073709551616",
    ]);
    const peer = await Peer.open(ctx);
    // Some payload bytes follow: the relay must refuse on the header, not wait for them.
    const tail = rng.bytes(rng.int(0, 4096));
    await peer.send(
      concat([encodeRegister(uniqueName(ctx, "l")), enc.encode(`x|${length}|`), tail]),
    );
    await expectClosed(ctx, peer, "absurd_length", `length ${length.slice(0, 24)}`);
  },

  async bad_registration(ctx) {
    const { rng } = ctx;
    const bad = rng.pick([
      enc.encode("|"),
      enc.encode("a\u0000b|"),
      enc.encode("tab\there|"),
      enc.encode(`${"n".repeat(256)}|`),
      enc.encode("n".repeat(rng.int(600, 5000))),
      enc.encode("lab:|"),
      enc.encode("lab:two words|"),
      enc.encode(`lab:${"t".repeat(300)}|`),
      new Uint8Array([0xff, 0xfe, 0x7c]),
      new Uint8Array([0x61, 0x3a, 0xff, 0x7c]),
    ]);
    const peer = await Peer.open(ctx);
    await peer.send(bad);
    await expectClosed(ctx, peer, "bad_registration", `registration of ${bad.length} bytes`);
  },

  async half_frame_close(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx);
    const frame = encodeFrame(`dest-${rng.int(0, 9)}`, rng.bytes(rng.int(10, 5000)));
    const cut = rng.int(1, frame.length - 1);
    await peer.send(concat([encodeRegister(uniqueName(ctx, "h")), frame.subarray(0, cut)]));
    peer.close();
  },

  async half_frame_fin(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx);
    const frame = encodeFrame("dest", rng.bytes(rng.int(10, 5000)));
    const cut = rng.int(1, frame.length - 1);
    await peer.send(concat([encodeRegister(uniqueName(ctx, "f")), frame.subarray(0, cut)]));
    await peer.finish();
    await expectClosed(ctx, peer, "half_frame_fin", "end of stream inside a frame");
  },

  async half_frame_stall(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx);
    const frame = encodeFrame("dest", rng.bytes(rng.int(10, 5000)));
    await peer.send(
      concat([
        encodeRegister(uniqueName(ctx, "s")),
        frame.subarray(0, rng.int(1, frame.length - 1)),
      ]),
    );
    if (await peer.closedByPeer(ctx.idleTimeoutMs + CLOSE_EXPECTED_MS)) ctx.report.badClosed++;
    else {ctx.fail(
        "bad_connection_kept",
        "half_frame_stall: a stalled sender outlived the idle timeout",
      );}
  },

  async abrupt_close(ctx) {
    const { rng } = ctx;
    const variant = rng.int(0, 2);
    if (variant === 0) {
      (await Peer.open(ctx)).close();
      return;
    }
    if (variant === 1) {
      const peer = await Peer.open(ctx);
      await peer.send(encodeRegister(uniqueName(ctx, "x")));
      peer.close();
      return;
    }
    // A receiver that vanishes while a large message is on its way to it.
    const [a, b] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const [na, nb] = [uniqueName(ctx, "xa"), uniqueName(ctx, "xb")];
      const db = new MessageDecoder();
      if (!await register(ctx, b, db, nb)) return;
      const sending = a.send(
        concat([encodeRegister(na), encodeFrame(nb, rng.bytes(ctx.maxMessageBytes))]),
        EXCHANGE_TIMEOUT_MS,
      );
      await sleep(rng.int(0, 20));
      b.close();
      await sending;
    } finally {
      a.close();
      b.close();
    }
  },

  async random_bytes(ctx) {
    const peer = await Peer.open(ctx);
    await peer.send(ctx.rng.bytes(ctx.rng.int(1, 4096)));
    // Random bytes may by chance be a valid registration, so the relay need not close.
    await peer.closedByPeer(500);
  },

  async slow_reader(ctx) {
    const { rng } = ctx;
    const [a, b] = [await Peer.open(ctx), await Peer.open(ctx)];
    try {
      const nb = uniqueName(ctx, "r");
      if (!await register(ctx, b, new MessageDecoder(), nb)) return;
      await a.send(encodeRegister(uniqueName(ctx, "w")));
      const chunk = encodeFrame(nb, rng.bytes(64 * 1024));
      const until = performance.now() + rng.int(200, 2_000);
      // b never reads: the relay must hold a bounded backlog and push back on a.
      while (performance.now() < until) {
        if (!await a.send(chunk, 1_000)) break;
      }
    } finally {
      a.close();
      b.close();
    }
  },

  async no_registration(ctx) {
    const peer = await Peer.open(ctx);
    if (ctx.rng.next() < 0.5) await peer.send(enc.encode("partial-name"));
    if (await peer.closedByPeer(ctx.registerTimeoutMs + CLOSE_EXPECTED_MS)) ctx.report.badClosed++;
    else {ctx.fail(
        "bad_connection_kept",
        "no_registration: relay kept a client that never registered",
      );}
  },

  async tunnel_stream(ctx) {
    const { rng } = ctx;
    const peer = await Peer.open(ctx, ctx.tunnelPort);
    try {
      const data = rng.bytes(rng.int(1, 256 * 1024));
      if (rng.next() < 0.2) {
        // Abrupt: close while the stream is still carrying data.
        await peer.send(data.subarray(0, rng.int(1, data.length)));
        return;
      }
      const [sent, echoed] = await Promise.all([
        peer.send(data, EXCHANGE_TIMEOUT_MS),
        peer.receiveBytes(data.length, EXCHANGE_TIMEOUT_MS),
      ]);
      if (!sent || echoed === undefined) {
        ctx.fail("tunnel_stream", `tunnel_stream: ${data.length} bytes did not come back`);
        return;
      }
      if (!echoed.every((b, i) => b === data[i])) {
        ctx.fail("tunnel_stream", `tunnel_stream: the echo of ${data.length} bytes differs`);
        return;
      }
      ctx.report.messagesVerified++;
    } finally {
      peer.close();
    }
  },
};
