import assert from "node:assert/strict";
import {
  encodeFrame,
  encodeHeader,
  encodeName,
  encodeRegister,
  FrameParser,
  type FrameSink,
  HeaderCache,
  headerLength,
  MAX_REGISTRATION_BYTES,
  MessageDecoder,
  nameBytesProblem,
  parseRegistration,
  ProtocolError,
  type ProtocolErrorCode,
  writeHeader,
} from "../../lib/wire/relay.ts";
import { MAX_MESSAGE_BYTES, MAX_NAME_BYTES } from "../../lib/limits.ts";
import { concat } from "../../lib/util/bytes.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (text: string) => enc.encode(text);
const latin1 = (...codes: number[]) => new Uint8Array(codes);

/** Records what a FrameParser reports, with payload pieces joined per frame. */
function recorder() {
  const frames: { name: string; payload: Uint8Array }[] = [];
  let pieces: Uint8Array[] = [];
  let open = false;
  const sink: FrameSink = {
    header(name, length) {
      assert.equal(open, false, "header before the previous frame ended");
      frames.push({ name: dec.decode(name), payload: new Uint8Array(length) });
      open = true;
    },
    payload(piece, end) {
      assert.equal(open, true, "payload without a header");
      pieces.push(piece.slice());
      if (end) {
        const payload = concat(pieces);
        assert.equal(payload.length, frames.at(-1)!.payload.length, "payload length");
        frames.at(-1)!.payload = payload;
        pieces = [];
        open = false;
      }
    },
  };
  return { frames, sink };
}

/** A {@linkcode recorder} whose sink also takes whole frames in one `frame` call (the fast path). */
function wholeRecorder() {
  const { frames, sink } = recorder();
  const counts = { whole: 0 };
  sink.frame = (chunk, nameStart, nameEnd, payloadStart, length) => {
    assert.ok(nameStart <= nameEnd && nameEnd < payloadStart, "offsets in order");
    assert.ok(payloadStart + length <= chunk.length, "payload inside the chunk");
    counts.whole++;
    frames.push({
      name: dec.decode(chunk.subarray(nameStart, nameEnd)),
      payload: chunk.slice(payloadStart, payloadStart + length),
    });
  };
  return { frames, sink, counts };
}

function assertProtocolError(fn: () => unknown, code: ProtocolErrorCode) {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ProtocolError, `expected ProtocolError, got ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.name, "ProtocolError");
    assert.doesNotMatch(error.message, /\.$/);
    return true;
  });
}

Deno.test("nameBytesProblem accepts valid names and says why others are not", async (t) => {
  const cases: [string, Uint8Array, RegExp | undefined][] = [
    ["a plain name", bytes("device_a"), undefined],
    ["one byte", bytes("x"), undefined],
    ["UTF-8", bytes("日本-ü"), undefined],
    ["255 bytes", bytes("n".repeat(MAX_NAME_BYTES)), undefined],
    ["spaces and punctuation", bytes("a b.c-d@e"), undefined],
    ["empty", bytes(""), /empty/],
    ["256 bytes", bytes("n".repeat(MAX_NAME_BYTES + 1)), /longer than 255/],
    ["a '|'", bytes("a|b"), /'\|'/],
    ["a ':'", bytes("lab:x"), /':'/],
    ["a NUL", latin1(0x61, 0x00), /control/],
    ["a newline", bytes("a\n"), /control/],
    ["DEL", latin1(0x61, 0x7f), /control/],
    ["invalid UTF-8", latin1(0x61, 0xff), /UTF-8/],
    ["a truncated UTF-8 sequence", latin1(0xe6, 0x97), /UTF-8/],
  ];
  for (const [what, input, expected] of cases) {
    await t.step(what, () => {
      const problem = nameBytesProblem(input);
      if (expected === undefined) assert.equal(problem, undefined);
      else assert.match(problem ?? "", expected);
    });
  }
});

Deno.test("encodeName returns UTF-8 bytes and throws TypeError on a bad name", () => {
  assert.deepEqual(encodeName("bob"), bytes("bob"));
  assert.deepEqual(encodeName("ü"), latin1(0xc3, 0xbc));
  for (const bad of ["", "a|b", "a:b", "a\tb", "x".repeat(256)]) {
    assert.throws(() => encodeName(bad), TypeError, JSON.stringify(bad));
  }
});

Deno.test("encodeRegister writes name| or name:token| and rejects bad tokens", async (t) => {
  await t.step("plain", () => assert.equal(dec.decode(encodeRegister("alice")), "alice|"));
  await t.step("with token", () => {
    assert.equal(dec.decode(encodeRegister("lab", "s3cret")), "lab:s3cret|");
  });
  await t.step("a token may hold ':'", () => {
    assert.equal(dec.decode(encodeRegister("lab", "a:b")), "lab:a:b|");
  });
  const badTokens: [string, string][] = [
    ["empty", ""],
    ["a space", "a b"],
    ["a '|'", "a|b"],
    ["a control", "a\u0001"],
    ["DEL", "a\u007f"],
    ["256 bytes", "t".repeat(256)],
  ];
  for (const [what, token] of badTokens) {
    await t.step(`rejects a token with ${what}`, () => {
      assert.throws(() => encodeRegister("lab", token), TypeError);
    });
  }
  await t.step("rejects a bad name", () => assert.throws(() => encodeRegister("a:b"), TypeError));
});

Deno.test("encodeFrame and encodeHeader write name|len|payload", async (t) => {
  const cases: [string, string | Uint8Array, Uint8Array, string][] = [
    ["hello", "bob", bytes("hello"), "bob|5|hello"],
    ["keepalive", "alice", new Uint8Array(0), "alice|0|"],
    ["payload with separators", "b", bytes("|1|"), "b|3||1|"],
    ["name as bytes", bytes("bob"), bytes("hi"), "bob|2|hi"],
    ["ten bytes", "x", bytes("0123456789"), "x|10|0123456789"],
  ];
  for (const [what, name, payload, expected] of cases) {
    await t.step(what, () => assert.equal(dec.decode(encodeFrame(name, payload)), expected));
  }
  await t.step("header lengths have as many digits as the length", () => {
    for (const length of [0, 9, 10, 99, 100, 12345, MAX_MESSAGE_BYTES]) {
      const header = encodeHeader(bytes("ab"), length);
      assert.equal(dec.decode(header), `ab|${length}|`);
      assert.equal(header.length, headerLength(2, length));
    }
  });
  await t.step("writeHeader writes at an offset and returns the end", () => {
    const out = new Uint8Array(12).fill(0x2e);
    const end = writeHeader(out, 2, bytes("bob"), 42);
    assert.equal(end, 2 + "bob|42|".length);
    assert.equal(dec.decode(out), "..bob|42|...");
  });
  await t.step(
    "rejects a bad name",
    () => assert.throws(() => encodeFrame("a|b", bytes("")), TypeError),
  );
});

Deno.test("parseRegistration reads name| and name:token|, or asks for more bytes", async (t) => {
  const long = "n".repeat(MAX_NAME_BYTES);
  const ok: [string, Uint8Array, { name: string; token?: string; consumed: number }][] = [
    ["a name", bytes("alice|"), { name: "alice", consumed: 6 }],
    ["a name then a frame", bytes("alice|bob|5|hello"), { name: "alice", consumed: 6 }],
    ["a name and token", bytes("lab:s3cret|"), { name: "lab", token: "s3cret", consumed: 11 }],
    ["a token with ':'", bytes("lab:a:b|x"), { name: "lab", token: "a:b", consumed: 8 }],
    ["a 255-byte name", bytes(`${long}|`), { name: long, consumed: 256 }],
    ["a UTF-8 name", bytes("ü|"), { name: "ü", consumed: 3 }],
    [
      "the longest registration",
      bytes(`${long}:${"t".repeat(255)}|`),
      { name: long, token: "t".repeat(255), consumed: MAX_REGISTRATION_BYTES },
    ],
  ];
  for (const [what, input, expected] of ok) {
    await t.step(what, () => {
      const reg = parseRegistration(input);
      assert.deepEqual({ ...reg }, expected);
    });
  }
  const more: [string, Uint8Array][] = [
    ["nothing", bytes("")],
    ["a partial name", bytes("ali")],
    ["a 255-byte name without '|'", bytes(long)],
    ["a name and partial token", bytes("lab:s3c")],
    ["511 bytes with a ':'", bytes(`${long}:${"t".repeat(255)}`)],
  ];
  for (const [what, input] of more) {
    await t.step(`undefined for ${what}`, () => assert.equal(parseRegistration(input), undefined));
  }
  const bad: [string, Uint8Array, ProtocolErrorCode][] = [
    ["an empty name", bytes("|"), "bad_name"],
    ["an empty name with a token", bytes(":tok|"), "bad_name"],
    ["a control character", bytes("a\u0001|"), "bad_name"],
    ["invalid UTF-8", latin1(0xff, 0x7c), "bad_name"],
    ["a 256-byte name", bytes(`${long}n|`), "name_too_long"],
    ["256 bytes without '|' or ':'", bytes(`${long}n`), "name_too_long"],
    ["an empty token", bytes("lab:|"), "bad_token"],
    ["a token with a space", bytes("lab:a b|"), "bad_token"],
    ["a token that is not UTF-8", latin1(0x61, 0x3a, 0xff, 0x7c), "bad_token"],
    ["a 256-byte token", bytes(`lab:${"t".repeat(256)}|`), "bad_token"],
    ["512 bytes with ':' but no '|'", bytes(`${long}:${"t".repeat(256)}`), "bad_token"],
  ];
  for (const [what, input, code] of bad) {
    await t.step(
      `rejects ${what}`,
      () => assertProtocolError(() => parseRegistration(input), code),
    );
  }
});

Deno.test("FrameParser reports headers and payloads", async (t) => {
  const cases: [string, string, { name: string; payload: string }[]][] = [
    ["one frame", "bob|5|hello", [{ name: "bob", payload: "hello" }]],
    ["a keepalive", "bob|0|", [{ name: "bob", payload: "" }]],
    ["leading zeros", "bob|007|abcdefg", [{ name: "bob", payload: "abcdefg" }]],
    ["separators in the payload", "b|5|a|1|b", [{ name: "b", payload: "a|1|b" }]],
    ["two frames", "a|1|xb|2|yz", [{ name: "a", payload: "x" }, { name: "b", payload: "yz" }]],
    [
      "frames around a keepalive",
      "a|1|xa|0|b|1|y",
      [{ name: "a", payload: "x" }, { name: "a", payload: "" }, { name: "b", payload: "y" }],
    ],
    // The parser leaves name validation to its caller, which reports unknown destinations.
    ["an empty name", "|1|x", [{ name: "", payload: "x" }]],
  ];
  for (const [what, input, expected] of cases) {
    await t.step(what, () => {
      const { frames, sink } = recorder();
      const parser = new FrameParser();
      parser.push(bytes(input), sink);
      assert.deepEqual(
        frames.map((f) => ({ name: f.name, payload: dec.decode(f.payload) })),
        expected,
      );
      assert.equal(parser.midFrame, false);
    });
    await t.step(`${what}, to a sink that takes whole frames`, () => {
      const { frames, sink, counts } = wholeRecorder();
      const parser = new FrameParser();
      parser.push(bytes(input), sink);
      assert.deepEqual(
        frames.map((f) => ({ name: f.name, payload: dec.decode(f.payload) })),
        expected,
      );
      assert.equal(counts.whole, expected.length, "every frame through the fast path");
      assert.equal(parser.midFrame, false);
    });
  }
});

Deno.test("FrameParser rejects bad headers before reading a payload", async (t) => {
  const long = "n".repeat(MAX_NAME_BYTES);
  const cases: [string, string, ProtocolErrorCode, number?][] = [
    ["a 256-byte name without '|'", `${long}n`, "header_too_long"],
    ["a 256-byte name", `${long}n|1|x`, "header_too_long"],
    ["an empty length", "bob||", "bad_length"],
    ["a letter in the length", "bob|1x|", "bad_length"],
    ["a sign in the length", "bob|-1|", "bad_length"],
    ["a space in the length", "bob| 1|", "bad_length"],
    ["21 digits", `bob|${"0".repeat(21)}|`, "length_too_long"],
    ["a length over the default limit", `bob|${MAX_MESSAGE_BYTES + 1}|`, "message_too_large"],
    ["a 20-digit length", `bob|${"9".repeat(20)}|`, "message_too_large"],
    ["a length over a set limit", "bob|11|", "message_too_large", 10],
    ["a bad second frame", "a|1|xb|y|", "bad_length"],
  ];
  for (const [what, input, code, maxMessageBytes] of cases) {
    await t.step(what, () => {
      const { frames, sink } = recorder();
      const parser = new FrameParser({ maxMessageBytes });
      assertProtocolError(() => parser.push(bytes(input), sink), code);
      assert.ok(frames.every((f) => f.name !== "bob"), "no header reported for the bad frame");
    });
    await t.step(`rejects ${what}, to a sink that takes whole frames`, () => {
      const { frames, sink } = wholeRecorder();
      const parser = new FrameParser({ maxMessageBytes });
      // Padding after the header, so the bad frame looks whole to the fast path.
      assertProtocolError(() => parser.push(bytes(input + "x".repeat(40)), sink), code);
      assert.ok(frames.every((f) => f.name !== "bob"), "no frame reported for the bad one");
    });
  }
  await t.step("a length of exactly the limit is accepted", () => {
    const { frames, sink } = recorder();
    const parser = new FrameParser({ maxMessageBytes: 10 });
    parser.push(bytes("bob|10|0123456789"), sink);
    assert.equal(frames.length, 1);
  });
  await t.step("a too-large length is rejected by its digits, not after its payload", () => {
    const parser = new FrameParser({ maxMessageBytes: 100 });
    const { sink } = recorder();
    parser.push(bytes("bob|10"), sink);
    assertProtocolError(() => parser.push(bytes("1"), sink), "message_too_large");
  });
  await t.step("an endless name is rejected as soon as it passes 255 bytes", () => {
    const parser = new FrameParser();
    const { sink } = recorder();
    for (let i = 0; i < MAX_NAME_BYTES; i++) parser.push(bytes("n"), sink);
    assertProtocolError(() => parser.push(bytes("n"), sink), "header_too_long");
  });
});

Deno.test("FrameParser.midFrame is true exactly inside a frame", () => {
  const parser = new FrameParser();
  const { sink } = recorder();
  const seen: boolean[] = [];
  for (const b of bytes("ab|2|xy")) {
    parser.push(new Uint8Array([b]), sink);
    seen.push(parser.midFrame);
  }
  assert.deepEqual(seen, [true, true, true, true, true, true, false]);
});

Deno.test("FrameParser keeps a header that spans chunks when the caller reuses its buffer", () => {
  const parser = new FrameParser();
  const { frames, sink } = recorder();
  const buf = new Uint8Array(8);
  // The name and part of the length come in one read, the rest of the header in the next.
  buf.set(bytes("alice|12"));
  parser.push(buf, sink);
  buf.fill(0x7a);
  parser.push(bytes("|hello world!"), sink);
  assert.deepEqual(frames.map((f) => [f.name, dec.decode(f.payload)]), [["alice", "hello world!"]]);
  const parser2 = new FrameParser();
  const rec2 = recorder();
  buf.set(bytes("ali"));
  parser2.push(buf.subarray(0, 3), rec2.sink);
  buf.fill(0x7a);
  parser2.push(bytes("ce|1|x"), rec2.sink);
  assert.deepEqual(rec2.frames.map((f) => [f.name, dec.decode(f.payload)]), [["alice", "x"]]);
});

/** A stream that exercises every state: UTF-8 and long names, keepalives, '|' in payloads. */
const STREAM_FRAMES: [string, Uint8Array][] = [
  ["bob", bytes("hello")],
  ["alice", new Uint8Array(0)],
  ["日本", bytes("|0|")],
  ["n".repeat(40), bytes("0123456789ab")],
  ["x", latin1(0, 255, 0x7c, 10)],
  ["y", new Uint8Array(0)],
];
const STREAM = concat(STREAM_FRAMES.map(([name, payload]) => encodeFrame(name, payload)));
const EXPECTED = STREAM_FRAMES.map(([name, payload]) => ({ name, payload }));

function decodeChunks(chunks: Uint8Array[]) {
  const decoder = new MessageDecoder();
  const messages = chunks.flatMap((c) =>
    decoder.push(c).map((m) => ({ ...m, payload: m.payload.slice() }))
  );
  assert.equal(decoder.midFrame, false);
  return messages;
}

function parseChunks(chunks: Uint8Array[], whole = false) {
  const parser = new FrameParser();
  const { frames, sink } = whole ? wholeRecorder() : recorder();
  for (const c of chunks) parser.push(c, sink);
  assert.equal(parser.midFrame, false);
  return frames;
}

Deno.test("a stream split at every byte position decodes as the whole stream", async (t) => {
  await t.step("whole", () => {
    assert.deepEqual(decodeChunks([STREAM]), EXPECTED);
    assert.deepEqual(parseChunks([STREAM]), EXPECTED);
  });
  await t.step("split once at every position", () => {
    for (let i = 0; i <= STREAM.length; i++) {
      const chunks = [STREAM.slice(0, i), STREAM.slice(i)];
      assert.deepEqual(decodeChunks(chunks), EXPECTED, `MessageDecoder split at ${i}`);
      assert.deepEqual(parseChunks(chunks), EXPECTED, `FrameParser split at ${i}`);
      assert.deepEqual(parseChunks(chunks, true), EXPECTED, `whole frames, split at ${i}`);
    }
  });
  await t.step("split twice at every pair of positions", () => {
    for (let i = 0; i <= STREAM.length; i++) {
      for (let j = i; j <= STREAM.length; j++) {
        const chunks = [STREAM.slice(0, i), STREAM.slice(i, j), STREAM.slice(j)];
        assert.deepEqual(decodeChunks(chunks), EXPECTED, `split at ${i} and ${j}`);
        assert.deepEqual(parseChunks(chunks, true), EXPECTED, `whole frames, ${i} and ${j}`);
      }
    }
  });
  await t.step("one byte at a time, through one reused buffer", () => {
    const parser = new FrameParser();
    const { frames, sink } = recorder();
    const one = new Uint8Array(1);
    for (const b of STREAM) {
      one[0] = b;
      parser.push(one, sink);
    }
    assert.deepEqual(frames, EXPECTED);
  });
});

Deno.test("MessageDecoder copies payloads that span chunks", () => {
  const decoder = new MessageDecoder();
  const first = bytes("bob|6|abc");
  assert.deepEqual(decoder.push(first), []);
  assert.equal(decoder.midFrame, true);
  first.fill(0);
  const [message] = decoder.push(bytes("def"));
  assert.equal(message.name, "bob");
  assert.equal(dec.decode(message.payload), "abcdef");
});

Deno.test("MessageDecoder rejects a too-large message before its payload", () => {
  const decoder = new MessageDecoder({ maxMessageBytes: 4 });
  assert.deepEqual(decoder.push(bytes("a|4|abcd")), [{ name: "a", payload: bytes("abcd") }]);
  assertProtocolError(() => decoder.push(bytes("a|5|")), "message_too_large");
});

Deno.test("MessageDecoder lets a reader fill a large payload in place", () => {
  const decoder = new MessageDecoder();
  const enc = new TextEncoder();
  assert.equal(decoder.directBuffer(1), undefined, "no payload under way");
  assert.deepEqual(decoder.push(enc.encode("a|10|01")), []);
  assert.equal(decoder.directBuffer(9), undefined, "less than asked for remains");
  const target = decoder.directBuffer(4)!;
  assert.equal(target.length, 8);
  target.set(enc.encode("2345"));
  assert.deepEqual(decoder.advance(4), []);
  const rest = decoder.directBuffer(1)!;
  assert.equal(rest.length, 4);
  rest.set(enc.encode("6789"));
  const [message] = decoder.advance(4);
  assert.equal(message.name, "a");
  assert.equal(new TextDecoder().decode(message.payload), "0123456789");
  // Back to ordinary parsing afterwards.
  assert.equal(decoder.push(enc.encode("b|1|x"))[0].name, "b");
  assert.throws(() => decoder.advance(1), RangeError);
});

Deno.test("HeaderCache encodes a header once per length and again after clear", () => {
  const headers = new HeaderCache(new TextEncoder().encode("alice"));
  const five = headers.of(5);
  assert.deepEqual(new TextDecoder().decode(five), "alice|5|");
  assert.equal(headers.of(5), five, "the same length reuses the header");
  assert.deepEqual(new TextDecoder().decode(headers.of(12)), "alice|12|");
  const again = headers.of(12);
  headers.clear();
  assert.notEqual(headers.of(12), again, "made again after clear");
  assert.deepEqual(new TextDecoder().decode(headers.of(12)), "alice|12|");
});
