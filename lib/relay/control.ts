/**
 * The relay side of the control channel: one {@linkcode ControlSession} per opted-in
 * connection, and the {@linkcode ControlHub} they share (welcome, presence, directory).
 *
 * ```
 * first byte `|` ─► hello ─► welcome ─► register ─► registered | refused + close
 *                 ─► data plane and requests: ping → pong, who → names, watch → watching …
 *                 ─► bye ─► close                          (the relay's own reasons)
 * ```
 *
 * Every reply goes to the requester's own outbox; a client whose requests take its outbox over
 * its budget is paused like any sender, and `who` requests past the budget wait their turn.
 * Seed clients never reach this module.
 * @module
 */

import type { Logger } from "@logtape/logtape";
import type { Outbox } from "../io/outbox.ts";
import {
  BYE_LINGER_MS,
  ERROR_EVENT_INTERVAL_MS,
  MAX_CONTROL_BYTES,
  MAX_ERROR_DESTINATIONS,
  MAX_REFUSE_PEEKS,
  REFUSE_PEEK_MS,
} from "../limits.ts";
import {
  CONTROL_VERSION,
  ControlError,
  controlFrameSize,
  type ControlRequest,
  decodeRequest,
  encodeControl,
  parseControlFrame,
  type RequestId,
  type WelcomeEvent,
} from "../wire/control.ts";
import {
  DISCONNECT_REASONS,
  type DisconnectReason,
  REGISTRATION_REASONS,
  type RegistrationReason,
} from "../wire/reasons.ts";
import { encodeName, encodeRegister, type FrameSink, ProtocolError, SEP } from "../wire/relay.ts";
import { Directory } from "./directory.ts";
import { Presence, type Watcher } from "./presence.ts";
import { closeQuietly } from "../util/io.ts";

export { BYE_LINGER_MS };

/** Options of a {@linkcode ControlHub}: what the relay announces and where names come from. */
export interface ControlHubOptions {
  /** Relay software version for `welcome`. */
  relayVersion: string;
  /** The message limit in force. */
  maxMessageBytes: number;
  /** Per-receiver budget; presence events past twice it close the watcher. */
  maxBufferBytes: number;
  /** Register timeout in force (0: off). */
  registerTimeoutMs: number;
  /** Idle timeout in force (0: off). */
  idleTimeoutMs: number;
  /** The relay has an auth file. */
  namesOwned: boolean;
  /** Whether `who` is allowed. */
  listing: boolean;
  /** The names registered now. */
  names: () => Iterable<string>;
  /** Moves when names held elsewhere change (a mesh), so the directory never answers stale. */
  namesGeneration?: () => number;
  /** Whether a name is registered now. */
  isOnline: (name: string) => boolean;
  /**
   * Tells every presence event of changes made elsewhere so far (a mesh whose events come
   * later, `Mesh.sync`): called before a pong and a watch reply, which follow those events.
   */
  sync?: () => void;
}

/** What every control session of one relay shares. */
export class ControlHub {
  /** The encoded `welcome` frame, the same for every client. */
  readonly welcome: Uint8Array;
  /** Whether `who` is allowed. */
  readonly listing: boolean;
  /** The message limit in force. */
  readonly maxMessageBytes: number;
  /** Per-receiver budget. */
  readonly maxBufferBytes: number;
  /** Watch lists. */
  readonly presence: Presence<ControlSession> = new Presence();
  /** Sorted names for `who`. */
  readonly directory: Directory;
  /** Whether a name is registered now. */
  readonly isOnline: (name: string) => boolean;
  /** Answers connections refused at accept. */
  readonly refuser: Refuser = new Refuser();
  /** Tells the presence events of changes made elsewhere so far (see the options). */
  readonly sync: () => void;

  /** @param options what to announce */
  constructor(options: ControlHubOptions) {
    const idle = options.idleTimeoutMs;
    const welcome: WelcomeEvent = {
      op: "welcome",
      v: CONTROL_VERSION,
      relay: options.relayVersion,
      limits: {
        max_message_bytes: options.maxMessageBytes,
        max_control_bytes: MAX_CONTROL_BYTES,
        register_timeout_ms: options.registerTimeoutMs,
        idle_timeout_ms: idle,
        keepalive_ms: idle > 0 ? Math.max(1, Math.floor(idle / 3)) : 0,
      },
      names_owned: options.namesOwned,
      listing: options.listing,
      deliver: "framed",
    };
    this.welcome = encodeControl(welcome);
    this.listing = options.listing;
    this.maxMessageBytes = options.maxMessageBytes;
    this.maxBufferBytes = options.maxBufferBytes;
    this.directory = new Directory(options.names, options.namesGeneration);
    this.isOnline = options.isOnline;
    this.sync = options.sync ?? (() => {});
  }

  /** `name` was registered. */
  online(name: string): void {
    this.directory.changed();
    this.presence.online(name);
  }

  /** `name` was freed. */
  offline(name: string): void {
    this.directory.changed();
    this.presence.offline(name);
  }

  /** Ends pending refusals (server shutdown); resolves once they are closed. */
  close(): Promise<void> {
    return this.refuser.close();
  }
}

/** What a control session needs from its connection. */
export interface ControlPeer {
  /** The connection itself: the owner its outbox waits are keyed by. */
  readonly owner: unknown;
  /** The connection's send queue. */
  readonly outbox: Outbox;
  /** Whether the connection has ended. */
  isClosed(): boolean;
  /** Registered name, once registered. */
  registeredName(): string | undefined;
  /** Reads from the socket; null at end of input. */
  read(buf: Uint8Array): Promise<number | null>;
  /** Notes activity (for the idle timeout). */
  touch(): void;
  /** Registration rate and ownership; a refusal reason or nothing. */
  admit(name: string, token: string | undefined): Promise<DisconnectReason | undefined>;
  /**
   * Claims the name: false when taken; with a mesh, a promise of `true` or the refusal (the
   * name is claimed there too).
   */
  claim(name: string): boolean | Promise<true | "name_taken" | "cluster_unavailable">;
  /** Ends the connection. */
  close(reason: DisconnectReason, detail?: string): void;
  /** Logger, and who this is in log lines. */
  readonly log: Logger;
  readonly id: number;
  readonly remote: string;
}

const EMPTY = new Uint8Array(0);
const lossy = new TextDecoder();
/** First buffer of the pre-registration reader; grown to a whole frame when needed. */
const FIRST_BUFFER_BYTES = 1024;

/** How a refusal reason ends the connection, as counted in the disconnect stats. */
const REFUSAL_DISCONNECT: Record<RegistrationReason, DisconnectReason> = {
  name_taken: "name_taken",
  invalid_name: "bad_registration",
  auth_required: "unauthorized",
  bad_token: "unauthorized",
  rate_limited: "rate_limited",
  too_many_connections: "bad_registration",
  too_many_connections_per_ip: "bad_registration",
  unsupported_version: "bad_registration",
  register_timeout: "register_timeout",
  cluster_unavailable: "cluster_unavailable",
};

/** Reasons that get no `bye`: the client left, or its stream cannot take one more frame. */
const NO_BYE = new Set<DisconnectReason>([
  "client_closed",
  "connection_error",
  "slow_consumer",
  "sender_aborted",
]);

const enum Mode {
  Data,
  Control,
  Skip,
}

/** The control channel of one opted-in connection. */
export class ControlSession implements Watcher {
  readonly #hub: ControlHub;
  readonly #peer: ControlPeer;
  #hello = false;
  /** A `bye` or `refused` is queued: the connection is about to close. */
  #said = false;
  /** Messages dropped since the last pong. */
  #dropped = 0;
  // Delivery-error rate limit: one event per destination per window, 64 destinations.
  #windowStart = Number.NEGATIVE_INFINITY;
  #told = new Set<string>();
  #held = new Map<string, number>();
  // Requests waiting for room in the outbox (only `who` starts a wait), in order.
  #pending: ControlRequest[] = [];
  #pendingAt = 0;
  #asked = false;
  // The control frame being read after registration.
  #mode = Mode.Data;
  #buf: Uint8Array = EMPTY;
  #at = 0;
  #length = 0;

  /**
   * @param hub what the relay's sessions share
   * @param peer the connection
   */
  constructor(hub: ControlHub, peer: ControlPeer) {
    this.#hub = hub;
    this.#peer = peer;
  }

  /**
   * Runs the connection until it is registered: reads control frames (the first is `hello`),
   * answers them, registers. Data frames before registration are a protocol error.
   * @param first the bytes read so far (they start with `|`)
   * @returns the bytes after the request that registered, or undefined once closed
   * @throws {ControlError} on a broken control frame (a `bye` is queued first)
   */
  async register(first: Uint8Array): Promise<Uint8Array | undefined> {
    const peer = this.#peer;
    let buf = new Uint8Array(Math.max(FIRST_BUFFER_BYTES, first.length));
    buf.set(first);
    let have = first.length;
    for (;;) {
      let at = 0;
      for (;;) {
        let frame;
        try {
          frame = parseControlFrame(buf.subarray(at, have));
        } catch (error) {
          throw this.#badControl(
            buf[at] === SEP ? (error as Error).message : "Only control requests before registering",
          );
        }
        if (frame === undefined) break;
        at += frame.consumed;
        if (frame.payload.length === 0) continue; // `|0|`: a keepalive
        const registered = await this.#preRequest(frame.payload);
        if (peer.isClosed()) return undefined;
        if (registered) return buf.slice(at, have);
      }
      buf.copyWithin(0, at, have);
      have -= at;
      const need = controlFrameSize(buf.subarray(0, have)) ?? 0;
      if (need > buf.length) {
        const grown = new Uint8Array(need);
        grown.set(buf.subarray(0, have));
        buf = grown;
      }
      // Replies count against this client's budget: one that asks and never reads waits.
      if (peer.outbox.overBudget(peer.owner)) await peer.outbox.waitForRoom(peer.owner);
      if (peer.isClosed()) return undefined;
      const n = await peer.read(buf.subarray(have));
      if (peer.isClosed()) return undefined;
      if (n === null) {
        peer.close("client_closed", "Closed before registering");
        return undefined;
      }
      have += n;
      peer.touch();
    }
  }

  /** Handles a request before registration; true once registered. */
  async #preRequest(payload: Uint8Array): Promise<boolean> {
    const request = this.#decode(payload);
    if (request === undefined) return false;
    if (!this.#hello && request.op !== "hello") {
      throw this.#badControl("The first request must be hello");
    }
    switch (request.op) {
      case "hello": {
        if (this.#hello) {
          this.#error(request.id, "bad_request", "Hello was already received");
          return false;
        }
        if (request.v !== CONTROL_VERSION) {
          this.#refuse(
            "unsupported_version",
            request.v === undefined
              ? `The hello has no v; this relay speaks control version ${CONTROL_VERSION}`
              : `This relay speaks control version ${CONTROL_VERSION}, not ${
                JSON.stringify(request.v)
              }`,
            request.id,
          );
          return false;
        }
        this.#hello = true;
        this.#peer.outbox.push(this.#hub.welcome);
        if (request.client !== undefined) {
          this.#peer.log.debug("Connection {id} ({remote}) is {client}", {
            id: this.#peer.id,
            remote: this.#peer.remote,
            client: request.client,
          });
        }
        if (request.name === undefined) return false;
        return await this.#register(request.name, request.token, request.id);
      }
      case "register":
        return await this.#register(request.name, request.token, request.id);
      case "ping":
        this.#pong(request.id);
        return false;
      case "unknown":
        this.#error(request.id, "unknown_op", `Unknown op ${JSON.stringify(request.name)}`);
        return false;
      default:
        this.#error(request.id, "not_registered", "Register first");
        return false;
    }
  }

  /** Registers `name`; answers `registered`, or `refused` and closes. True when registered. */
  async #register(name: string, token: string | undefined, id: RequestId | undefined) {
    const peer = this.#peer;
    try {
      encodeName(name);
    } catch (error) {
      this.#refuse("invalid_name", (error as Error).message, id);
      return false;
    }
    if (token !== undefined) {
      try {
        encodeRegister(name, token);
      } catch {
        this.#refuse("bad_token", "The token is not valid", id);
        return false;
      }
    }
    const verdict = await peer.admit(name, token);
    if (peer.isClosed()) return false;
    if (verdict === "rate_limited") {
      this.#refuse("rate_limited", REGISTRATION_REASONS.rate_limited, id);
      return false;
    }
    if (verdict !== undefined) {
      const reason = token === undefined ? "auth_required" : "bad_token";
      this.#refuse(reason, `${REGISTRATION_REASONS[reason]} for ${JSON.stringify(name)}`, id);
      return false;
    }
    const claim = peer.claim(name);
    // With a mesh the claim is asked of the cluster too.
    const claimed = typeof claim === "boolean" ? claim : await claim;
    if (peer.isClosed()) return false;
    if (claimed === "cluster_unavailable") {
      this.#refuse(
        "cluster_unavailable",
        `The name ${JSON.stringify(name)} could not be claimed in the cluster`,
        id,
      );
      return false;
    }
    if (claimed !== true) {
      this.#refuse("name_taken", `The name ${JSON.stringify(name)} is already registered`, id);
      return false;
    }
    // In the same turn as the claim: nothing can be delivered to the name before this.
    this.#send({ op: "registered", id, name });
    return true;
  }

  /** Sends `refused` and closes the connection. */
  #refuse(reason: RegistrationReason, message: string, id?: RequestId): void {
    this.#send({ op: "refused", id, reason, message });
    this.#said = true;
    this.#peer.close(REFUSAL_DISCONNECT[reason], message);
  }

  /**
   * The frame sink of a registered connection: control frames are read here, data frames go
   * to `data`. Checks the message limit itself so the sender learns the destination and size.
   */
  sink(data: FrameSink): FrameSink {
    return {
      header: (name, length) => {
        if (name.length > 0) {
          if (length > this.#hub.maxMessageBytes) this.#tooLarge(name, length);
          this.#mode = Mode.Data;
          data.header(name, length);
          return;
        }
        if (length === 0) {
          this.#mode = Mode.Skip; // `|0|`: a keepalive
          return;
        }
        if (length > MAX_CONTROL_BYTES) {
          throw this.#badControl(`Control payload is over ${MAX_CONTROL_BYTES} bytes`);
        }
        this.#mode = Mode.Control;
        this.#at = 0;
        this.#length = length;
        this.#buf = EMPTY;
      },
      payload: (bytes, end) => {
        if (this.#mode === Mode.Data) return data.payload(bytes, end);
        if (this.#mode === Mode.Skip) return;
        if (end && this.#at === 0) return this.#request(bytes);
        // Spans reads: assembled here (at most MAX_CONTROL_BYTES, checked at the header).
        if (this.#buf === EMPTY) this.#buf = new Uint8Array(this.#length);
        this.#buf.set(bytes, this.#at);
        this.#at += bytes.length;
        if (!end) return;
        const payload = this.#buf.subarray(0, this.#at);
        this.#buf = EMPTY;
        this.#request(payload);
      },
    };
  }

  /** Sends `message_too_large` and stops the parser; the connection then says bye. */
  #tooLarge(name: Uint8Array, length: number): never {
    const limit = this.#hub.maxMessageBytes;
    this.#send({
      op: "error",
      reason: "message_too_large",
      dest: lossy.decode(name),
      size: length,
      limit,
      message: `Message of ${length} bytes is larger than the limit of ${limit} bytes`,
    });
    throw new ProtocolError(
      "message_too_large",
      `Message is larger than the limit of ${limit} bytes`,
    );
  }

  /** A request after registration. */
  #request(payload: Uint8Array): void {
    const request = this.#decode(payload);
    if (request === undefined) return;
    this.#asked = true;
    if (
      this.#pendingAt < this.#pending.length ||
      (request.op === "who" && this.#peer.outbox.overBudget(this.#peer.owner))
    ) {
      // Large replies wait for room; what follows waits behind them, to keep the order.
      this.#pending.push(request);
      return;
    }
    this.#handle(request);
  }

  /** Whether the connection must wait for {@linkcode ControlSession.settle} before reading on. */
  get busy(): boolean {
    return this.#asked || this.#pendingAt < this.#pending.length;
  }

  /**
   * Answers the requests that waited for room, and waits while this client's own outbox is
   * over budget after it asked something (a client that asks and never reads is paused).
   */
  async settle(): Promise<void> {
    const peer = this.#peer;
    this.#asked = false;
    while (this.#pendingAt < this.#pending.length) {
      await peer.outbox.waitForRoom(peer.owner);
      if (peer.isClosed()) break;
      const request = this.#pending[this.#pendingAt];
      this.#pending[this.#pendingAt++] = undefined as unknown as ControlRequest;
      this.#handle(request);
    }
    this.#pending = [];
    this.#pendingAt = 0;
    if (!peer.isClosed() && peer.outbox.overBudget(peer.owner)) {
      await peer.outbox.waitForRoom(peer.owner);
    }
  }

  #handle(request: ControlRequest): void {
    const id = request.id;
    switch (request.op) {
      case "ping":
        return this.#pong(id);
      case "who": {
        if (!this.#hub.listing) {
          return this.#error(id, "listing_disabled", "Listing names is turned off on this relay");
        }
        const page = this.#hub.directory.page(request);
        return this.#send({ op: "names", id, names: page.names, more: page.more });
      }
      case "watch": {
        for (const name of request.names) {
          try {
            encodeName(name);
          } catch (error) {
            return this.#error(id, "bad_request", (error as Error).message);
          }
        }
        this.#hub.sync(); // the reply and the events after it tell one story
        if (!this.#hub.presence.watch(this, request.names)) {
          return this.#error(id, "too_many_watches", "Too many watched names");
        }
        const online = [...new Set(request.names)].filter(this.#hub.isOnline);
        return this.#send({ op: "watching", id, online });
      }
      case "unwatch":
        this.#hub.presence.unwatch(this, request.names);
        return this.#send({ op: "unwatched", id });
      case "hello":
        return this.#error(id, "bad_request", "Hello was already received");
      case "register":
        return this.#error(
          id,
          "bad_request",
          `Already registered as ${this.#peer.registeredName()}`,
        );
      case "unknown":
        return this.#error(id, "unknown_op", `Unknown op ${JSON.stringify(request.name)}`);
    }
  }

  /** Decodes a request; answers `bad_request` itself (undefined then). */
  #decode(payload: Uint8Array): ControlRequest | undefined {
    try {
      return decodeRequest(payload);
    } catch (error) {
      if (!(error instanceof ControlError)) throw error;
      if (error.code === "bad_control") throw this.#badControl(error.message);
      this.#error(error.id, "bad_request", error.message);
      return undefined;
    }
  }

  /** Queues `bye` with reason `bad_control`; returns the error to throw. */
  #badControl(message: string): ControlError {
    this.#send({ op: "bye", reason: "bad_control", message });
    this.#said = true;
    return new ControlError("bad_control", message);
  }

  #pong(id: RequestId | undefined): void {
    this.#hub.sync(); // events of changes made before the ping come before its pong
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#send({ op: "pong", id, time: Date.now(), dropped });
  }

  #error(id: RequestId | undefined, reason: string, message: string): void {
    this.#send({ op: "error", id, reason, message });
  }

  #send(message: Record<string, unknown>): void {
    this.#peer.outbox.push(encodeControl(message));
  }

  /**
   * A message of this client was dropped because its receiver left before it was complete
   * (`receiver_gone`): counted for the next pong. No event: the receiver did exist, and the
   * sender learns of its going from presence if it watches.
   */
  lost(): void {
    this.#dropped++;
  }

  /**
   * A message of this client went to a name nobody holds: counted for the next pong, and
   * reported at most once per destination per second, for at most 64 destinations a second.
   */
  dropped(name: Uint8Array): void {
    this.#dropped++;
    const now = performance.now();
    if (now - this.#windowStart >= ERROR_EVENT_INTERVAL_MS) {
      this.#windowStart = now;
      this.#told.clear();
    }
    const dest = lossy.decode(name);
    if (this.#told.has(dest)) {
      // Held back; the next event about this destination carries the count.
      if (this.#held.has(dest) || this.#held.size < MAX_ERROR_DESTINATIONS * 2) {
        this.#held.set(dest, (this.#held.get(dest) ?? 0) + 1);
      }
      return;
    }
    if (this.#told.size >= MAX_ERROR_DESTINATIONS) return; // only counted in `dropped`
    this.#told.add(dest);
    const count = 1 + (this.#held.get(dest) ?? 0);
    this.#held.delete(dest);
    this.#send({
      op: "error",
      reason: "unknown_destination",
      dest,
      count,
      message: `No client has the name ${JSON.stringify(dest)}`,
    });
  }

  /** {@linkcode Watcher}: a watched name came or went. */
  notify(event: "online" | "offline", name: string): void {
    const peer = this.#peer;
    if (peer.isClosed()) return;
    if (peer.outbox.queuedBytes > 2 * this.#hub.maxBufferBytes) {
      // It reads nothing; presence must not grow its queue without bound.
      peer.close("slow_consumer", "Presence events are not read");
      return;
    }
    this.#send({ op: event, name });
  }

  /**
   * The connection is closing for `reason`: queues `bye` (or `refused` for a registration
   * timeout) when the client can still take it.
   * @returns true when something was queued, so the socket should linger until it is written
   */
  farewell(reason: DisconnectReason, detail?: string): boolean {
    this.#hub.presence.remove(this);
    if (this.#said) return true;
    if (NO_BYE.has(reason)) return false;
    const peer = this.#peer;
    if (peer.outbox.overBudget(peer.owner)) return false;
    this.#said = true;
    if (reason === "register_timeout" && peer.registeredName() === undefined) {
      this.#send({
        op: "refused",
        reason: "register_timeout",
        message: REGISTRATION_REASONS.register_timeout,
      });
      return true;
    }
    const message = reason === "protocol_error" && detail
      ? detail
      : (DISCONNECT_REASONS as Record<string, string>)[reason] ?? reason;
    this.#send({ op: "bye", reason, message });
    return true;
  }
}

/**
 * Answers connections refused at accept: one whose first byte is `|` (an opted-in client) gets
 * a `refused` frame before the close; a seed client is closed without a word, as before. Each
 * waits at most {@linkcode REFUSE_PEEK_MS}, and at most {@linkcode MAX_REFUSE_PEEKS} wait at
 * once (the rest are closed at once), so a flood cannot hold descriptors.
 */
export class Refuser {
  readonly #waiting = new Set<{ close(): void }>();
  readonly #tasks = new Set<Promise<void>>();

  /** Refuses `conn` for `reason` and closes it. Never throws. */
  refuse(
    conn: { read(p: Uint8Array): Promise<number | null>; write(p: Uint8Array): Promise<number> } & {
      close(): void;
    },
    reason: RegistrationReason,
  ): void {
    if (this.#waiting.size >= MAX_REFUSE_PEEKS) return closeQuietly(conn);
    const entry = { close: () => closeQuietly(conn) };
    this.#waiting.add(entry);
    const timer = setTimeout(entry.close, REFUSE_PEEK_MS);
    const task = (async () => {
      try {
        const first = new Uint8Array(1);
        const n = await conn.read(first);
        if (n === 1 && first[0] === SEP && this.#waiting.has(entry)) {
          const frame = encodeControl({
            op: "refused",
            reason,
            message: REGISTRATION_REASONS[reason],
          });
          // A fresh socket's send buffer takes this at once; the timer bounds it anyway.
          for (let at = 0; at < frame.length;) at += await conn.write(frame.subarray(at));
        }
      } catch {
        // Closed by the timer, or gone.
      } finally {
        clearTimeout(timer);
        this.#waiting.delete(entry);
        entry.close();
      }
    })();
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  /** Closes every connection still waiting; resolves once their tasks are done. */
  async close(): Promise<void> {
    for (const entry of [...this.#waiting]) entry.close();
    await Promise.allSettled([...this.#tasks]);
  }
}
