/** The AES-256-GCM engines: OpenSSL through FFI and WebCrypto make the same bytes, both ways. */
import {
  type Aead,
  agreesWithWebCrypto,
  openSslAead,
  selectAead,
  webCryptoAead,
} from "../../lib/tunnel/aead.ts";
import { SecretCipher } from "../../lib/tunnel/crypto.ts";
import {
  decodePacketHeader,
  encodeFrames,
  MAX_DATA_BYTES,
  newSessionId,
} from "../../lib/wire/tunnel.ts";
import { assert, assertEquals } from "../_helpers/tunnel.ts";

const encoder = new TextEncoder();
const SECRET = encoder.encode("correct horse battery staple, 32+ bytes");

/** This machine has libcrypto 3 and the tests run with --allow-all: OpenSSL must load. */
function openssl(): Aead {
  const engine = openSslAead();
  assert(engine, "libcrypto 3 did not load with --allow-ffi");
  return engine;
}

Deno.test("OpenSSL's AES-256-GCM agrees with WebCrypto's and refuses a changed byte", async () => {
  assert(await agreesWithWebCrypto(openssl()));
  assert(await agreesWithWebCrypto(webCryptoAead));
});

Deno.test("the default engine is OpenSSL where it loads, WebCrypto when forced", async () => {
  assertEquals((await selectAead()).name, Deno.env.get("RELAY_TUNNEL_CRYPTO") ?? "openssl");
});

Deno.test("packets sealed on one engine open on the other, at every size up to a full packet", async (t) => {
  const engines = [openssl(), webCryptoAead];
  for (const from of engines) {
    for (const to of engines) {
      await t.step(`${from.name} → ${to.name}`, async () => {
        const laptop = newSessionId();
        const lab = newSessionId();
        const sender = new SecretCipher(SECRET, "laptop", { aead: from });
        const receiver = new SecretCipher(SECRET, "lab", { aead: to });
        for (const size of [1, 15, 16, 17, 1000, 64 * 1024 + 3, MAX_DATA_BYTES]) {
          const data = new Uint8Array(size).map((_, i) => i & 0xff);
          // Four full DATA frames at the largest size: a whole packet's worth.
          const count = size === MAX_DATA_BYTES ? 4 : 1;
          const frames = encodeFrames(
            Array.from({ length: count }, () => ({ type: "data", stream: 1, opener: true, data })),
          );
          const packet = await sender.seal("lab", laptop, lab, frames, 300);
          assertEquals(packet.byteOffset, 300);
          // Copied first: opening may decrypt a packet in place. Tampered before the genuine
          // one opens, so it fails on its tag, not as a replay.
          const bad = packet.slice();
          bad[bad.length - 1 - (size % 16)] ^= 0x01;
          await assert.rejects(
            receiver.open("laptop", decodePacketHeader(bad), bad),
            { message: /authentication/ },
            `a changed byte opened on ${to.name}`,
          );
          assertEquals(await receiver.open("laptop", decodePacketHeader(packet), packet), frames);
        }
      });
    }
  }
});

Deno.test("keys are the ones deriveKey makes, so peers of earlier releases still interoperate", async () => {
  // The earlier release derived an AES-GCM CryptoKey directly; seal as it did and open here.
  const laptop = newSessionId();
  const lab = newSessionId();
  const base = await crypto.subtle.importKey("raw", SECRET, "HKDF", false, ["deriveKey"]);
  const name = (s: string) => [s.length, ...encoder.encode(s)];
  const info = new Uint8Array([
    ...encoder.encode("relay-tunnel/1"),
    ...name("laptop"),
    ...name("lab"),
  ]);
  const key = await crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array([...laptop, ...lab]), info },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt"],
  );
  const frames = encodeFrames([{ type: "hello", ack: false }]);
  const header = (await new SecretCipher(SECRET, "laptop").seal("lab", laptop, lab, frames))
    .slice(0, 42);
  const iv = new Uint8Array(12);
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv, additionalData: header },
      key,
      frames as BufferSource,
    ),
  );
  const packet = new Uint8Array([...header, ...sealed]);
  for (const aead of [openssl(), webCryptoAead]) {
    const receiver = new SecretCipher(SECRET, "lab", { aead });
    const copy = packet.slice(); // opening may decrypt in place
    assertEquals(await receiver.open("laptop", decodePacketHeader(copy), copy), frames);
  }
});

Deno.test("without --allow-ffi the engine is WebCrypto, and sealed packets still work", async () => {
  const script = `
    import { selectAead } from ${
    JSON.stringify(new URL("../../lib/tunnel/aead.ts", import.meta.url).href)
  };
    import { SecretCipher } from ${
    JSON.stringify(new URL("../../lib/tunnel/crypto.ts", import.meta.url).href)
  };
    import { decodePacketHeader, encodeFrames, newSessionId } from ${
    JSON.stringify(new URL("../../lib/wire/tunnel.ts", import.meta.url).href)
  };
    const secret = new TextEncoder().encode("correct horse battery staple, 32+ bytes");
    const [a, b] = [newSessionId(), newSessionId()];
    const frames = encodeFrames([{ type: "hello", ack: false }]);
    const packet = await new SecretCipher(secret, "laptop").seal("lab", a, b, frames);
    const back = await new SecretCipher(secret, "lab").open("laptop", decodePacketHeader(packet), packet);
    console.log((await selectAead()).name, back.length === frames.length);
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--no-check", "--allow-read", "--allow-env", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { RELAY_TUNNEL_CRYPTO: "" },
  }).spawn();
  const writer = out.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const { code, stdout, stderr } = await out.output();
  assertEquals(
    new TextDecoder().decode(stdout).trim(),
    "webcrypto true",
    new TextDecoder().decode(stderr),
  );
  assertEquals(code, 0);
});

Deno.test("OpenSSL refuses a nonce that is not 12 bytes instead of reading past it", async () => {
  const engine = openssl();
  const key = await engine.importKey(new Uint8Array(32).fill(7));
  const plain = new Uint8Array(100);
  const out = new Uint8Array(plain.length + 16);
  for (const length of [0, 11, 13]) {
    assert.throws(() => engine.seal(key, new Uint8Array(length), new Uint8Array(0), plain, out));
    assert.throws(() => engine.open(key, new Uint8Array(length), new Uint8Array(0), out));
  }
});
