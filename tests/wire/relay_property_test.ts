import assert from "node:assert/strict";
import fc from "fast-check";
import {
  encodeFrame,
  encodeRegister,
  FrameParser,
  type FrameSink,
  MAX_REGISTRATION_BYTES,
  MessageDecoder,
  nameBytesProblem,
  parseRegistration,
  ProtocolError,
  SEP,
} from "../../lib/wire/relay.ts";
import { MAX_LENGTH_DIGITS, MAX_NAME_BYTES } from "../../lib/limits.ts";
import { concat } from "../../lib/util/bytes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Runs per property: enough to find the usual splitting bugs, small enough for CI. */
const RUNS = 300;

/** Most header bytes before a parser must have reported a header or failed: name, `|`, digits, `|`. */
const MAX_HEADER_BYTES = MAX_NAME_BYTES + 1 + MAX_LENGTH_DIGITS + 1;

const validName = fc.oneof(
  fc.string({ unit: "binary", minLength: 1, maxLength: 12 }),
  fc.string({ unit: fc.constantFrom("a", "é", "日", "-", " "), minLength: 1, maxLength: 100 }),
  fc.integer({ min: MAX_NAME_BYTES - 5, max: MAX_NAME_BYTES }).map((n) => "n".repeat(n)),
).filter((name) => nameBytesProblem(enc.encode(name)) === undefined);

const validToken = fc.oneof(
  fc.string({
    unit: fc.integer({ min: 0x21, max: 0x7e }).filter((c) => c !== SEP).map((c) =>
      String.fromCharCode(c)
    ),
    minLength: 1,
    maxLength: 80,
  }),
  fc.string({ unit: fc.constantFrom("x", "ü", "🔑", ":"), minLength: 1, maxLength: 60 }),
  fc.integer({ min: 250, max: 255 }).map((n) => "t".repeat(n)),
).filter((token) => enc.encode(token).length <= 255);

const payload = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.constant(new Uint8Array(0)),
  fc.uint8Array({ minLength: 200, maxLength: 2_000 }),
);

// fc.record makes objects without a prototype; deepEqual would tell them from decoded ones.
const frame = fc.tuple(validName, payload).map(([name, payload]) => ({ name, payload }));
const frames = fc.array(frame, { minLength: 1, maxLength: 12 });

/** Cuts `bytes` at the given positions (any numbers; taken modulo the length). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const p of points) {
    chunks.push(bytes.slice(start, p));
    start = p;
  }
  chunks.push(bytes.slice(start));
  return chunks;
}

/** Feeds chunks through one reused buffer, as a server's read loop does. */
function pushReused(chunks: Uint8Array[], push: (chunk: Uint8Array) => void): void {
  const buf = new Uint8Array(Math.max(1, ...chunks.map((c) => c.length)));
  for (const chunk of chunks) {
    buf.set(chunk);
    push(buf.subarray(0, chunk.length));
    buf.fill(0x5a);
  }
}

/** A sink that checks the call order and joins payload pieces per frame. */
function recorder() {
  const out: { name: string; payload: Uint8Array }[] = [];
  let parts: Uint8Array[] = [];
  let declared = -1;
  let got = 0;
  const sink: FrameSink = {
    header(name, length) {
      assert.equal(declared, -1, "header inside a frame");
      out.push({ name: dec.decode(name), payload: new Uint8Array(0) });
      declared = length;
      got = 0;
    },
    payload(bytes, end) {
      assert.notEqual(declared, -1, "payload without a header");
      got += bytes.length;
      assert.ok(got <= declared, "more payload than declared");
      parts.push(bytes.slice());
      if (end) {
        assert.equal(got, declared, "payload ended short");
        out[out.length - 1].payload = concat(parts);
        parts = [];
        declared = -1;
      }
    },
  };
  return { out, sink };
}

function expectOnlyProtocolError(fn: () => void): ProtocolError | undefined {
  try {
    fn();
    return undefined;
  } catch (error) {
    if (error instanceof ProtocolError) return error;
    throw error;
  }
}

Deno.test("any valid stream split anywhere decodes as the unsplit stream", async (t) => {
  const arb = fc.tuple(frames, fc.array(fc.nat(), { maxLength: 20 }));
  await t.step("MessageDecoder", () => {
    fc.assert(
      fc.property(arb, ([list, cuts]) => {
        const stream = concat(list.map((f) => encodeFrame(f.name, f.payload)));
        const decoder = new MessageDecoder();
        const got: { name: string; payload: Uint8Array }[] = [];
        pushReused(split(stream, cuts), (chunk) => {
          for (const m of decoder.push(chunk)) {
            got.push({ name: m.name, payload: m.payload.slice() });
          }
        });
        assert.deepEqual(got, list);
        assert.equal(decoder.midFrame, false);
      }),
      { numRuns: RUNS },
    );
  });
  await t.step("FrameParser", () => {
    fc.assert(
      fc.property(arb, ([list, cuts]) => {
        const stream = concat(list.map((f) => encodeFrame(f.name, f.payload)));
        const parser = new FrameParser();
        const { out, sink } = recorder();
        pushReused(split(stream, cuts), (chunk) => parser.push(chunk, sink));
        assert.deepEqual(out, list);
        assert.equal(parser.midFrame, false);
      }),
      { numRuns: RUNS },
    );
  });
});

/** Byte soup that reaches every parser state: garbage, separators, digits, tokens, frames. */
const hostileChunk = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.constantFrom(
    ...["|", "||", "0|", "9", ":", "lab:", "bob|", "bob|5|", "a|0|", "|1|x"].map((s) =>
      enc.encode(s)
    ),
  ),
  fc.stringMatching(/^[0-9]{1,25}\|?$/).map((s) => enc.encode(s)),
  fc.integer({ min: 0, max: 400 }).map((n) => enc.encode("n".repeat(n))),
  frame.map((f) => encodeFrame(f.name, f.payload)),
);
const hostileStream = fc.array(hostileChunk, { maxLength: 30 }).map(concat);

Deno.test("arbitrary bytes only ever raise ProtocolError and stay within the bounds", async (t) => {
  const maxMessageBytes = fc.integer({ min: 0, max: 5_000 });
  const arb = fc.tuple(hostileStream, fc.array(fc.nat(), { maxLength: 10 }), maxMessageBytes);
  await t.step("FrameParser", () => {
    fc.assert(
      fc.property(arb, ([stream, cuts, max]) => {
        const parser = new FrameParser({ maxMessageBytes: max });
        let inPayload = false;
        let ended = false;
        let headerBytes = 0;
        const sink: FrameSink = {
          header(name, length) {
            assert.ok(name.length <= MAX_NAME_BYTES, "name over its bound");
            assert.ok(length <= max, `length ${length} over the limit ${max}`);
            inPayload = true;
          },
          payload(_bytes, end) {
            if (end) [inPayload, ended, headerBytes] = [false, true, 0];
          },
        };
        expectOnlyProtocolError(() => {
          for (const chunk of split(stream, cuts)) {
            // One byte at a time, so the header bound is checked after every byte.
            for (let i = 0; i < chunk.length; i++) {
              parser.push(chunk.subarray(i, i + 1), sink);
              if (!inPayload && !ended) headerBytes++;
              ended = false;
              assert.ok(headerBytes <= MAX_HEADER_BYTES, "header held past its bound");
            }
          }
        });
      }),
      { numRuns: RUNS },
    );
  });
  await t.step("MessageDecoder", () => {
    fc.assert(
      fc.property(arb, ([stream, cuts, max]) => {
        const decoder = new MessageDecoder({ maxMessageBytes: max });
        expectOnlyProtocolError(() => {
          for (const chunk of split(stream, cuts)) {
            for (const m of decoder.push(chunk)) {
              assert.ok(m.payload.length <= max, "message over the limit");
            }
          }
        });
      }),
      { numRuns: RUNS },
    );
  });
  await t.step("parseRegistration", () => {
    fc.assert(
      fc.property(hostileStream, (buf) => {
        let reg;
        const error = expectOnlyProtocolError(() => {
          reg = parseRegistration(buf);
        });
        if (error || reg === undefined) {
          if (!error) {
            assert.ok(buf.length < MAX_REGISTRATION_BYTES, "held more than a registration");
            assert.equal(buf.indexOf(SEP), -1, "asked for more bytes after a '|'");
          }
          return;
        }
        const { name, consumed } = reg as { name: string; consumed: number };
        assert.ok(consumed <= MAX_REGISTRATION_BYTES);
        assert.equal(buf[consumed - 1], SEP);
        assert.equal(nameBytesProblem(enc.encode(name)), undefined);
      }),
      { numRuns: RUNS * 3 },
    );
  });
});

Deno.test("a length above the limit is rejected before any payload byte", () => {
  fc.assert(
    fc.property(
      validName,
      fc.integer({ min: 0, max: 1_000_000 }),
      fc.integer({ min: 1, max: 1_000_000 }),
      fc.nat({ max: 3 }),
      fc.array(fc.nat(), { maxLength: 5 }),
      (name, max, over, zeros, cuts) => {
        const length = "0".repeat(zeros) + String(max + over);
        const stream = concat([enc.encode(`${name}|${length}|`), new Uint8Array(64)]);
        const parser = new FrameParser({ maxMessageBytes: max });
        let calls = 0;
        const sink: FrameSink = { header: () => calls++, payload: () => calls++ };
        const error = expectOnlyProtocolError(() => {
          for (const chunk of split(stream, cuts)) parser.push(chunk, sink);
        });
        assert.equal(error?.code, "message_too_large");
        assert.equal(calls, 0, "the sink was called for a rejected frame");
      },
    ),
    { numRuns: RUNS },
  );
  fc.assert(
    fc.property(fc.integer({ min: MAX_LENGTH_DIGITS + 1, max: 60 }), (digits) => {
      // Leading zeros keep the value small: only the digit count is over its bound.
      const parser = new FrameParser({ maxMessageBytes: Number.MAX_SAFE_INTEGER });
      const stream = enc.encode(`a|${"0".repeat(digits - 1)}1|x`);
      const error = expectOnlyProtocolError(() =>
        parser.push(stream, { header() {}, payload() {} })
      );
      assert.equal(error?.code, "length_too_long");
    }),
    { numRuns: 50 },
  );
});

Deno.test("parseRegistration reads back what encodeRegister wrote", async (t) => {
  const registration = fc.tuple(validName, fc.option(validToken, { nil: undefined }));
  await t.step("round trip, with any bytes after it", () => {
    fc.assert(
      fc.property(registration, fc.uint8Array({ maxLength: 40 }), ([name, token], rest) => {
        const bytes = encodeRegister(name, token);
        const reg = parseRegistration(concat([bytes, rest]));
        assert.deepEqual(reg, {
          name,
          ...(token === undefined ? {} : { token }),
          consumed: bytes.length,
        });
      }),
      { numRuns: RUNS },
    );
  });
  await t.step("every strict prefix asks for more bytes", () => {
    fc.assert(
      fc.property(registration, ([name, token]) => {
        const bytes = encodeRegister(name, token);
        for (let i = 0; i < bytes.length; i++) {
          assert.equal(parseRegistration(bytes.subarray(0, i)), undefined, `prefix of ${i} bytes`);
        }
      }),
      { numRuns: 100 },
    );
  });
  await t.step("a name with a reserved byte is rejected", () => {
    fc.assert(
      fc.property(
        validName,
        fc.constantFrom(0x00, 0x0a, 0x1f, 0x7f),
        fc.nat(),
        (name, bad, at) => {
          const bytes = enc.encode(name);
          const i = at % (bytes.length + 1);
          const input = concat([
            bytes.subarray(0, i),
            new Uint8Array([bad]),
            bytes.subarray(i),
            enc.encode("|"),
          ]);
          const error = expectOnlyProtocolError(() => parseRegistration(input));
          assert.ok(
            error?.code === "bad_name" || error?.code === "name_too_long",
            `got ${error?.code}`,
          );
        },
      ),
      { numRuns: RUNS },
    );
  });
});
