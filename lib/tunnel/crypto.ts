/**
 * End-to-end encryption of tunnel packets with a shared secret (`--secret-file`).
 *
 * ```
 * key(A→B) = HKDF-SHA-256(secret, salt = session A ‖ session B,
 *                          info = "relay-tunnel/1" ‖ len ‖ name A ‖ len ‖ name B)
 * sealed packet = header (version, PACKET_SEALED, session A, session B, u64 counter)
 *               ‖ AES-256-GCM(key(A→B), iv = 0u32 ‖ counter, aad = header, frames) ‖ 16-byte tag
 * ```
 * Sessions are fresh random ids per relay connection, so every key is new and a counter
 * that starts at 0 never repeats a nonce under it. Each direction has its own key. A
 * receiver accepts only counters above the last one it authenticated under that key, so a
 * replayed packet is refused; packets of a peer's ended session are refused by the session
 * (it remembers them); and every packet that touches streams is addressed to the
 * receiver's current session, so old traffic cannot be replayed into a new one. The relay
 * still sees names, session ids, sizes and timing, and can drop or delay packets.
 * @module
 */

import { UsageError } from "../cli/flags.ts";
import { readEnv } from "../cli/flags.ts";
import {
  PACKET_HEADER_BYTES,
  PACKET_SEALED,
  type PacketHeader,
  SESSION_ID_BYTES,
  writePacketHeader,
} from "../wire/tunnel.ts";
import type { PacketCipher } from "./session.ts";
import { toHex } from "../util/bytes.ts";

/** Bytes of a sealed packet's header: the packet header and the u64 counter. */
export const SEALED_HEADER_BYTES: number = PACKET_HEADER_BYTES + 8;
/** Bytes of the AES-GCM tag at the end of a sealed packet. */
export const TAG_BYTES = 16;
/** Shortest secret accepted: below this it could be guessed offline from captured traffic. */
export const MIN_SECRET_BYTES = 16;
/** Largest secret file read: a secret is a line, not a file to load whole. */
const MAX_SECRET_FILE_BYTES = 64 * 1024;
/** Keys kept at once; past it the oldest are derived again when needed. */
const MAX_KEYS = 4096;

const encoder = new TextEncoder();
const INFO_PREFIX = encoder.encode("relay-tunnel/1");

/**
 * Reads the shared secret from `path`, or else from `RELAY_TUNNEL_SECRET`; trailing
 * whitespace (a final newline) is dropped.
 * @returns the secret, or `undefined` when neither is set
 * @throws {UsageError} when the file cannot be read or the secret is too short
 */
export async function readSecret(path: string | undefined): Promise<Uint8Array | undefined> {
  let text: string;
  let from: string;
  if (path !== undefined) {
    from = `--secret-file ${path}`;
    try {
      const info = await Deno.stat(path);
      if (info.size > MAX_SECRET_FILE_BYTES) {
        throw new Error(`larger than ${MAX_SECRET_FILE_BYTES} bytes`);
      }
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new UsageError(`Cannot read ${from}: ${(error as Error).message}`);
    }
  } else {
    const env = readEnv("RELAY_TUNNEL_SECRET");
    if (env === undefined || env === "") return undefined;
    from = "RELAY_TUNNEL_SECRET";
    text = env;
  }
  const secret = encoder.encode(text.replace(/\s+$/, ""));
  if (secret.length < MIN_SECRET_BYTES) {
    throw new UsageError(
      `Invalid ${from}: the secret is shorter than ${MIN_SECRET_BYTES} bytes ` +
        `(make one with: openssl rand -hex 32)`,
    );
  }
  return secret;
}

/** Counter state of one key. */
interface KeyState {
  key: Promise<CryptoKey>;
  /** Sending: the next counter. Receiving: the last counter authenticated, -1n before any. */
  counter: bigint;
}

/** Seals and opens packets for one tunnel name with keys derived from a shared secret. */
export class SecretCipher implements PacketCipher {
  readonly #name: string;
  readonly #base: Promise<CryptoKey>;
  readonly #send = new Map<string, KeyState>();
  readonly #recv = new Map<string, KeyState>();

  /**
   * Prepares key derivation from `secret` for the tunnel called `name`.
   * @param secret the shared secret
   * @param name this tunnel's relay name (bound into every key)
   */
  constructor(secret: Uint8Array, name: string) {
    this.#name = name;
    this.#base = crypto.subtle.importKey("raw", secret as BufferSource, "HKDF", false, [
      "deriveKey",
    ]);
  }

  /** Seals `frames` into a whole packet to `peer`, under the next counter of its key. */
  async seal(
    peer: string,
    sender: Uint8Array,
    receiver: Uint8Array,
    frames: Uint8Array,
  ): Promise<Uint8Array> {
    const state = this.#sendState(peer, sender, receiver);
    const counter = state.counter++;
    const header = new Uint8Array(SEALED_HEADER_BYTES);
    writePacketHeader(header, PACKET_SEALED, sender, receiver);
    new DataView(header.buffer).setBigUint64(PACKET_HEADER_BYTES, counter);
    const sealed = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce(counter), additionalData: header, tagLength: TAG_BYTES * 8 },
      await state.key,
      frames as BufferSource,
    );
    const out = new Uint8Array(SEALED_HEADER_BYTES + sealed.byteLength);
    out.set(header);
    out.set(new Uint8Array(sealed), SEALED_HEADER_BYTES);
    return out;
  }

  /**
   * Opens a sealed packet from `peer`.
   * @throws {Error} when it fails authentication or its counter is not new
   */
  async open(
    peer: string,
    header: PacketHeader,
    packet: Uint8Array,
  ): Promise<Uint8Array> {
    if (packet.length < SEALED_HEADER_BYTES + TAG_BYTES) {
      throw new Error("Sealed packet is too short");
    }
    const id = stateId(peer, header.sender, header.receiver);
    const known = this.#recv.get(id);
    const counter = new DataView(packet.buffer, packet.byteOffset, packet.byteLength)
      .getBigUint64(PACKET_HEADER_BYTES);
    if (known && counter <= known.counter) {
      throw new Error(`Replayed or reordered packet (counter ${counter})`);
    }
    const key = known?.key ?? this.#derive(peer, this.#name, header.sender, header.receiver);
    let plain: ArrayBuffer;
    try {
      plain = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: nonce(counter),
          additionalData: packet.subarray(0, SEALED_HEADER_BYTES) as BufferSource,
          tagLength: TAG_BYTES * 8,
        },
        await key,
        packet.subarray(SEALED_HEADER_BYTES) as BufferSource,
      );
    } catch {
      throw new Error("Packet failed authentication (another secret, or tampered with)");
    }
    // Only an authentic packet creates or moves a counter, so forgeries can neither block
    // real packets nor push real counters out of the table.
    const state = this.#recv.get(id);
    if (state) {
      if (counter <= state.counter) throw new Error(`Replayed packet (counter ${counter})`);
      state.counter = counter;
    } else {
      if (this.#recv.size >= MAX_KEYS) this.#recv.delete(this.#recv.keys().next().value!);
      this.#recv.set(id, { key, counter });
    }
    return new Uint8Array(plain);
  }

  /** Drops the keys and counters of an ended session of `peer`. */
  forget(peer: string, session: Uint8Array): void {
    const hex = toHex(session);
    for (const table of [this.#send, this.#recv]) {
      for (const id of table.keys()) {
        if (id.startsWith(`${peer}\u0000`) && id.includes(hex)) table.delete(id);
      }
    }
  }

  #sendState(peer: string, sender: Uint8Array, receiver: Uint8Array): KeyState {
    const id = stateId(peer, sender, receiver);
    let state = this.#send.get(id);
    if (!state) {
      if (this.#send.size >= MAX_KEYS) this.#send.delete(this.#send.keys().next().value!);
      state = { key: this.#derive(this.#name, peer, sender, receiver), counter: 0n };
      this.#send.set(id, state);
    }
    return state;
  }

  async #derive(
    from: string,
    to: string,
    sender: Uint8Array,
    receiver: Uint8Array,
  ): Promise<CryptoKey> {
    const salt = new Uint8Array(2 * SESSION_ID_BYTES);
    salt.set(sender);
    salt.set(receiver, SESSION_ID_BYTES);
    const fromBytes = encoder.encode(from);
    const toBytes = encoder.encode(to);
    const info = new Uint8Array(INFO_PREFIX.length + 2 + fromBytes.length + toBytes.length);
    info.set(INFO_PREFIX);
    info[INFO_PREFIX.length] = fromBytes.length;
    info.set(fromBytes, INFO_PREFIX.length + 1);
    info[INFO_PREFIX.length + 1 + fromBytes.length] = toBytes.length;
    info.set(toBytes, INFO_PREFIX.length + 2 + fromBytes.length);
    return await crypto.subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt, info },
      await this.#base,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
  }
}

function stateId(peer: string, sender: Uint8Array, receiver: Uint8Array): string {
  return `${peer}\u0000${toHex(sender)}${toHex(receiver)}`;
}

function nonce(counter: bigint): Uint8Array<ArrayBuffer> {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, counter);
  return iv;
}

/** A cipher factory for {@linkcode TunnelOptions.cipher}: one cipher per session. */
export function createCipherFactory(secret: Uint8Array): (name: string) => PacketCipher {
  return (name) => new SecretCipher(secret, name);
}
