/**
 * Large frames between workers are streamed through the ring as they arrive (the router's
 * remote path with `MeshPair.begin/append`), exactly like a local streaming sender: the
 * receiver has the first bytes before the sender has sent the rest, a sender that dies
 * mid-frame ends the receiver, and a receiver that leaves mid-frame loses the rest (counted
 * `receiver_gone`) while its name's next holder gets only what was sent to it.
 */
import assert from "node:assert/strict";
import { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import { bytes, expectText, waitFor } from "../_helpers/relay.ts";
import { onWorker } from "./_place.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function listen(): Promise<ThreadedRelay> {
  return ThreadedRelay.listen({ hostname: "127.0.0.1", port: 0, threads: 3 });
}

/** `dest|size|` and a payload of `size` bytes that says where each byte sits. */
function bigFrame(dest: string, size: number): { frame: Uint8Array; header: number } {
  const head = bytes(`${dest}|${size}|`);
  const frame = new Uint8Array(head.length + size);
  frame.set(head);
  for (let i = 0; i < size; i++) frame[head.length + i] = (i * 7 + (i >>> 12)) & 0xff;
  return { frame, header: head.length };
}

function checkPayload(payload: Uint8Array, from: number): void {
  for (let j = 0; j < payload.length; j++) {
    const i = from + j;
    if (payload[j] !== ((i * 7 + (i >>> 12)) & 0xff)) {
      throw new Error(`Payload damaged at byte ${i}`);
    }
  }
}

Deno.test("threads: a 2 MiB frame to another worker reaches its receiver as it arrives, not once whole", async () => {
  await using relay = await listen();
  await using bob = await onWorker(relay, 0, "bob");
  await using alice = await onWorker(relay, 1, "alice");
  const size = 2 * MiB;
  const { frame, header } = bigFrame("bob", size);
  const first = 600 * KiB;
  await alice.write(frame.subarray(0, header + first));
  // Bob has the header and most of what alice sent so far while the frame is far from whole
  // (before the stream path, the relay sent nothing until all 2 MiB had arrived).
  const head = `alice|${size}|`;
  assert.equal(new TextDecoder().decode(await bob.read(head.length, 5_000)), head);
  const early = await bob.read(500 * KiB, 5_000);
  checkPayload(early, 0);
  await alice.write(frame.subarray(header + first));
  const rest = await bob.read(size - early.length, 10_000);
  checkPayload(rest, early.length);
  await alice.write("bob|5|after");
  await expectText(bob, "alice|5|after", 5_000);
  const stats = await relay.stats();
  assert.equal(stats.messages, 2);
  assert.equal(stats.dropped.receiver_gone ?? 0, 0);
});

Deno.test("threads: a sender that dies mid-way through a frame to another worker ends the receiver", async () => {
  await using relay = await listen();
  await using bob = await onWorker(relay, 0, "bob");
  const alice = await onWorker(relay, 1, "alice");
  const size = 3 * MiB;
  const { frame, header } = bigFrame("bob", size);
  await alice.write(frame.subarray(0, header + 1 * MiB));
  const head = `alice|${size}|`;
  assert.equal(new TextDecoder().decode(await bob.read(head.length, 5_000)), head);
  checkPayload(await bob.read(512 * KiB, 5_000), 0);
  await alice.close();
  // Bob's stream cannot be repaired: the relay closes it, as for a sender on its own worker.
  const got = await bob.closed(5_000);
  assert.ok(got.length <= 1 * MiB - 512 * KiB, `bob got ${got.length} more bytes`);
  await waitFor(
    () => relay.statsNow().disconnects.sender_aborted === 1,
    5_000,
    "bob closed sender_aborted",
  );
});

Deno.test("threads: a receiver that leaves mid-frame loses the rest; its name's next holder gets only its own", async (t) => {
  for (const nextWorker of [0, 2]) {
    await t.step(`next holder on worker ${nextWorker}`, async () => {
      await using relay = await listen();
      await using alice = await onWorker(relay, 1, "alice");
      const bob1 = await onWorker(relay, 0, "bob");
      const size = 4 * MiB;
      const { frame, header } = bigFrame("bob", size);
      await alice.write(frame.subarray(0, header + 1 * MiB));
      await bob1.read(256 * KiB, 5_000);
      await bob1.close();
      // More of the frame makes the relay write to bob1 and find it gone.
      await alice.write(frame.subarray(header + 1 * MiB, header + 2 * MiB));
      await waitFor(() => relay.workerOf("bob") === undefined, 5_000, "bob1's name freed");
      await waitFor(() => relay.statsNow().connections === 1, 5_000, "bob1 gone");
      await using bob2 = await onWorker(relay, nextWorker, "bob");
      await alice.write(frame.subarray(header + 2 * MiB));
      await alice.write("bob|5|hello");
      await expectText(bob2, "alice|5|hello", 5_000);
      assert.ok(await bob2.stillOpen(200), "bob2 gets nothing else");
      const stats = await relay.stats();
      assert.equal(stats.messages, 1, "only hello was delivered");
      assert.equal(stats.dropped.receiver_gone, 1);
    });
  }
});

Deno.test("threads: a frame begun to a name's old holder on another worker finishes there; the next goes to the new one", async (t) => {
  for (const nextWorker of [0, 2]) {
    await t.step(`next holder on worker ${nextWorker}`, async () => {
      await using relay = await listen();
      await using alice = await onWorker(relay, 1, "alice");
      await using bob1 = await onWorker(relay, 0, "bob");
      const size = 1_500_000;
      const { frame, header } = bigFrame("bob", size);
      const split = 400_000;
      await alice.write(frame.subarray(0, header + split));
      const head = `alice|${size}|`;
      assert.equal(new TextDecoder().decode(await bob1.read(head.length, 5_000)), head);
      const early = await bob1.read(200_000, 5_000);
      // bob1 stops sending (its name is freed) while the rest of the frame is on its way.
      await bob1.conn.closeWrite();
      await waitFor(() => relay.workerOf("bob") === undefined, 5_000, "bob1's name freed");
      await using bob2 = await onWorker(relay, nextWorker, "bob");
      await alice.write(frame.subarray(header + split));
      await alice.write("bob|5|hello");
      await expectText(bob2, "alice|5|hello", 5_000);
      // bob1 gets the rest of its frame, whole and alone, then the relay closes it.
      const rest = await bob1.closed(10_000);
      assert.equal(rest.length, size - early.length);
      checkPayload(rest, early.length);
      assert.ok(await bob2.stillOpen(200), "bob2 gets nothing else");
      assert.equal((await relay.stats()).messages, 2);
    });
  }
});

Deno.test("threads: a small frame half sent from another worker holds back no other sender's frames", async () => {
  await using relay = await listen();
  await using rx = await onWorker(relay, 0, "rx");
  const tx = await onWorker(relay, 1, "tx");
  await using other = await onWorker(relay, 2, "other");
  // Below the streaming size a frame is assembled whole first, as on one worker: had its first
  // half been begun on rx's queue, other's frame would wait behind it for the rest.
  await tx.write("rx|1000|" + "x".repeat(500));
  await other.write("rx|2|ok");
  await expectText(rx, "other|2|ok", 5_000);
  await tx.close();
  await waitFor(() => relay.workerOf("tx") === undefined, 5_000, "tx gone");
  await other.write("rx|3|yes");
  await expectText(rx, "other|3|yes", 5_000);
  assert.ok(await rx.stillOpen(200), "nothing of tx's half frame reaches rx");
});
