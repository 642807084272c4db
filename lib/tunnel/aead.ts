/**
 * AES-256-GCM (12-byte nonce, 16-byte tag) for sealed tunnel packets, from one of two
 * engines that produce the same bytes:
 *
 * - `openssl`: the system's OpenSSL 3 `libcrypto` through FFI, called on this thread. It
 *   needs `--allow-ffi` (or `-A`) and the library; measured here at about 2.2 GB/s in
 *   256 KiB calls, where WebCrypto managed 330–590 MB/s (and about 800 with two calls in
 *   flight), which bounded the encrypted tunnel.
 * - `webcrypto`: `crypto.subtle`, always available.
 *
 * {@linkcode selectAead} picks OpenSSL when it loads and passes a known-answer check against
 * WebCrypto, else WebCrypto; `RELAY_TUNNEL_CRYPTO=webcrypto` (or `openssl`) forces one.
 * Keys are kept as raw bytes (OpenSSL) or a non-extractable `CryptoKey` (WebCrypto).
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { errorText } from "../util/async.ts";

/** Bytes of an AES-256 key. */
export const AEAD_KEY_BYTES = 32;
/** Bytes of a GCM nonce. */
export const AEAD_NONCE_BYTES = 12;
/** Bytes of the GCM tag after the ciphertext. */
export const AEAD_TAG_BYTES = 16;

/** Which implementation: see the module documentation. */
export type AeadEngineName = "openssl" | "webcrypto";

/** A key of one engine, made by {@linkcode Aead.importKey}. */
export type AeadKey = { readonly engine: AeadEngineName };

/** AES-256-GCM sealing and opening; every engine makes the same bytes. */
export interface Aead {
  /** Which engine this is. */
  readonly name: AeadEngineName;
  /** Makes a key from `AEAD_KEY_BYTES` raw bytes (the caller may wipe them afterwards). */
  importKey(raw: Uint8Array): Promise<AeadKey>;
  /**
   * Encrypts `plain` into `out`: the ciphertext, then the tag (`plain.length +
   * AEAD_TAG_BYTES` bytes). `out` either starts where `plain` does (sealed in place) or
   * does not overlap it.
   */
  seal(
    key: AeadKey,
    nonce: Uint8Array,
    aad: Uint8Array,
    plain: Uint8Array,
    out: Uint8Array,
  ): void | Promise<void>;
  /**
   * Decrypts `sealed` (ciphertext then tag). The engine may decrypt in place: the result
   * is then a view of `sealed`'s bytes, which are overwritten (also when the tag fails).
   * @throws {Error} when the tag does not match
   */
  open(
    key: AeadKey,
    nonce: Uint8Array,
    aad: Uint8Array,
    sealed: Uint8Array,
  ): Uint8Array | Promise<Uint8Array>;
}

const log = getLogger(["relay", "tunnel"]);

interface WebKey extends AeadKey {
  readonly engine: "webcrypto";
  readonly key: CryptoKey;
}

/** The WebCrypto engine: the work runs partly off the JavaScript thread. */
export const webCryptoAead: Aead = {
  name: "webcrypto",
  async importKey(raw) {
    const key = await crypto.subtle.importKey("raw", raw as BufferSource, "AES-GCM", false, [
      "encrypt",
      "decrypt",
    ]);
    return { engine: "webcrypto", key } as WebKey;
  },
  async seal(key, nonce, aad, plain, out) {
    const sealed = await crypto.subtle.encrypt(
      params(nonce, aad),
      (key as WebKey).key,
      plain as BufferSource,
    );
    out.set(new Uint8Array(sealed));
  },
  async open(key, nonce, aad, sealed) {
    return new Uint8Array(
      await crypto.subtle.decrypt(params(nonce, aad), (key as WebKey).key, sealed as BufferSource),
    );
  },
};

function params(nonce: Uint8Array, aad: Uint8Array): AesGcmParams {
  return {
    name: "AES-GCM",
    iv: nonce as BufferSource,
    additionalData: aad as BufferSource,
    tagLength: AEAD_TAG_BYTES * 8,
  };
}

/** The libcrypto functions used, in Deno FFI terms. */
const LIBCRYPTO_SYMBOLS = {
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  EVP_aes_256_gcm: { parameters: [], result: "pointer" },
  EVP_EncryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  EVP_EncryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_EncryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  EVP_DecryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  EVP_DecryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_DecryptFinal_ex: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  EVP_CIPHER_CTX_ctrl: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
} as const;

/** OpenSSL's EVP_CTRL_GCM_GET_TAG and EVP_CTRL_GCM_SET_TAG. */
const GCM_GET_TAG = 0x10;
const GCM_SET_TAG = 0x11;

/** Where libcrypto 3 is found on Linux, macOS and Windows. */
const LIBCRYPTO_NAMES = ["libcrypto.so.3", "libcrypto.3.dylib", "libcrypto-3-x64.dll"];

interface RawKey extends AeadKey {
  readonly engine: "openssl";
  readonly raw: Uint8Array;
}

/**
 * The OpenSSL engine, or undefined when FFI is not allowed or libcrypto 3 is missing.
 * Calls are synchronous on this thread, so two contexts (one per direction) serve every
 * key: each call sets its key and nonce first (an AES-NI key schedule costs far less than
 * the packet).
 */
export function openSslAead(): Aead | undefined {
  if (Deno.permissions.querySync?.({ name: "ffi" }).state !== "granted") return undefined;
  let lib: Deno.DynamicLibrary<typeof LIBCRYPTO_SYMBOLS> | undefined;
  for (const name of LIBCRYPTO_NAMES) {
    try {
      lib = Deno.dlopen(name, LIBCRYPTO_SYMBOLS);
      break;
    } catch {
      // Not here; try the next name.
    }
  }
  if (!lib) return undefined;
  const s = lib.symbols;
  const cipher = s.EVP_aes_256_gcm();
  const enc = s.EVP_CIPHER_CTX_new();
  const dec = s.EVP_CIPHER_CTX_new();
  if (cipher === null || enc === null || dec === null) return undefined;
  const outLength = new Int32Array(1);
  const ok = (result: number, what: string) => {
    if (result !== 1) throw new Error(`OpenSSL ${what} failed`);
  };
  // OpenSSL reads a 12-byte IV and a 32-byte key from the pointers it is given: a shorter
  // array would be read past its end, so lengths are checked before every call.
  const checkNonce = (nonce: Uint8Array) => {
    if (nonce.length !== AEAD_NONCE_BYTES) throw new RangeError("AES-GCM needs a 12-byte nonce");
  };
  return {
    name: "openssl",
    importKey(raw) {
      if (raw.length !== AEAD_KEY_BYTES) throw new RangeError("AES-256 needs a 32-byte key");
      return Promise.resolve({ engine: "openssl", raw: raw.slice() } as RawKey);
    },
    seal(key, nonce, aad, plain, out) {
      if (out.length < plain.length + AEAD_TAG_BYTES) throw new RangeError("Output too short");
      checkNonce(nonce);
      ok(s.EVP_EncryptInit_ex(enc, cipher, null, (key as RawKey).raw, nonce), "encrypt init");
      ok(s.EVP_EncryptUpdate(enc, null, outLength, aad, aad.length), "aad");
      ok(s.EVP_EncryptUpdate(enc, out, outLength, plain, plain.length), "encrypt");
      ok(s.EVP_EncryptFinal_ex(enc, out.subarray(plain.length), outLength), "encrypt final");
      ok(
        s.EVP_CIPHER_CTX_ctrl(enc, GCM_GET_TAG, AEAD_TAG_BYTES, out.subarray(plain.length)),
        "tag",
      );
    },
    open(key, nonce, aad, sealed) {
      if (sealed.length < AEAD_TAG_BYTES) throw new Error("Sealed data is too short");
      checkNonce(nonce);
      const length = sealed.length - AEAD_TAG_BYTES;
      // In place: a received packet is this side's alone, and a new buffer per packet (its
      // allocation and page faults) cost about as much as a tenth of the decryption.
      const plain = sealed.subarray(0, length);
      ok(s.EVP_DecryptInit_ex(dec, cipher, null, (key as RawKey).raw, nonce), "decrypt init");
      ok(s.EVP_DecryptUpdate(dec, null, outLength, aad, aad.length), "aad");
      ok(s.EVP_CIPHER_CTX_ctrl(dec, GCM_SET_TAG, AEAD_TAG_BYTES, sealed.subarray(length)), "tag");
      ok(s.EVP_DecryptUpdate(dec, plain, outLength, plain, length), "decrypt");
      if (s.EVP_DecryptFinal_ex(dec, plain.subarray(length), outLength) !== 1) {
        throw new Error("The tag does not match");
      }
      return plain;
    },
  };
}

/**
 * Checks `engine` against WebCrypto on a fixed key, nonce, aad and message, both ways.
 * @returns whether it seals and opens exactly as WebCrypto does
 */
export async function agreesWithWebCrypto(engine: Aead): Promise<boolean> {
  const raw = new Uint8Array(AEAD_KEY_BYTES).map((_, i) => i * 7 + 1);
  const nonce = new Uint8Array(AEAD_NONCE_BYTES).map((_, i) => 0xa0 + i);
  const aad = new TextEncoder().encode("relay-tunnel known answer");
  // Longer than one AES block and not a multiple of it.
  const plain = new Uint8Array(1000).map((_, i) => (i * 31) & 0xff);
  const [mine, web] = [await engine.importKey(raw), await webCryptoAead.importKey(raw)];
  const a = new Uint8Array(plain.length + AEAD_TAG_BYTES);
  const b = new Uint8Array(plain.length + AEAD_TAG_BYTES);
  await engine.seal(mine, nonce, aad, plain, a);
  await webCryptoAead.seal(web, nonce, aad, plain, b);
  if (!a.every((x, i) => x === b[i])) return false;
  const back = await engine.open(mine, nonce, aad, b);
  if (!back.every((x, i) => x === plain[i])) return false;
  const bad = b.slice();
  bad[3] ^= 1;
  try {
    await engine.open(mine, nonce, aad, bad);
    return false;
  } catch {
    return true;
  }
}

let selected: Promise<Aead> | undefined;

/**
 * The engine for sealed packets: OpenSSL when it loads and agrees with WebCrypto, else
 * WebCrypto. `RELAY_TUNNEL_CRYPTO` (`openssl` or `webcrypto`) overrides the choice; an
 * `openssl` that cannot load falls back with a warning. Chosen once per process.
 */
export function selectAead(): Promise<Aead> {
  selected ??= (async () => {
    let wanted = "";
    try {
      wanted = Deno.env.get("RELAY_TUNNEL_CRYPTO") ?? "";
    } catch {
      // No --allow-env: the default choice.
    }
    if (wanted === "webcrypto") return webCryptoAead;
    let engine: Aead | undefined;
    try {
      engine = openSslAead();
      if (engine && !await agreesWithWebCrypto(engine)) {
        log.warn("OpenSSL's AES-GCM disagrees with WebCrypto's; using WebCrypto");
        engine = undefined;
      }
    } catch (error) {
      log.debug("OpenSSL is not usable: {error}", { error: errorText(error) });
      engine = undefined;
    }
    if (!engine && wanted === "openssl") {
      log.warn("RELAY_TUNNEL_CRYPTO=openssl, but libcrypto 3 could not be loaded (--allow-ffi?)");
    }
    return engine ?? webCryptoAead;
  })();
  return selected;
}
