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
 * receiver's current session, so old traffic cannot be replayed into a new one. A key that
 * is dropped (its session ended, or too many were kept) is retired with it: its session
 * pair is never accepted or sealed to again, so no counter restarts under an old key.
 *
 * Deriving a key costs far more than refusing a packet, and any relay client can send
 * packets naming new session pairs; so a peer gets only a few derivations for unknown
 * pairs at a time (a token bucket, and one over all peers), and packets beyond that are
 * refused unopened. The relay still sees names, session ids, sizes and timing, and can
 * drop or delay packets.
 * @module
 */

import {
  PACKET_HEADER_BYTES,
  PACKET_SEALED,
  type PacketHeader,
  SESSION_ID_BYTES,
  UNKNOWN_SESSION,
  writePacketHeader,
} from "../wire/tunnel.ts";
import { TUNNEL_MAX_PEERS } from "../limits.ts";
import { toHex } from "../util/bytes.ts";
import { type Aead, AEAD_KEY_BYTES, type AeadKey, selectAead } from "./aead.ts";

/**
 * Authenticated encryption of packets. A session with a cipher sends and accepts only
 * sealed packets.
 */
export interface PacketCipher {
  /**
   * Seals `frames` into a whole packet from `sender` to `peer`'s session `receiver`, with
   * `headroom` free bytes in front of it in its buffer (for the link's header). With
   * `inPlace`, the caller gives up `frames`' bytes and the free bytes around them: when its
   * buffer has `headroom + SEALED_HEADER_BYTES` free in front and TAG_BYTES free after, the
   * packet is sealed right there. The packet's counter is taken when this is called, so
   * packets sealed at once must be sent in the order of the calls.
   */
  seal(
    peer: string,
    sender: Uint8Array,
    receiver: Uint8Array,
    frames: Uint8Array,
    headroom?: number,
    inPlace?: boolean,
  ): Promise<Uint8Array>;
  /**
   * Opens a sealed packet from `peer` (its header already decoded). The packet's bytes may
   * be decrypted in place: the caller gives them up.
   * @returns the plain frames (perhaps a view of `packet`)
   * @throws {Error} when the packet is forged, tampered with, replayed or refused unopened
   */
  open(peer: string, header: PacketHeader, packet: Uint8Array): Promise<Uint8Array>;
  /** Retires the keys of a session of `peer` that has ended. */
  forget(peer: string, session: Uint8Array): void;
}

/** Bytes of a sealed packet's header: the packet header and the u64 counter. */
export const SEALED_HEADER_BYTES: number = PACKET_HEADER_BYTES + 8;
/** Bytes of the AES-GCM tag at the end of a sealed packet. */
export const TAG_BYTES = 16;
/** Shortest secret accepted: below this it could be guessed offline from captured traffic. */
export const MIN_SECRET_BYTES = 16;

/**
 * Keys for unknown session pairs one peer may have derived in a burst. A real peer needs
 * two per restart (its HELLO before and after it learns this session), and one a second
 * when it holds another secret and keeps retrying.
 */
export const NEW_PAIRS_BURST = 8;
/** After the burst, one more derivation per peer this often (4 a second). */
export const NEW_PAIR_REFILL_MS = 250;
/** Derivations for unknown pairs over all peers in a burst, so many names cannot add up. */
const ALL_PEERS_BURST = 256;
/** After that burst, one more derivation over all peers this often (250 a second). */
const ALL_PEERS_REFILL_MS = 4;
/**
 * Live keys per peer and direction: a peer has one session at a time, seen under two
 * receivers (unknown, then this session), plus room for a restart in flight.
 */
export const MAX_KEYS_PER_PEER = 4;
/** Ended session pairs remembered exactly per peer; older ones fall under its floor. */
export const MAX_RETIRED_PAIRS_PER_PEER = 32;
/** Rate-limit buckets of peers without keys kept at once (each a few bytes). */
const MAX_BUCKETS = 4 * TUNNEL_MAX_PEERS;

const encoder = new TextEncoder();
const INFO_PREFIX = encoder.encode("relay-tunnel/1");
const UNKNOWN_HEX = toHex(UNKNOWN_SESSION);

/** Counter state of one key. */
interface KeyState {
  key: Promise<AeadKey>;
  /** Sending: the next counter. Receiving: the last counter authenticated, -1n before any. */
  counter: bigint;
}

/** A token bucket: `burst` tokens, one back every `refillMs`. */
class Bucket {
  #tokens: number;
  #last = performance.now();
  readonly #burst: number;
  readonly #refillMs: number;

  constructor(burst: number, refillMs: number) {
    this.#tokens = burst;
    this.#burst = burst;
    this.#refillMs = refillMs;
  }

  /** Takes a token; false when none is left. */
  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#last) / this.#refillMs);
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

/**
 * Keys of one peer. Pairs are `sender hex ‖ receiver hex`; the peer's own session is the
 * sender of a receive pair and the receiver of a send pair.
 */
class PeerKeys {
  readonly recv = new Map<string, KeyState>();
  readonly send = new Map<string, KeyState>();
  /** Ended pairs, oldest first, each with the peer's session of the pair. */
  readonly retired = new Map<string, string>();
  /** The latest peer session of a pair that left `retired`: sessions up to it are ended. */
  floor = "";

  /** Whether a pair, with the peer's session `theirs` (hex), has ended. */
  isRetired(pair: string, theirs: string): boolean {
    if (this.retired.has(pair)) return true;
    // Session ids start with their start time, so a later session compares greater.
    return theirs !== UNKNOWN_HEX && this.floor !== "" && theirs <= this.floor;
  }

  /** Ends a pair for good; past MAX_RETIRED_PAIRS_PER_PEER the oldest goes under the floor. */
  retire(pair: string, theirs: string): void {
    this.retired.set(pair, theirs);
    if (this.retired.size <= MAX_RETIRED_PAIRS_PER_PEER) return;
    const [oldest, session] = this.retired.entries().next().value!;
    this.retired.delete(oldest);
    if (session !== UNKNOWN_HEX && session > this.floor) this.floor = session;
  }
}

/** Options of a {@linkcode SecretCipher}: the derivation budget (tests shorten it). */
export interface SecretCipherOptions {
  /**
   * Derivations for unknown session pairs one peer may cause in a burst.
   * @default {NEW_PAIRS_BURST}
   */
  newPairsBurst?: number;
  /**
   * Time for one more such derivation to be allowed per peer, after the burst.
   * @default {NEW_PAIR_REFILL_MS}
   */
  newPairRefillMs?: number;
  /**
   * The AES-256-GCM implementation (tests pick one; both make the same bytes).
   * @default {selectAead()}: OpenSSL through FFI when allowed and present, else WebCrypto
   */
  aead?: Aead | Promise<Aead>;
}

/** Seals and opens packets for one tunnel name with keys derived from a shared secret. */
export class SecretCipher implements PacketCipher {
  readonly #name: string;
  readonly #base: Promise<CryptoKey>;
  readonly #aead: Promise<Aead>;
  readonly #peers = new Map<string, PeerKeys>();
  readonly #buckets = new Map<string, Bucket>();
  readonly #allPeers = new Bucket(ALL_PEERS_BURST, ALL_PEERS_REFILL_MS);
  readonly #burst: number;
  readonly #refillMs: number;
  #derivations = 0;

  /**
   * Prepares key derivation from `secret` for the tunnel called `name`.
   * @param secret the shared secret
   * @param name this tunnel's relay name (bound into every key)
   * @param options the derivation budget
   * @throws {RangeError} when the secret is shorter than MIN_SECRET_BYTES
   */
  constructor(secret: Uint8Array, name: string, options: SecretCipherOptions = {}) {
    if (secret.length < MIN_SECRET_BYTES) {
      throw new RangeError(`The secret is shorter than ${MIN_SECRET_BYTES} bytes`);
    }
    this.#name = name;
    this.#burst = options.newPairsBurst ?? NEW_PAIRS_BURST;
    this.#refillMs = options.newPairRefillMs ?? NEW_PAIR_REFILL_MS;
    this.#aead = Promise.resolve(options.aead ?? selectAead());
    this.#base = crypto.subtle.importKey("raw", secret as BufferSource, "HKDF", false, [
      "deriveBits",
    ]);
  }

  /** Keys derived so far, both directions (for tests of the derivation budget). */
  get derivations(): number {
    return this.#derivations;
  }

  /**
   * Seals `frames` into a whole packet to `peer`, under the next counter of its key.
   * @throws {Error} when the receiver's session has ended (its key was retired)
   */
  async seal(
    peer: string,
    sender: Uint8Array,
    receiver: Uint8Array,
    frames: Uint8Array,
    headroom = 0,
    inPlace = false,
  ): Promise<Uint8Array> {
    const state = this.#sendState(peer, sender, receiver);
    const counter = state.counter++;
    const front = headroom + SEALED_HEADER_BYTES;
    const size = front + frames.length + TAG_BYTES;
    const fits = frames.byteOffset >= front &&
      frames.byteOffset + frames.length + TAG_BYTES <= frames.buffer.byteLength;
    // Sealed where the frames lie when the caller gives their buffer up (a read buffer with
    // room kept around it): no new 256 KiB buffer per packet, which was a twelfth of the
    // sender's time. Otherwise header and ciphertext go straight into a new packet.
    const out = inPlace && fits
      ? new Uint8Array(frames.buffer, frames.byteOffset - front, size)
      : new Uint8Array(size);
    const header = out.subarray(headroom, headroom + SEALED_HEADER_BYTES);
    writePacketHeader(header, PACKET_SEALED, sender, receiver);
    new DataView(out.buffer).setBigUint64(headroom + PACKET_HEADER_BYTES, counter);
    const key = await state.key;
    const aead = await this.#aead;
    await aead.seal(
      key,
      nonce(counter),
      header,
      frames,
      out.subarray(headroom + SEALED_HEADER_BYTES),
    );
    return out.subarray(headroom);
  }

  /**
   * Opens a sealed packet from `peer`.
   * @throws {Error} when it fails authentication, its counter is not new, its session pair
   *   has ended, or the peer has used up its derivations for new session pairs
   */
  async open(
    peer: string,
    header: PacketHeader,
    packet: Uint8Array,
  ): Promise<Uint8Array> {
    // Opens may overlap (the session starts the next while one decrypts); counters are
    // checked and moved in call order, so an overlap is never taken for a replay.
    const turn = this.#lastOpen;
    let done!: () => void;
    this.#lastOpen = new Promise<void>((resolve) => done = resolve);
    try {
      return await this.#open(peer, header, packet, turn);
    } finally {
      done();
    }
  }

  #lastOpen: Promise<void> = Promise.resolve();

  /** The key of a known pair, refusing a counter already authenticated under it. */
  #knownKey(peer: string, pair: string, counter: bigint): Promise<AeadKey> | undefined {
    const known = this.#peers.get(peer)?.recv.get(pair);
    if (known && counter <= known.counter) {
      throw new Error(`Replayed or reordered packet (counter ${counter})`);
    }
    return known?.key;
  }

  async #open(
    peer: string,
    header: PacketHeader,
    packet: Uint8Array,
    turn: Promise<void>,
  ): Promise<Uint8Array> {
    if (packet.length < SEALED_HEADER_BYTES + TAG_BYTES) {
      throw new Error("Sealed packet is too short");
    }
    const theirs = toHex(header.sender);
    const pair = theirs + toHex(header.receiver);
    const counter = new DataView(packet.buffer, packet.byteOffset, packet.byteLength)
      .getBigUint64(PACKET_HEADER_BYTES);
    let key = this.#knownKey(peer, pair, counter);
    if (!key) {
      // A new pair waits for the opens before it, which may be making its key: a burst of
      // packets derives it once. New pairs are rare, so this costs no overlap.
      await turn;
      key = this.#knownKey(peer, pair, counter);
    }
    if (!key) {
      const keys = this.#peers.get(peer);
      if (keys?.isRetired(pair, theirs)) throw new Error("Packet from an ended session");
      if (!keys && this.#peers.size >= TUNNEL_MAX_PEERS) {
        throw new Error(`Packet refused unopened: keys for ${TUNNEL_MAX_PEERS} peers held`);
      }
      if (!this.#bucket(peer).take() || !this.#allPeers.take()) {
        throw new Error("Packet refused unopened: too many new sessions from this peer");
      }
      key = this.#derive(peer, this.#name, header.sender, header.receiver);
    }
    let plain: Uint8Array;
    const aead = await this.#aead;
    const opening = await key;
    try {
      plain = await aead.open(
        opening,
        nonce(counter),
        packet.subarray(0, SEALED_HEADER_BYTES),
        packet.subarray(SEALED_HEADER_BYTES),
      );
    } catch {
      throw new Error("Packet failed authentication (another secret, or tampered with)");
    }
    await turn;
    // Only an authentic packet creates or moves a counter, so forgeries can neither block
    // real packets nor push real counters out of the table.
    const owner = this.#keysOf(peer);
    const state = owner.recv.get(pair);
    if (state) {
      if (counter <= state.counter) throw new Error(`Replayed packet (counter ${counter})`);
      state.counter = counter;
    } else {
      // Retired while this packet was being opened (its session ended meanwhile).
      if (owner.isRetired(pair, theirs)) throw new Error("Packet from an ended session");
      if (owner.recv.size >= MAX_KEYS_PER_PEER) this.#evict(owner, owner.recv, true);
      owner.recv.set(pair, { key, counter });
    }
    return plain;
  }

  /** Retires the keys and counters of an ended session of `peer`: it is never accepted again. */
  forget(peer: string, session: Uint8Array): void {
    const keys = this.#peers.get(peer);
    if (!keys) return;
    const hex = toHex(session);
    for (const pair of [...keys.recv.keys()]) {
      if (pair.startsWith(hex)) {
        keys.recv.delete(pair);
        keys.retire(pair, hex);
      }
    }
    for (const pair of [...keys.send.keys()]) {
      if (pair.endsWith(hex)) {
        keys.send.delete(pair);
        keys.retire(pair, hex);
      }
    }
  }

  #keysOf(peer: string): PeerKeys {
    let keys = this.#peers.get(peer);
    if (!keys) {
      keys = new PeerKeys();
      this.#peers.set(peer, keys);
      this.#buckets.delete(peer);
    }
    return keys;
  }

  #bucket(peer: string): Bucket {
    let bucket = this.#buckets.get(peer);
    if (!bucket) {
      // Forgetting a bucket only gives that peer a fresh burst; the bucket over all peers
      // still holds.
      if (this.#buckets.size >= MAX_BUCKETS) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
      bucket = new Bucket(this.#burst, this.#refillMs);
      this.#buckets.set(peer, bucket);
    }
    return bucket;
  }

  /** Drops the oldest key of `table` and retires its pair, so it is never used again. */
  #evict(keys: PeerKeys, table: Map<string, KeyState>, receiving: boolean): void {
    for (const pair of table.keys()) {
      const half = SESSION_ID_BYTES * 2;
      const theirs = receiving ? pair.slice(0, half) : pair.slice(half);
      // The send key to the unknown session is one per peer and never evicted: a new one
      // would start its counter again under the same key.
      if (theirs === UNKNOWN_HEX) continue;
      table.delete(pair);
      keys.retire(pair, theirs);
      return;
    }
  }

  #sendState(peer: string, sender: Uint8Array, receiver: Uint8Array): KeyState {
    const theirs = toHex(receiver);
    const pair = toHex(sender) + theirs;
    const keys = this.#keysOf(peer);
    let state = keys.send.get(pair);
    if (!state) {
      if (keys.isRetired(pair, theirs)) {
        throw new Error(`Cannot seal to an ended session of ${peer}`);
      }
      if (keys.send.size >= MAX_KEYS_PER_PEER) this.#evict(keys, keys.send, false);
      state = { key: this.#derive(this.#name, peer, sender, receiver), counter: 0n };
      keys.send.set(pair, state);
    }
    return state;
  }

  async #derive(
    from: string,
    to: string,
    sender: Uint8Array,
    receiver: Uint8Array,
  ): Promise<AeadKey> {
    this.#derivations++;
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
    // deriveBits then import gives the key deriveKey(AES-GCM, 256) would (WebCrypto defines
    // it so), so peers on either engine, or an older release, derive the same key.
    const raw = new Uint8Array(
      await crypto.subtle.deriveBits(
        { name: "HKDF", hash: "SHA-256", salt, info },
        await this.#base,
        AEAD_KEY_BYTES * 8,
      ),
    );
    try {
      return await (await this.#aead).importKey(raw);
    } finally {
      raw.fill(0);
    }
  }
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
