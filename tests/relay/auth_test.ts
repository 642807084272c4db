import assert from "node:assert/strict";
import { join } from "node:path";
import {
  AuthPolicy,
  type AuthResult,
  hashToken,
  parseAuthFile,
  timingSafeEqual,
} from "../../lib/relay/auth.ts";

// Known SHA-256 digests (FIPS 180-2 style test vectors and `printf test | sha256sum`).
const SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA256_TEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

async function withAuthFile(
  content: unknown,
  fn: (path: string, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "relay-auth-" });
  try {
    const path = join(dir, "auth.json");
    await Deno.writeTextFile(path, typeof content === "string" ? content : JSON.stringify(content));
    await fn(path, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("hashToken gives the hex SHA-256 of the token's UTF-8 bytes", async () => {
  assert.equal(await hashToken(""), SHA256_EMPTY);
  assert.equal(await hashToken("test"), SHA256_TEST);
  assert.equal(await hashToken("abc"), SHA256_ABC);
  const utf8 = await hashToken("ü");
  assert.match(utf8, /^[0-9a-f]{64}$/);
  assert.notEqual(utf8, await hashToken("u"));
});

Deno.test("timingSafeEqual compares whole arrays", () => {
  const a = new Uint8Array([1, 2, 3]);
  assert.equal(timingSafeEqual(a, new Uint8Array([1, 2, 3])), true);
  assert.equal(timingSafeEqual(a, new Uint8Array([1, 2, 4])), false);
  assert.equal(timingSafeEqual(a, new Uint8Array([0, 2, 3])), false);
  assert.equal(timingSafeEqual(a, new Uint8Array([1, 2])), false);
  assert.equal(timingSafeEqual(new Uint8Array(0), new Uint8Array(0)), true);
});

Deno.test("parseAuthFile reads names and digests", () => {
  const digests = parseAuthFile(
    JSON.stringify({ lab: { sha256: SHA256_TEST }, "ü-pi": { sha256: SHA256_ABC.toUpperCase() } }),
    "auth.json",
  );
  assert.deepEqual([...digests.keys()], ["lab", "ü-pi"]);
  assert.equal(digests.get("lab")!.length, 32);
  assert.equal(digests.get("lab")![0], 0x9f);
  assert.equal(parseAuthFile("{}", "auth.json").size, 0);
});

Deno.test("parseAuthFile names the file and the bad entry", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["not JSON", "{lab", /^Invalid auth file \/etc\/a\.json: not JSON/],
    ["an array", "[]", /expected an object/],
    ["null", "null", /expected an object/],
    ["a string", '"lab"', /expected an object/],
    ["an entry that is a string", `{"lab": "${SHA256_TEST}"}`, /entry "lab": expected \{"sha256"/],
    ["an entry without sha256", '{"lab": {}}', /entry "lab": sha256 must be 64 hex digits/],
    ["a short digest", '{"lab": {"sha256": "abc"}}', /entry "lab": sha256 must be 64 hex/],
    ["a digest with non-hex", `{"lab": {"sha256": "${"g".repeat(64)}"}}`, /entry "lab": sha256/],
    ["a numeric digest", '{"lab": {"sha256": 12}}', /entry "lab": sha256/],
    [
      "an unknown field",
      `{"lab": {"sha256": "${SHA256_TEST}", "token": "x"}}`,
      /entry "lab": unknown field "token"/,
    ],
    [
      "a name with ':'",
      `{"lab:1": {"sha256": "${SHA256_TEST}"}}`,
      /entry "lab:1": Name contains ':'/,
    ],
    [
      "a name with '|'",
      `{"a|b": {"sha256": "${SHA256_TEST}"}}`,
      /entry "a\|b": Name contains '\|'/,
    ],
    ["an empty name", `{"": {"sha256": "${SHA256_TEST}"}}`, /entry "": Name is empty/],
    [
      "a name over 255 bytes",
      `{"${"n".repeat(256)}": {"sha256": "${SHA256_TEST}"}}`,
      /Name is longer than 255 bytes/,
    ],
    [
      "a bad entry after good ones",
      `{"ok": {"sha256": "${SHA256_TEST}"}, "bad": {"sha256": "x"}}`,
      /entry "bad"/,
    ],
  ];
  for (const [what, text, expected] of cases) {
    await t.step(what, () => {
      assert.throws(() => parseAuthFile(text, "/etc/a.json"), (error: unknown) => {
        assert.ok(error instanceof SyntaxError);
        assert.match(error.message, /^Invalid auth file \/etc\/a\.json: /);
        assert.match(error.message, expected);
        return true;
      });
    });
  }
});

Deno.test("AuthPolicy.load names a missing or bad file", async () => {
  await assert.rejects(
    () => AuthPolicy.load("/nonexistent/relay-auth.json"),
    /^Error: Cannot read auth file \/nonexistent\/relay-auth\.json: /,
  );
  await withAuthFile('{"lab": 1}', async (path) => {
    await assert.rejects(() => AuthPolicy.load(path), (error: unknown) => {
      assert.ok(error instanceof SyntaxError);
      assert.ok(error.message.includes(path), error.message);
      return true;
    });
  });
});

Deno.test("AuthPolicy guards owned names and leaves others open", async (t) => {
  const file = { lab: { sha256: await hashToken("s3cret") }, pi: { sha256: SHA256_TEST } };
  await withAuthFile(file, async (path) => {
    const open = await AuthPolicy.load(path);
    const closed = await AuthPolicy.load(path, { requireAuth: true });
    assert.equal(open.size, 2);
    assert.equal(open.owns("lab"), true);
    assert.equal(open.owns("other"), false);
    assert.equal(closed.requireAuth, true);
    const cases: [string, AuthPolicy, string, string | undefined, AuthResult][] = [
      ["owned name, right token", open, "lab", "s3cret", "ok"],
      ["owned name, other owned name's token", open, "lab", "test", "wrong_token"],
      ["owned name, wrong token", open, "lab", "s3cre", "wrong_token"],
      ["owned name, no token", open, "lab", undefined, "token_required"],
      ["names are exact", open, "Lab", undefined, "ok"],
      ["open name, no token", open, "other", undefined, "ok"],
      ["open name, a token is ignored", open, "other", "whatever", "ok"],
      ["require-auth: owned name, right token", closed, "pi", "test", "ok"],
      ["require-auth: owned name, wrong token", closed, "pi", "tesT", "wrong_token"],
      ["require-auth: other name, no token", closed, "other", undefined, "token_required"],
      ["require-auth: other name, a token", closed, "other", "s3cret", "wrong_token"],
    ];
    for (const [what, policy, name, token, expected] of cases) {
      await t.step(what, async () => assert.equal(await policy.check(name, token), expected));
    }
  });
});

Deno.test("AuthPolicy.reload takes a new file and keeps the old one when the new is bad", async () => {
  await withAuthFile({ lab: { sha256: await hashToken("old") } }, async (path) => {
    const auth = await AuthPolicy.load(path);
    assert.equal(await auth.check("lab", "old"), "ok");
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        lab: { sha256: await hashToken("new") },
        pi: { sha256: await hashToken("p") },
      }),
    );
    assert.equal(await auth.reload(), 2);
    assert.equal(await auth.check("lab", "old"), "wrong_token");
    assert.equal(await auth.check("lab", "new"), "ok");
    assert.equal(await auth.check("pi", undefined), "token_required");

    await Deno.writeTextFile(path, '{"lab": {"sha256": "nope"}}');
    await assert.rejects(() => auth.reload(), SyntaxError);
    assert.equal(await auth.check("lab", "new"), "ok", "the last good table stays in force");
    await Deno.remove(path);
    await assert.rejects(() => auth.reload(), /Cannot read auth file/);
    assert.equal(auth.size, 2);
  });
});

Deno.test("AuthPolicy.fromDigests builds a policy in memory", async () => {
  const auth = AuthPolicy.fromDigests({ lab: SHA256_TEST }, { requireAuth: true });
  assert.equal(await auth.check("lab", "test"), "ok");
  assert.equal(await auth.check("x", undefined), "token_required");
  assert.equal(await auth.reload(), 1);
  assert.throws(() => AuthPolicy.fromDigests({ "a:b": SHA256_TEST }), /entry "a:b"/);
});

Deno.test("AuthPolicy.snapshot survives structuredClone and rebuilds the same policy", async (t) => {
  await t.step("from memory: the digests, requireAuth, and reload keeps them", async () => {
    const auth = AuthPolicy.fromDigests({ lab: SHA256_TEST }, { requireAuth: true });
    const copy = AuthPolicy.fromSnapshot(structuredClone(auth.snapshot()));
    assert.equal(await copy.check("lab", "test"), "ok");
    assert.equal(await copy.check("lab", "abc"), "wrong_token");
    assert.equal(await copy.check("x", undefined), "token_required");
    assert.equal(copy.requireAuth, true);
    assert.equal(await copy.reload(), 1);
  });
  await t.step("from a file: reload re-reads the same file", async () => {
    await withAuthFile({ lab: { sha256: SHA256_TEST } }, async (path) => {
      const auth = await AuthPolicy.load(path);
      const snapshot = auth.snapshot();
      assert.equal(snapshot.path, path);
      const copy = AuthPolicy.fromSnapshot(structuredClone(snapshot));
      assert.equal(await copy.check("x", undefined), "ok", "open names stay open");
      await Deno.writeTextFile(path, JSON.stringify({ lab: { sha256: SHA256_ABC } }));
      assert.equal(await copy.reload(), 1);
      assert.equal(await copy.check("lab", "abc"), "ok");
      assert.equal(await auth.check("lab", "test"), "ok", "the original is its own copy");
    });
  });
  await t.step("a digest of the wrong length is refused", () => {
    const bad = { digests: new Map([["lab", new Uint8Array(31)]]), requireAuth: false };
    assert.throws(() => AuthPolicy.fromSnapshot(bad), SyntaxError);
  });
});
