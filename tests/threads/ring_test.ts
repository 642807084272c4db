import assert from "node:assert/strict";
import fc from "fast-check";
import {
  createRing,
  RECORD_HEADER_BYTES,
  recordBytes,
  RingReader,
  RingWriter,
} from "../../lib/threads/ring.ts";

/** `length` bytes whose values depend on `seed`, so a misplaced byte shows. */
function pattern(seed: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (seed * 31 + i * 7) & 0xff;
  return bytes;
}

function readAll(reader: RingReader): { tag: number; aux: number; bytes: Uint8Array }[] {
  const out: { tag: number; aux: number; bytes: Uint8Array }[] = [];
  reader.read((tag, aux, payload) => out.push({ tag, aux, bytes: payload.slice() }));
  return out;
}

Deno.test("ring refuses a capacity that is not a power of two from 64 B", () => {
  assert.throws(() => createRing(100), RangeError);
  assert.throws(() => createRing(32), RangeError);
  assert.doesNotThrow(() => createRing(64));
});

Deno.test("ring carries records in order with their tag, aux and bytes", () => {
  const ring = createRing(1024);
  const writer = new RingWriter(ring);
  const reader = new RingReader(ring);
  assert.equal(reader.empty, true);
  assert.equal(writer.tryWrite(1, 10, pattern(1, 5)), true);
  assert.equal(writer.tryWrite(0xffffffff, 0xfffffffe, new Uint8Array(0)), true);
  assert.equal(writer.tryWrite(3, 30, pattern(3, 40), 4, 33), true);
  assert.equal(reader.empty, false);
  const got = readAll(reader);
  assert.deepEqual(got, [
    { tag: 1, aux: 10, bytes: pattern(1, 5) },
    { tag: 0xffffffff, aux: 0xfffffffe, bytes: new Uint8Array(0) },
    { tag: 3, aux: 30, bytes: pattern(3, 40).subarray(4, 37) },
  ]);
  assert.equal(reader.empty, true);
  assert.equal(writer.usedBytes, 0);
});

Deno.test("a full ring refuses a record and takes it once the reader has made room", () => {
  const ring = createRing(256);
  const writer = new RingWriter(ring);
  const reader = new RingReader(ring);
  let written = 0;
  while (writer.tryWrite(written, 0, pattern(written, 20))) written++;
  assert.equal(written, Math.floor(256 / recordBytes(20)));
  assert.equal(writer.fits(20), false);
  assert.throws(
    () => writer.tryWrite(0, 0, new Uint8Array(writer.maxPayloadBytes + 1)),
    RangeError,
  );
  const got = readAll(reader);
  assert.equal(got.length, written);
  got.forEach((r, i) => assert.deepEqual(r.bytes, pattern(i, 20)));
  assert.equal(writer.tryWrite(99, 0, pattern(99, 20)), true);
  assert.deepEqual(readAll(reader)[0].bytes, pattern(99, 20));
});

Deno.test("a record that does not fit before the end of the ring wraps to its start", () => {
  const ring = createRing(128);
  const writer = new RingWriter(ring);
  const reader = new RingReader(ring);
  // 3 records of 28 B leave 44 B before the end; the next one takes 52 B (12 B header and 40
  // B payload), so it goes to the start, after a pad word.
  for (let i = 0; i < 3; i++) assert.ok(writer.tryWrite(i, 0, pattern(i, 16)));
  assert.equal(readAll(reader).length, 3);
  assert.equal(recordBytes(40), RECORD_HEADER_BYTES + 40);
  assert.ok(writer.tryWrite(7, 7, pattern(7, 40)));
  const got = readAll(reader);
  assert.deepEqual(got, [{ tag: 7, aux: 7, bytes: pattern(7, 40) }]);
  // The largest record always fits in an empty ring, wherever the positions are.
  for (let i = 0; i < 20; i++) {
    assert.ok(writer.tryWrite(i, 0, pattern(i, writer.maxPayloadBytes)), `record ${i}`);
    assert.deepEqual(readAll(reader)[0].bytes, pattern(i, writer.maxPayloadBytes));
  }
});

Deno.test("ring positions wrap past 2^32 bytes", () => {
  const ring = createRing(64);
  // Start both ends just below 2^32, as after 4 GiB through the ring.
  const control = new Int32Array(ring, 0, 8);
  control[0] = control[1] = (2 ** 32 - 24) | 0;
  const writer = new RingWriter(ring);
  const reader = new RingReader(ring);
  for (let i = 0; i < 10; i++) {
    assert.ok(writer.tryWrite(i, i, pattern(i, 8)));
    assert.ok(writer.tryWrite(i + 100, i, pattern(i + 100, 4)));
    const got = readAll(reader);
    assert.deepEqual(got.map((r) => r.tag), [i, i + 100]);
    assert.deepEqual(got[0].bytes, pattern(i, 8));
  }
});

Deno.test("ring property: any sequence of writes and reads delivers every accepted record once, in order", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(64, 128, 256, 1024),
      fc.array(
        fc.oneof(
          fc.record({ write: fc.nat(600) }),
          fc.record({ read: fc.constant(true) }),
        ),
        { maxLength: 200 },
      ),
      (capacity, ops) => {
        const ring = createRing(capacity);
        const writer = new RingWriter(ring);
        const reader = new RingReader(ring);
        const expected: { tag: number; bytes: Uint8Array }[] = [];
        const got: { tag: number; bytes: Uint8Array }[] = [];
        let seq = 0;
        for (const op of ops) {
          if ("write" in op) {
            const length = op.write % (writer.maxPayloadBytes + 1);
            const bytes = pattern(seq, length);
            const fits = writer.fits(length);
            const ok = writer.tryWrite(seq, length, bytes);
            assert.equal(ok, fits);
            if (ok) expected.push({ tag: seq, bytes });
            seq++;
          } else {
            reader.read((tag, aux, payload) => {
              assert.equal(aux, payload.length);
              got.push({ tag, bytes: payload.slice() });
            });
          }
        }
        reader.read((tag, _aux, payload) => got.push({ tag, bytes: payload.slice() }));
        assert.deepEqual(got, expected);
        assert.equal(writer.usedBytes, 0);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("ring between two threads: no torn or lost record under a writer that laps the reader", async () => {
  const ring = createRing(4096);
  const records = 20_000;
  const worker = new Worker(new URL("./_ring_writer.ts", import.meta.url), { type: "module" });
  try {
    const done = new Promise<void>((resolve, reject) => {
      worker.onmessage = () => resolve();
      worker.onerror = (e) => reject(new Error(e.message));
    });
    worker.postMessage({ ring, records });
    const reader = new RingReader(ring);
    let next = 0;
    const deadline = Date.now() + 30_000;
    while (next < records) {
      assert.ok(Date.now() < deadline, `only ${next} of ${records} records in 30 s`);
      const n = reader.read((tag, aux, payload) => {
        assert.equal(tag, next, "in order, none lost");
        assert.equal(aux, payload.length);
        // Every byte is the record's own: a torn read would mix two records' bytes.
        for (let i = 0; i < payload.length; i++) {
          if (payload[i] !== ((tag * 31 + i * 7) & 0xff)) {
            assert.fail(`record ${tag}: byte ${i} torn`);
          }
        }
        next++;
      });
      if (n === 0) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await done;
  } finally {
    worker.terminate();
  }
});
