import assert from "node:assert/strict";
import { type ByteWriter, Outbox, STREAM_THRESHOLD_BYTES } from "../../lib/io/outbox.ts";
import { bytes, text } from "../_helpers/relay.ts";

/** A writer that takes at most `capacity` bytes per call, like a tiny socket buffer. */
class TinyWriter implements ByteWriter {
  written: number[] = [];
  calls = 0;
  paused: Promise<void> | undefined;
  constructor(readonly capacity: number) {}
  async write(data: Uint8Array): Promise<number> {
    this.calls++;
    await this.paused;
    await Promise.resolve();
    const n = Math.min(this.capacity, data.length);
    for (let i = 0; i < n; i++) this.written.push(data[i]);
    return n;
  }
  get text(): string {
    return text(new Uint8Array(this.written));
  }
}

Deno.test("outbox writes whole frames in order through an 8-byte writer", async () => {
  const writer = new TinyWriter(8);
  const outbox = new Outbox(writer, { budgetBytes: 1024 });
  const frames = Array.from({ length: 50 }, (_, i) => `frame-${i};`);
  for (const f of frames) outbox.push(bytes(f));
  await outbox.drained();
  assert.equal(writer.text, frames.join(""));
  assert.equal(outbox.queuedBytes, 0);
});

Deno.test("outbox batches frames queued in one turn into few writes", async () => {
  const writer = new TinyWriter(1 << 20);
  const outbox = new Outbox(writer, { budgetBytes: 1 << 20 });
  for (let i = 0; i < 1000; i++) outbox.push(bytes("x".repeat(64)));
  await outbox.drained();
  assert.equal(writer.written.length, 64_000);
  assert.ok(writer.calls <= 2, `${writer.calls} writes`);
});

Deno.test("a frame still arriving holds back frames queued after it", async () => {
  const writer = new TinyWriter(8);
  const outbox = new Outbox(writer, { budgetBytes: 1 << 20 });
  const owner = {};
  const frame = outbox.begin(owner, bytes("A|"));
  outbox.push(bytes("B;"));
  outbox.append(frame, bytes("aa"));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(writer.text, "", "small incomplete frame is not written yet");
  outbox.append(frame, bytes("a;"), true);
  await outbox.drained();
  assert.equal(writer.text, "A|aaa;B;");
});

Deno.test("a large frame streams before it is complete", async () => {
  const writer = new TinyWriter(1 << 20);
  const outbox = new Outbox(writer, { budgetBytes: 1 << 22 });
  const frame = outbox.begin({}, bytes("H"));
  outbox.append(frame, new Uint8Array(STREAM_THRESHOLD_BYTES));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(writer.written.length, STREAM_THRESHOLD_BYTES + 1);
  assert.equal(outbox.abort(frame), false, "a started frame cannot be dropped silently");
});

Deno.test("aborting an unstarted frame drops it and lets the rest through", async () => {
  const writer = new TinyWriter(8);
  const outbox = new Outbox(writer, { budgetBytes: 1 << 20 });
  const frame = outbox.begin({}, bytes("dead|"));
  outbox.append(frame, bytes("partial"));
  outbox.push(bytes("alive;"));
  assert.equal(outbox.abort(frame), true);
  await outbox.drained();
  assert.equal(writer.text, "alive;");
});

Deno.test("senders wait past the budget and go on once it drains", async () => {
  const writer = new TinyWriter(1024);
  let release!: () => void;
  writer.paused = new Promise((r) => release = r);
  const outbox = new Outbox(writer, { budgetBytes: 100 });
  const sender = {};
  outbox.push(new Uint8Array(150));
  assert.ok(outbox.overBudget(sender));
  let resumed = false;
  const waiting = outbox.waitForRoom(sender).then(() => resumed = true);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(resumed, false);
  release();
  await waiting;
  assert.equal(resumed, true);
});

Deno.test("waiting for room, for the drain and for held chunks works round after round", async () => {
  // The waiter and in-flight lists go back to one shared empty list between rounds: each
  // round must get a list of its own again.
  const writer = new TinyWriter(1024);
  const outbox = new Outbox(writer, { budgetBytes: 100 });
  const sender = {};
  let released = 0;
  const hold = { release: (n: number) => released += n };
  for (let round = 1; round <= 3; round++) {
    let release!: () => void;
    writer.paused = new Promise((r) => release = r);
    outbox.push(new Uint8Array(150));
    const frame = outbox.begin(sender, bytes("H"));
    outbox.append(frame, new Uint8Array(10), true, hold);
    const waits = [outbox.waitForRoom(sender), outbox.waitForRoom({}), outbox.drained()];
    let done = 0;
    for (const w of waits) w.then(() => done++);
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(done, 0, `round ${round}: nobody goes on before the drain`);
    release();
    await Promise.all(waits);
    assert.equal(released, 10 * round, `round ${round}: the held chunk is released once written`);
    assert.equal(outbox.queuedBytes, 0);
  }
});

Deno.test("the owner of the frame being written may finish it past the budget", () => {
  const writer = new TinyWriter(8);
  writer.paused = new Promise(() => {}); // never writes
  const outbox = new Outbox(writer, { budgetBytes: 100 });
  const owner = {};
  const other = {};
  const frame = outbox.begin(owner, bytes("h"));
  outbox.push(new Uint8Array(200)); // another sender's frame behind it
  outbox.append(frame, new Uint8Array(50));
  assert.equal(outbox.overBudget(owner), false, "head owner sees only its own frame");
  assert.equal(outbox.overBudget(other), true);
  outbox.close();
});

Deno.test("close releases waiters, reports unwritten frames and holds", async () => {
  const writer = new TinyWriter(8);
  writer.paused = new Promise(() => {});
  const outbox = new Outbox(writer, { budgetBytes: 10 });
  const results: boolean[] = [];
  outbox.push(new Uint8Array(100), (ok) => results.push(ok));
  let released = 0;
  const frame = outbox.begin({}, bytes("x"));
  outbox.append(frame, bytes("y"), false, { release: () => released++ });
  const waiting = outbox.waitForRoom({});
  outbox.close();
  outbox.close();
  await waiting;
  await outbox.drained();
  assert.deepEqual(results, [false]);
  assert.equal(released, 1);
});

Deno.test("a failing writer closes the outbox once and reports the error", async () => {
  const errors: unknown[] = [];
  const outbox = new Outbox({ write: () => Promise.reject(new Error("reset")) }, {
    budgetBytes: 10,
    onError: (e) => errors.push(e),
  });
  outbox.push(bytes("a"));
  outbox.push(bytes("b"));
  await outbox.drained();
  assert.equal(errors.length, 1);
  assert.ok(outbox.closed);
});

Deno.test("small frames share the tail buffer but keep their order around others", async () => {
  const writer = new TinyWriter(5);
  const outbox = new Outbox(writer, { budgetBytes: 1 << 20 });
  outbox.pushFrame(bytes("a"), bytes("1"));
  outbox.pushFrame(bytes("b"), bytes("22"));
  const big = outbox.begin({}, bytes("BIG|"));
  outbox.pushFrame(undefined, bytes("after-big;"));
  outbox.append(big, bytes("body;"), true);
  outbox.push(bytes("whole;"));
  outbox.pushFrame(bytes("c"), bytes("333"));
  await outbox.drained();
  assert.equal(writer.text, "a|1|1b|2|22BIG|body;after-big;whole;c|3|333");
  outbox.trim();
  outbox.pushFrame(bytes("d"), bytes("4"));
  await outbox.drained();
  assert.ok(writer.text.endsWith("d|1|4"));
});

Deno.test("a closed outbox completes everything at once: nobody waits forever", async (t) => {
  const closed = () => {
    const outbox = new Outbox(new TinyWriter(8), { budgetBytes: 10 });
    outbox.close();
    return outbox;
  };
  await t.step("push calls done(false)", () => {
    const results: boolean[] = [];
    closed().push(bytes("x"), (ok) => results.push(ok));
    assert.deepEqual(results, [false]);
  });
  await t.step("a frame begun after close is settled false by its last append", async () => {
    const outbox = closed();
    const written = new Promise<boolean>((resolve) => {
      const frame = outbox.begin({}, bytes("h|"));
      frame.done = resolve;
      outbox.append(frame, bytes("body"), true);
    });
    assert.equal(await withDeadline(written), false);
  });
  await t.step("append releases its hold and settles the frame, once", () => {
    const outbox = closed();
    const results: boolean[] = [];
    let released = 0;
    const frame = outbox.begin({}, bytes("h|"));
    frame.done = (ok) => results.push(ok);
    outbox.append(frame, bytes("a"), false, { release: () => released++ });
    outbox.append(frame, bytes("b"), true, { release: () => released++ });
    assert.equal(released, 2);
    assert.deepEqual(results, [false], "done is called once");
    assert.equal(outbox.queuedBytes, 0);
  });
  await t.step("a frame begun before close and ended after it is settled once", () => {
    const writer = new TinyWriter(8);
    writer.paused = new Promise(() => {});
    const outbox = new Outbox(writer, { budgetBytes: 10 });
    const results: boolean[] = [];
    const frame = outbox.begin({}, bytes("h|"));
    frame.done = (ok) => results.push(ok);
    outbox.close();
    outbox.append(frame, bytes("late"), true);
    assert.deepEqual(results, [false]);
  });
  await t.step("waitForRoom and drained resolve", async () => {
    const outbox = closed();
    outbox.pushFrame(bytes("n"), new Uint8Array(100));
    assert.equal(outbox.overBudget({}), false);
    await withDeadline(outbox.waitForRoom({}));
    await withDeadline(outbox.drained());
  });
});

Deno.test("drained waits for a frame still arriving, and close ends that wait", async () => {
  const writer = new TinyWriter(1024);
  const outbox = new Outbox(writer, { budgetBytes: 1 << 20 });
  const frame = outbox.begin({}, bytes("h|"));
  outbox.append(frame, new Uint8Array(STREAM_THRESHOLD_BYTES));
  let drained = false;
  const waiting = outbox.drained().then(() => drained = true);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(drained, false, "the frame is not complete yet");
  outbox.append(frame, bytes("end"), true);
  await withDeadline(waiting);
  const second = outbox.begin({}, bytes("h|"));
  outbox.append(second, bytes("part"));
  const again = outbox.drained();
  outbox.close();
  await withDeadline(again);
});

Deno.test("with a share, the share decides when senders wait and sees every byte", async () => {
  const writer = new TinyWriter(1 << 20);
  let release!: () => void;
  writer.paused = new Promise((r) => release = r);
  let charged = 0;
  let limit = 1000;
  const outbox = new Outbox(writer, {
    budgetBytes: 10, // ignored when a share is given
    share: { charge: (n) => charged += n, full: (queued) => queued > limit },
  });
  outbox.pushFrame(bytes("a"), new Uint8Array(500));
  assert.equal(charged, 506);
  assert.equal(outbox.overBudget({}), false);
  limit = 100;
  assert.equal(outbox.overBudget({}), true);
  const frame = outbox.begin({}, bytes("h|"));
  outbox.append(frame, new Uint8Array(300), true);
  assert.equal(charged, 808);
  release();
  await outbox.drained();
  assert.equal(charged, 0, "written bytes are given back");
  outbox.push(new Uint8Array(50));
  writer.paused = new Promise(() => {});
  outbox.close();
  assert.equal(charged, 0, "closing gives back what was queued");
});

/** Rejects if `promise` has not settled within `ms`. */
async function withDeadline<T>(promise: Promise<T>, ms = 1_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Still waiting after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
