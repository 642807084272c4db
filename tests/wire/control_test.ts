import assert from "node:assert/strict";
import {
  ControlError,
  controlFrameSize,
  decodeEvent,
  decodeRequest,
  encodeControl,
  parseControlFrame,
} from "../../lib/wire/control.ts";
import { MessageDecoder } from "../../lib/wire/relay.ts";
import { MAX_CONTROL_BYTES } from "../../lib/limits.ts";
import { concat } from "../../lib/util/bytes.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (s: string) => encoder.encode(s);
const json = (value: unknown) => bytes(JSON.stringify(value));

Deno.test("encodeControl writes |len|json with the byte length of the JSON", () => {
  assert.equal(decoder.decode(encodeControl({ op: "ping", id: 1 })), '|20|{"op":"ping","id":1}');
  const frame = encodeControl({ op: "who", prefix: "é" }); // é is 2 bytes
  assert.equal(decoder.decode(frame), '|26|{"op":"who","prefix":"é"}');
  assert.throws(() => encodeControl({ op: "x", pad: "y".repeat(100) }, 50), RangeError);
});

Deno.test("a control frame and what follows it decode split at every byte", async (t) => {
  const messages = [
    { op: "hello", v: 1, name: "alice", client: "test/1" },
    { op: "ping", id: "a" },
    { op: "names", id: 2, names: ["a|b", "ü", "日本"], more: true },
  ];
  const stream = concat([
    ...messages.slice(0, 2).map((m) => encodeControl(m)),
    bytes("bob|5|he|lo"),
    encodeControl(messages[2]),
  ]);
  await t.step("MessageDecoder (the client's reader)", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const d = new MessageDecoder();
      const got = [...d.push(stream.slice(0, cut)), ...d.push(stream.slice(cut))];
      assert.deepEqual(got.map((m) => m.name), ["", "", "bob", ""], `cut at ${cut}`);
      assert.deepEqual(decodeEvent(got[0].payload), messages[0]);
      assert.deepEqual(decodeEvent(got[1].payload), messages[1]);
      assert.equal(decoder.decode(got[2].payload), "he|lo");
      assert.deepEqual(decodeEvent(got[3].payload), messages[2]);
    }
  });
  await t.step("parseControlFrame (the relay's reader before registration)", () => {
    const first = encodeControl(messages[0]);
    for (let have = 0; have <= stream.length; have++) {
      const frame = parseControlFrame(stream.subarray(0, have));
      if (have < first.length) {
        assert.equal(frame, undefined, `${have} bytes`);
      } else {
        assert.equal(frame?.consumed, first.length);
        assert.deepEqual(decodeRequest(frame!.payload), messages[0]);
      }
    }
  });
  await t.step("controlFrameSize once the header is complete", () => {
    const first = encodeControl(messages[0]);
    const headerEnd = first.indexOf(0x7c, 1) + 1;
    for (let have = 1; have <= first.length; have++) {
      const size = controlFrameSize(first.subarray(0, have));
      assert.equal(size, have < headerEnd ? undefined : first.length, `${have} bytes`);
    }
  });
});

Deno.test("parseControlFrame rejects what is not a control frame", () => {
  const bad: [string, string][] = [
    ["a data frame", "bob|1|x"],
    ["a letter in the length", "|1a|"],
    ["an empty length", "||"],
    ["a length over the limit", `|${MAX_CONTROL_BYTES + 1}|`],
    ["endless digits", "|" + "0".repeat(40)],
  ];
  for (const [label, input] of bad) {
    assert.throws(
      () => parseControlFrame(bytes(input)),
      (e) => e instanceof ControlError && e.code === "bad_control",
      label,
    );
  }
  assert.equal(parseControlFrame(bytes("|")), undefined);
  assert.equal(parseControlFrame(bytes("|65536|")), undefined, "at the limit: waits for more");
  assert.deepEqual(parseControlFrame(bytes("|0|rest")), {
    payload: new Uint8Array(0),
    consumed: 3,
  });
  assert.equal(parseControlFrame(bytes("|00002|{}x"))?.consumed, 9, "leading zeros");
});

Deno.test("decodeRequest reads every request and ignores unknown fields", () => {
  const cases: [unknown, unknown][] = [
    [{ op: "hello", v: 1 }, { op: "hello", v: 1 }],
    [{ op: "hello" }, { op: "hello" }],
    [{ op: "hello", v: 2, name: "a", token: "t", client: "c", extra: [1] }, {
      op: "hello",
      v: 2,
      name: "a",
      token: "t",
      client: "c",
    }],
    [{ op: "register", id: "r1", name: "alice" }, { op: "register", id: "r1", name: "alice" }],
    [{ op: "ping", id: 7 }, { op: "ping", id: 7 }],
    [{ op: "who" }, { op: "who" }],
    [{ op: "who", id: 2, prefix: "lab-", after: "lab-07", limit: 1000 }, {
      op: "who",
      id: 2,
      prefix: "lab-",
      after: "lab-07",
      limit: 1000,
    }],
    [{ op: "watch", id: 3, names: ["bob", "carol"] }, {
      op: "watch",
      id: 3,
      names: ["bob", "carol"],
    }],
    [{ op: "unwatch", names: [] }, { op: "unwatch", names: [] }],
    [{ op: "dance", id: 9 }, { op: "unknown", id: 9, name: "dance" }],
  ];
  for (const [input, expected] of cases) {
    assert.deepEqual(decodeRequest(json(input)), expected, JSON.stringify(input));
  }
});

Deno.test("decodeRequest: bad_control for a broken payload, bad_request (with id) for bad fields", () => {
  const broken: [string, Uint8Array][] = [
    ["not JSON", bytes("{op:ping}")],
    ["an array", json([{ op: "ping" }])],
    ["a string", json("ping")],
    ["null", json(null)],
    ["no op", json({ id: 1 })],
    ["op not a string", json({ op: 1 })],
    ["not UTF-8", new Uint8Array([0x7b, 0xff, 0x7d])],
    ["empty", new Uint8Array(0)],
  ];
  for (const [label, payload] of broken) {
    assert.throws(
      () => decodeRequest(payload),
      (e) => e instanceof ControlError && e.code === "bad_control",
      label,
    );
  }
  const badFields: [string, unknown, unknown][] = [
    ["register without a name", { op: "register", id: 1 }, 1],
    ["name not a string", { op: "register", id: 2, name: 5 }, 2],
    ["lone surrogate name", { op: "hello", id: 3, v: 1, name: "\ud800" }, 3],
    ["who limit 0", { op: "who", id: 4, limit: 0 }, 4],
    ["who limit 1001", { op: "who", id: 5, limit: 1001 }, 5],
    ["who limit fractional", { op: "who", id: 6, limit: 1.5 }, 6],
    ["who prefix a number", { op: "who", id: 7, prefix: 1 }, 7],
    ["watch names not an array", { op: "watch", id: 8, names: "bob" }, 8],
    ["watch names with a number", { op: "watch", id: 9, names: ["a", 1] }, 9],
    ["id an object", { op: "ping", id: {} }, undefined],
    ["id a long string", { op: "ping", id: "x".repeat(65) }, undefined],
  ];
  for (const [label, input, id] of badFields) {
    assert.throws(
      () => decodeRequest(json(input)),
      (e) => e instanceof ControlError && e.code === "bad_request" && e.id === id,
      label,
    );
  }
});

Deno.test("decodeEvent passes the relay's fields through and rejects non-objects", () => {
  const pong = { op: "pong", id: 1, time: 5, dropped: 2 };
  assert.deepEqual(decodeEvent(json(pong)), pong);
  assert.throws(() => decodeEvent(json([])), ControlError);
  assert.throws(() => decodeEvent(bytes("nope")), ControlError);
});
