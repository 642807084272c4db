/**
 * Routing of the frames one client sends: frame → the destination's {@linkcode Outbox}. The
 * connection's parser calls it for each header and payload piece; it never awaits, it only
 * notes the receivers that went over their share so the reader can wait for them.
 *
 * ```
 * header(dest, len) ─► look up dest (one-entry cache, checked against the registry generation)
 *   len = 0          ─► keepalive, never forwarded
 *   nobody has dest  ─► dropped: unknown_destination
 *   len < 16 KiB     ─► assembled whole, then copied into the receiver's queue
 *   larger           ─► streamed into the receiver's queue as it arrives (views, no copy)
 *   held on another node (a mesh, see mesh.ts) ─► that node's pair (one per sender, name, node)
 *     large, pair streams (ring) ─► begin(len), append(piece) as each read brings it (one copy)
 *     else                       ─► assembled whole, then sent (small ones; cluster pairs)
 * ```
 *
 * A name held on another node (cluster mode, worker threads) is reached through a
 * {@linkcode PairSender} of the server's {@linkcode Mesh}: one pair per destination name and
 * node, cached, and checked against the combined generation of the registry and the mesh
 * before it is used again. Only the payload crosses (the receiving side writes the header, as
 * its client wants it: framed or payload only). A pair never interleaves messages and keeps
 * their order. A pair that streams (the ring between workers, `MeshPair.begin/append`) gets the
 * payload of a large frame (16 KiB or more) piece by piece, as the reads bring it, like a local
 * streaming sender: copied once, from the read buffer into the ring; what the ring or the
 * receiver cannot take yet stays a view of the read buffer, and the reader waits until the pair
 * has copied it. A sender that ends mid-frame gives the frame up there (`abandon`: the receiver
 * is closed `sender_aborted` once part of it was written). A small frame, and any frame into
 * other pairs (cluster), that spans reads is assembled first (up to the relay's message limit,
 * 16 MiB; when that is 16 KiB or more it is charged to the memory budget until the pair has
 * copied it into packets). The reader waits for a pair without credit exactly as for a full
 * local receiver: after each read, until the pair has taken every message routed to it. Local
 * destinations never touch the mesh.
 *
 * A frame belongs to whoever holds the destination name when its header is read: if the name
 * changes hands mid-frame, the rest of that frame still goes to the connection it began on
 * (which keeps draining its queue after a half-close), and the next frame goes to the new
 * holder. A frame whose receiver ended before it was complete is counted as dropped
 * (`receiver_gone`), never as delivered.
 * @module
 */

import type { PooledBuffer } from "../io/buffer_pool.ts";
import type { OutFrame } from "../io/outbox.ts";
import {
  encodeHeader,
  type FrameSink,
  HeaderCache,
  headerLength,
  writeHeader,
} from "../wire/relay.ts";
import { bytesEqual } from "../util/bytes.ts";
import { COPY_BELOW_BYTES, MAX_PAIRS_PER_SENDER } from "../limits.ts";
import type { Connection, ConnectionHost } from "./connection.ts";
import type { PairCloseReason } from "../wire/reasons.ts";
import type { Mesh, MeshPair } from "./mesh.ts";

const EMPTY = new Uint8Array(0);
/** Before a sender registers (it sends nothing then): shared, never written. */
const NO_HEADERS = new HeaderCache(EMPTY);
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });
const SETTLED = Promise.resolve();

/** Something a sender's reader waits on after a read: a full receiver, or a pair. */
export interface RoomWaiter {
  /** Resolves when `owner` may send more. */
  waitForRoom(owner: unknown): Promise<void>;
}

/** Pair close reasons after which nothing sent on the pair was lost on the way. */
const CLEAN_ENDS: ReadonlySet<PairCloseReason> = new Set(["sender_closed", "closed"]);

/** A sender's pair to one name on one other node. */
class RemoteRoute implements RoomWaiter {
  /** Messages handed to the pair that it has not copied into packets yet. */
  pending = 0;
  /** Pieces of streamed messages the pair has not copied yet (views of the read buffer). */
  streaming = 0;
  /** Settles when everything handed to the pair so far has been copied by it. */
  tail: Promise<void> = SETTLED;
  /** The pair's backlog batch that messages were last queued into (`MeshPair.queue`). */
  batch: { done: Promise<void>; messages: number; bytes: number } | undefined;
  constructor(readonly name: string, readonly node: string, readonly pair: MeshPair) {}
  waitForRoom(): Promise<void> {
    return this.tail;
  }
}

/** Routing state of the frame being read. */
const enum Route {
  /** Zero-length keepalive, or a payload for an unknown destination. */
  Drop,
  /** A small frame assembled whole before it is queued. */
  Whole,
  /** A large frame streamed into the receiver's queue as it arrives. */
  Stream,
  /** A frame to a name on another node: through its pair, whole or streamed. */
  Remote,
}

/** Routes the frames of one sending connection. Created by its {@linkcode Connection}. */
export class Router implements FrameSink {
  /** The read buffer being parsed, when it comes from the pool (set by the reader). */
  pooled: PooledBuffer | undefined;
  /** Whether a view of the current (unpooled) read buffer went into some queue. */
  retained = false;

  readonly #sender: Connection;
  readonly #host: ConnectionHost;
  /** `name|` bytes used as the header prefix of frames this client sends. */
  #prefix: Uint8Array = EMPTY;
  /** `name|len|` of this sender, encoded once per frame size. */
  #headers = NO_HEADERS;
  #mode = Route.Drop;
  #dest: Connection | undefined;
  #whole: Uint8Array = EMPTY;
  #wholeAt = 0;
  #frame: OutFrame | undefined;
  #frameLength = 0;
  /** Receivers (and pairs) that went over their share while routing the current read. */
  #full: RoomWaiter[] = [];
  /** The receiver of the last small frame, not yet checked against its share. */
  #unchecked: Connection | undefined;
  /** Where the name of the frame being streamed was, to write the outgoing header over it. */
  #nameBuffer: ArrayBufferLike | undefined;
  #nameStart = 0;
  // One-entry destination cache: clients mostly send to the same peer again and again. Valid
  // only while the registry's generation is the one it was filled at: any claim or release
  // anywhere empties it, so a name that changed hands is looked up again.
  #lastDestName: Uint8Array = EMPTY;
  #lastDest: Connection | undefined;
  #lastGeneration = -1;
  /**
   * Pairs to names on other nodes, by name (at most `MAX_PAIRS_PER_SENDER`). Made with the
   * first pair: most senders never need one, and an empty Map is ~300 B per connection.
   */
  #pairs: Map<string, RemoteRoute> | undefined;
  /** The pair of the frame being read, when its destination is on another node. */
  #remote: RemoteRoute | undefined;
  /** Bytes of the assembled remote frame charged to the memory budget. */
  #charged = 0;
  /** The remote frame is being streamed into its pair (begun, not yet ended). */
  #streaming = false;
  #lastRemoteName: Uint8Array = EMPTY;
  #lastRemote: RemoteRoute | undefined;
  #lastRemoteGeneration = -1;

  /**
   * @param sender the connection whose frames are routed
   * @param host the server
   */
  constructor(sender: Connection, host: ConnectionHost) {
    this.#sender = sender;
    this.#host = host;
  }

  /** The sender's registered name as bytes (empty before it registers). */
  get nameBytes(): Uint8Array {
    return this.#prefix;
  }

  /** Sets the sender's registered name, used in the header of what it sends. */
  registered(name: string): void {
    this.#prefix = encoder.encode(name);
    this.#headers = new HeaderCache(this.#prefix);
  }

  /** Whether a frame is being streamed to a receiver (the sender leaving now would break it). */
  get midFrame(): boolean {
    return this.#frame !== undefined;
  }

  /** Receivers that went over their share since the last call; the sender waits for them. */
  takeFull(): RoomWaiter[] {
    this.#check();
    if (this.#full.length === 0) return this.#full;
    const full = this.#full;
    this.#full = [];
    return full;
  }

  /**
   * {@linkcode FrameSink} fast path: a whole frame in one read. A small one to the cached
   * destination is queued at once, with no per-piece state and no views made (most of a 64 B
   * stream); any other goes through {@linkcode Router.header} and {@linkcode Router.payload}.
   */
  frame(
    chunk: Uint8Array,
    nameStart: number,
    nameEnd: number,
    payloadStart: number,
    length: number,
  ): void {
    const dest = this.#lastDest;
    if (
      dest === undefined || length === 0 || length >= COPY_BELOW_BYTES || dest.closed ||
      this.#lastGeneration !== this.#host.generation ||
      !bytesEqualAt(chunk, nameStart, nameEnd, this.#lastDestName)
    ) {
      if (this.#remoteFrame(chunk, nameStart, nameEnd, payloadStart, length)) return;
      this.header(chunk.subarray(nameStart, nameEnd), length);
      this.payload(
        length === 0 ? EMPTY : chunk.subarray(payloadStart, payloadStart + length),
        true,
      );
      return;
    }
    if (dest !== this.#unchecked) this.#check();
    if (dest.framed) dest.outbox.pushHeaded(this.#headers.of(length), chunk, payloadStart, length);
    else dest.outbox.pushFrame(undefined, chunk.subarray(payloadStart, payloadStart + length));
    this.#host.count("delivered", length);
    this.#unchecked = dest;
  }

  /**
   * A whole small frame to the cached remote route, copied into its pair now if it can take it
   * at once: as {@linkcode Router.header} and {@linkcode Router.payload} would, without the two
   * views they need (most of a 64 B stream between workers). False: not sent, go the long way.
   */
  #remoteFrame(
    chunk: Uint8Array,
    nameStart: number,
    nameEnd: number,
    payloadStart: number,
    length: number,
  ): boolean {
    const remote = this.#lastRemote;
    const pair = remote?.pair;
    if (
      // No `pair.reason` here (an atomic read of the pair's cell): a pair that ended refuses
      // in trySendAt, and the long way counts the drop.
      pair?.trySendAt === undefined || length === 0 || length >= COPY_BELOW_BYTES ||
      this.#lastRemoteGeneration !== this.#host.generation ||
      !bytesEqualAt(chunk, nameStart, nameEnd, this.#lastRemoteName) ||
      !pair.trySendAt(chunk, payloadStart, length)
    ) return false;
    this.#check();
    this.#host.count("delivered", length);
    return true;
  }

  /** {@linkcode FrameSink}: a frame header from this client. */
  header(name: Uint8Array, length: number): void {
    if (length === 0) {
      this.#mode = Route.Drop; // keepalive: never forwarded
      return;
    }
    // The cached remote route is checked first: while the generation (local registry and mesh
    // together) has not moved since it was filled, the name is not local either.
    const remote = this.#lastRemote;
    if (
      remote !== undefined && this.#lastRemoteGeneration === this.#host.generation &&
      remote.pair.reason === undefined && bytesEqual(name, this.#lastRemoteName)
    ) {
      this.#check();
      this.#remote = remote;
      this.#mode = Route.Remote;
      this.#frameLength = length;
      this.#wholeAt = 0;
      return;
    }
    const dest = this.#lookup(name);
    if (dest !== this.#unchecked) this.#check();
    if (dest === undefined || dest.closed) {
      if (this.#host.mesh && this.#remoteHeader(name, length, this.#host.mesh)) return;
      this.#mode = Route.Drop;
      this.#host.count("unknown_destination", length);
      this.#sender.control?.dropped(name); // opted in: tell the sender (rate-limited)
      this.#host.log.debug("Dropped {length} bytes from {name} to unknown {dest}", {
        length,
        name: this.#sender.name,
        dest: safeName(name),
      });
      return;
    }
    this.#dest = dest;
    this.#frameLength = length;
    if (length < COPY_BELOW_BYTES) {
      // Small: queued whole once complete; assembled here only if it spans reads.
      this.#mode = Route.Whole;
      this.#wholeAt = 0;
      return;
    }
    this.#mode = Route.Stream;
    // The frame is begun with its first payload piece; remember where the incoming header
    // lies, in case the outgoing one can be written over it.
    this.#nameBuffer = name.buffer;
    this.#nameStart = name.byteOffset;
  }

  /** {@linkcode FrameSink}: payload bytes of the current frame. */
  payload(bytes: Uint8Array, end: boolean): void {
    const dest = this.#dest;
    if (this.#mode === Route.Remote) return this.#remotePayload(bytes, end);
    if (this.#mode === Route.Drop || dest === undefined) return;
    const mode = this.#mode;
    if (mode === Route.Whole) {
      let payload = bytes;
      if (!end || this.#wholeAt > 0) {
        if (this.#wholeAt === 0) this.#whole = new Uint8Array(this.#frameLength);
        this.#whole.set(bytes, this.#wholeAt);
        this.#wholeAt += bytes.length;
        if (!end) return;
        payload = this.#whole;
        this.#whole = EMPTY;
      }
      // The usual case: the whole payload is in this read; copied straight into the queue.
      if (dest.framed) dest.outbox.pushHeaded(this.#headers.of(payload.length), payload);
      else dest.outbox.pushFrame(undefined, payload);
    } else {
      const piece = this.#frame === undefined ? this.#beginStream(dest, bytes) : bytes;
      const pooled = this.pooled;
      // A view pins its whole read buffer. A pooled buffer's uncovered part is charged to the
      // memory budget (its slack); an unpooled one is viewed only when the piece is at least
      // half of it, so views never pin more than twice what they count.
      if (
        piece.length < COPY_BELOW_BYTES ||
        (pooled === undefined && piece.length * 2 < piece.buffer.byteLength)
      ) {
        dest.outbox.append(this.#frame!, piece.slice(), end);
      } else {
        if (pooled) pooled.retain(piece.length);
        else this.retained = true;
        dest.outbox.append(this.#frame!, piece, end, pooled);
      }
      if (end) this.#frame = undefined;
    }
    if (end) {
      // A receiver that ended while the frame arrived got none of it (or a broken part).
      if (dest.closed) {
        this.#host.count("receiver_gone", this.#frameLength);
        this.#sender.control?.lost(); // opted in: its next pong counts it in `dropped`
      } else {
        this.#host.count("delivered", this.#frameLength);
      }
      this.#dest = undefined;
      this.#mode = Route.Drop;
    }
    if (mode === Route.Stream) this.#checkDest(dest);
    // Small frames: checked once the sender moves on to another receiver or the read is
    // routed, not after every frame (a queue only grows while a read is routed, so the
    // outcome is the same; a check per 64 B frame was a few % of the profile).
    else this.#unchecked = dest;
  }

  /** Checks the receiver of the last small frames against its share. */
  #check(): void {
    const dest = this.#unchecked;
    if (dest === undefined) return;
    this.#unchecked = undefined;
    this.#checkDest(dest);
  }

  #checkDest(dest: Connection): void {
    const outbox = dest.outbox;
    if (outbox.overBudget(this.#sender) && !this.#full.includes(outbox)) this.#full.push(outbox);
  }

  /** Begins a frame to a name held on another node; false when no node holds it. */
  #remoteHeader(name: Uint8Array, length: number, mesh: Mesh): boolean {
    const route = this.#remoteRoute(name, mesh);
    if (route === undefined) return false;
    this.#remote = route;
    this.#mode = Route.Remote;
    this.#frameLength = length;
    this.#wholeAt = 0;
    return true;
  }

  /** The pair to the node holding `name` now, opened or from the cache; undefined: nobody. */
  #remoteRoute(name: Uint8Array, mesh: Mesh): RemoteRoute | undefined {
    const generation = this.#host.generation;
    const last = this.#lastRemote;
    if (
      last !== undefined && this.#lastRemoteGeneration === generation &&
      last.pair.reason === undefined && bytesEqual(name, this.#lastRemoteName)
    ) return last;
    let text: string;
    try {
      text = strictDecoder.decode(name);
    } catch {
      return undefined; // not UTF-8: nobody can hold it
    }
    const node = mesh.holder(text);
    if (node === undefined) return undefined;
    let route = this.#pairs?.get(text);
    // The same node and a live pair: the pair stays valid even if the name changed hands
    // there, because the receiving side closes a pair as soon as its receiver lets go of the
    // name (mesh.ts), and data on a closed pair is dropped, never handed to a later holder.
    if (route === undefined || route.node !== node || route.pair.reason !== undefined) {
      if (route !== undefined) this.#retire(route);
      if (this.#pairs !== undefined && this.#pairs.size >= MAX_PAIRS_PER_SENDER) {
        this.#retire(this.#pairs.values().next().value!); // the oldest
      }
      const opened = new RemoteRoute(text, node, mesh.open(node, `${this.#sender.name}|${text}`));
      opened.pair.closed.then((reason) => this.#pairClosed(opened, reason));
      (this.#pairs ??= new Map()).set(text, opened);
      route = opened;
    }
    this.#lastRemote = route;
    this.#lastRemoteName = name.slice();
    this.#lastRemoteGeneration = generation;
    return route;
  }

  /**
   * Payload bytes of a frame to another node: streamed into a pair that offers it (the ring
   * between workers: one copy, from the read buffer into the ring, as the bytes arrive),
   * else sent once whole.
   */
  #remotePayload(bytes: Uint8Array, end: boolean): void {
    const route = this.#remote!;
    const pair = route.pair;
    if (this.#streaming) return this.#remoteStream(route, bytes, end);
    if (end && this.#wholeAt === 0) {
      // The whole payload is in this read: sent now if the pair can copy it at once.
      this.#remote = undefined;
      this.#mode = Route.Drop;
      if (pair.reason === undefined && pair.trySend(bytes)) {
        this.#host.count("delivered", bytes.length);
      } else if (
        pair.queue !== undefined && pair.reason === undefined && bytes.length < COPY_BELOW_BYTES
      ) {
        // Small: a copy in the pair's backlog (no promise per message, and the read buffer
        // is free at once); a large one is streamed from the read buffer below.
        const queued = pair.queue(bytes);
        if (queued !== undefined) this.#queued(route, queued, bytes.length);
        this.#host.count("delivered", bytes.length);
      } else if (
        pair.append !== undefined && pair.reason === undefined && bytes.length >= COPY_BELOW_BYTES
      ) {
        pair.begin!(bytes.length);
        this.#streamed(route, pair.append(bytes), bytes.length);
      } else {
        this.#sendRemote(route, bytes.slice(), 0);
      }
      return;
    }
    // Large: streamed. A small frame is assembled first, as for a local receiver: one begun on
    // a receiver's queue would hold back every frame behind it until its sender sends the rest.
    if (this.#wholeAt === 0 && pair.append !== undefined && this.#frameLength >= COPY_BELOW_BYTES) {
      if (pair.reason === undefined) {
        this.#streaming = true;
        pair.begin!(this.#frameLength);
        return this.#remoteStream(route, bytes, end);
      }
      // The pair ended before the frame began: dropped as it arrives, counted at its end.
      this.#mode = Route.Drop;
      this.#remote = undefined;
      this.#host.count("receiver_gone", this.#frameLength);
      this.#sender.control?.lost();
      return;
    }
    if (this.#wholeAt === 0) {
      this.#whole = new Uint8Array(this.#frameLength);
      if (this.#frameLength >= COPY_BELOW_BYTES && this.#host.slack) {
        this.#charged = this.#frameLength;
        this.#host.slack.chargeSlack(this.#charged);
      }
    }
    this.#whole.set(bytes, this.#wholeAt);
    this.#wholeAt += bytes.length;
    if (!end) return;
    const whole = this.#whole;
    const charged = this.#charged;
    this.#whole = EMPTY;
    this.#wholeAt = 0;
    this.#charged = 0;
    this.#remote = undefined;
    this.#mode = Route.Drop;
    this.#sendRemote(route, whole, charged);
  }

  /** A piece of a frame streamed into its pair; `end`: its last. */
  #remoteStream(route: RemoteRoute, bytes: Uint8Array, end: boolean): void {
    const sent = route.pair.append!(bytes);
    if (!end) {
      if (sent !== true && sent !== false) this.#streamed(route, sent, -1);
      return;
    }
    this.#streaming = false;
    this.#remote = undefined;
    this.#mode = Route.Drop;
    this.#streamed(route, sent, this.#frameLength);
  }

  /**
   * What a pair made of a streamed piece: counted once the last piece is taken (`length`, of
   * the whole frame; −1 for an earlier piece); while some of it waits, the reader waits too
   * (the piece is a view of its read buffer).
   */
  #streamed(route: RemoteRoute, sent: boolean | Promise<boolean>, length: number): void {
    if (sent === true || sent === false) {
      if (length >= 0) this.#countRemote(sent, length);
      return;
    }
    route.streaming++;
    const taken = sent.then((ok) => {
      route.streaming--;
      if (length >= 0) this.#countRemote(ok, length);
    });
    route.tail = taken;
    if (!this.#full.includes(route)) this.#full.push(route);
  }

  /** Counts a frame to another node as delivered, or as dropped (its receiver went away). */
  #countRemote(delivered: boolean, length: number): void {
    if (delivered) {
      this.#host.count("delivered", length);
      return;
    }
    this.#host.count("receiver_gone", length);
    this.#sender.control?.lost();
  }

  /**
   * A message the pair queued (a copy in its backlog): the reader waits for the batch, whose
   * bytes are charged to the memory budget until they are in the ring (about one read per
   * sender at most, as a local receiver's queue passes its share by at most one read).
   */
  #queued(route: RemoteRoute, batch: Promise<void>, bytes: number): void {
    route.pending++;
    const slack = this.#host.slack;
    slack?.chargeSlack(bytes);
    let held = route.batch;
    if (held === undefined || held.done !== batch) {
      const h = held = route.batch = { done: batch, messages: 0, bytes: 0 };
      route.tail = batch.then(() => {
        route.pending -= h.messages;
        slack?.chargeSlack(-h.bytes);
        if (route.batch === h) route.batch = undefined;
      });
    }
    held.messages++;
    held.bytes += bytes;
    if (!this.#full.includes(route)) this.#full.push(route);
  }

  /** Hands `message` (owned, unchanged until sent) to the pair; the reader waits for it. */
  #sendRemote(route: RemoteRoute, message: Uint8Array, charged: number): void {
    const pair = route.pair;
    if (pair.reason !== undefined) {
      if (charged > 0) this.#host.slack?.chargeSlack(-charged);
      this.#host.count("receiver_gone", message.length);
      this.#sender.control?.lost();
      return;
    }
    this.#host.count("delivered", message.length);
    route.pending++;
    const sent = pair.send(message).catch(() => {}).finally(() => {
      route.pending--;
      if (charged > 0) this.#host.slack?.chargeSlack(-charged);
    });
    route.tail = sent;
    if (!this.#full.includes(route)) this.#full.push(route);
  }

  /** A pair ended: forgotten; with data on the way, counted as a drop (and told, opted in). */
  #pairClosed(route: RemoteRoute, reason: PairCloseReason): void {
    if (this.#pairs?.get(route.name) === route) this.#pairs.delete(route.name);
    if (this.#lastRemote === route) this.#lastRemote = undefined;
    // Streamed frames are counted by their own outcome (#streamed); one the sender gave up
    // (sender_aborted) is no drop.
    if (
      CLEAN_ENDS.has(reason) || reason === "sender_aborted" ||
      (reason === "receiver_closed" && route.pending === 0)
    ) return;
    this.#host.count("receiver_gone", 0);
    this.#sender.control?.lost();
    this.#host.log.debug("Pair from {name} to {dest} on {node} ended: {reason}", {
      name: this.#sender.name,
      dest: route.name,
      node: route.node,
      reason,
    });
  }

  /** Ends a pair once every message handed to it has left (a clean end between messages). */
  #retire(route: RemoteRoute): void {
    if (this.#pairs?.get(route.name) === route) this.#pairs.delete(route.name);
    if (this.#lastRemote === route) this.#lastRemote = undefined;
    if (route.pending === 0 && route.streaming === 0) route.pair.end();
    else route.tail.then(() => route.pair.end());
  }

  /**
   * Begins a streamed frame at its first payload piece. When the incoming header sits just
   * before the piece in the read buffer and the outgoing header is no longer, the outgoing
   * one is written over it: header and payload then leave as one view, with no copy, and
   * back-to-back frames of equal-length names join into one large write.
   * @returns the bytes to queue for this piece (with the header in front when in place)
   */
  #beginStream(dest: Connection, bytes: Uint8Array): Uint8Array {
    const framed = dest.framed;
    const length = this.#frameLength;
    const headerBytes = framed ? headerLength(this.#prefix.length, length) : 0;
    const at = bytes.byteOffset - headerBytes;
    if (
      bytes.length >= COPY_BELOW_BYTES && bytes.buffer === this.#nameBuffer && at >= this.#nameStart
    ) {
      const piece = new Uint8Array(bytes.buffer, at, headerBytes + bytes.length);
      if (framed) writeHeader(piece, 0, this.#prefix, length);
      this.#frame = dest.outbox.begin(this.#sender, EMPTY);
      return piece;
    }
    this.#frame = dest.outbox.begin(
      this.#sender,
      framed ? encodeHeader(this.#prefix, length) : EMPTY,
    );
    return bytes;
  }

  /** The current holder of `name`, through the one-entry cache. */
  #lookup(name: Uint8Array): Connection | undefined {
    const generation = this.#host.generation;
    const last = this.#lastDest;
    if (
      last !== undefined && this.#lastGeneration === generation &&
      bytesEqual(name, this.#lastDestName)
    ) return last;
    const dest = this.#host.lookup(name);
    if (dest !== undefined) {
      this.#lastDest = dest;
      // The receiver's own name bytes when they match (they do once it is registered): no
      // copy per sender that keeps a destination cached.
      const own = dest.nameBytes;
      this.#lastDestName = bytesEqual(own, name) ? own : name.slice();
      this.#lastGeneration = generation;
    }
    return dest;
  }

  /**
   * Lets go of the encoded header of this sender's last frame size (made again on its next
   * frame): a client that sent one message keeps no buffer for it while it idles.
   */
  trim(): void {
    this.#headers.clear();
  }

  /** Forgets the cached destination (the sender ends; the cache must not pin a receiver). */
  forget(): void {
    this.#lastDest = undefined;
    this.#lastGeneration = -1;
    this.#lastRemote = undefined;
    if (this.#pairs) { for (const route of [...this.#pairs.values()]) this.#retire(route); }
  }

  /** Gives up the frame this client was streaming or assembling, if any. */
  abortFrame(): void {
    const frame = this.#frame;
    const dest = this.#dest;
    this.#frame = undefined;
    this.#dest = undefined;
    this.#whole = EMPTY;
    this.#wholeAt = 0;
    this.#mode = Route.Drop;
    // A frame being streamed to another node is given up there; an assembled one was never
    // handed over: nothing to undo.
    if (this.#streaming) this.#remote?.pair.abandon?.();
    this.#streaming = false;
    this.#remote = undefined;
    if (this.#charged > 0) this.#host.slack?.chargeSlack(-this.#charged);
    this.#charged = 0;
    if (frame === undefined || dest === undefined) return;
    if (!dest.outbox.abort(frame)) {
      // Part of the frame is already on the receiver's wire: its stream cannot be repaired.
      dest.close("sender_aborted", `Sender ${this.#sender.name} left in the middle of a message`);
    }
  }
}

/** Whether `bytes[start, end)` equals `other`, compared in place (no view made per frame). */
function bytesEqualAt(bytes: Uint8Array, start: number, end: number, other: Uint8Array): boolean {
  if (end - start !== other.length) return false;
  for (let i = 0; i < other.length; i++) if (bytes[start + i] !== other[i]) return false;
  return true;
}

const lossyDecoder = new TextDecoder();

/**
 * A name from the wire as a log property. Not quoted here: the text log format quotes strings
 * with spaces or control characters, and JSON lines quote every string once.
 */
function safeName(bytes: Uint8Array): string {
  return lossyDecoder.decode(bytes);
}
