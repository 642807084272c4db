/**
 * Types of the relay's browser client (`client.js`).
 * @module
 */

/** Control-channel version spoken. */
export declare const CONTROL_VERSION: 1;
/** Bytes sent between ping barriers (flow control). */
export declare const WINDOW_BYTES: number;
/** Largest WebSocket message sent. */
export declare const CHUNK_BYTES: number;

/** Options of {@linkcode RelayWebClient.connect}. */
export interface RelayWebClientOptions {
  /** Name to register: 1–255 bytes of UTF-8 without `|`, `:` or control characters. */
  name: string;
  /** Token for a name the relay's auth file owns. */
  token?: string;
  /**
   * The relay's WebSocket, e.g. `wss://relay.example.org/ws`.
   * @default the page's own server, `/ws`
   */
  url?: string;
  /**
   * Reconnect (and register again) after the connection drops, unless the relay refused.
   * @default {true}
   */
  reconnect?: boolean;
  /**
   * Time allowed to connect and register, and for each request's answer.
   * @default {10000}
   */
  timeoutMs?: number;
  /**
   * Keep messages for `receive()`; set false when only `message` events are used.
   * @default {true}
   */
  queue?: boolean;
  /** A WebSocket class other than the global one. */
  WebSocket?: typeof WebSocket;
}

/** The relay's `welcome`. */
export interface Welcome {
  op: "welcome";
  v: number;
  relay: string;
  limits: {
    max_message_bytes: number;
    max_control_bytes: number;
    register_timeout_ms: number;
    idle_timeout_ms: number;
    keepalive_ms: number;
  };
  names_owned: boolean;
  listing: boolean;
  deliver: "framed";
}

/** A control `error` event: a message that could not be delivered. */
export interface DeliveryError {
  op: "error";
  reason: string;
  dest?: string;
  count?: number;
  size?: number;
  limit?: number;
  message?: string;
}

/** An error the relay reported, or a closed connection (`reason` is `closed`). */
export declare class RelayError extends Error {
  constructor(reason: string, message?: string);
  /** The machine-readable reason. */
  readonly reason: string;
}

/** A message received from another client. */
export declare class RelayMessage {
  constructor(from: string, payload: Uint8Array);
  /** The sender's name. */
  readonly from: string;
  /** The payload bytes. */
  readonly payload: Uint8Array;
  /** When it arrived, ms since the epoch. */
  readonly receivedAt: number;
  /** The payload as UTF-8 text. */
  text(): string;
  /** Whether the payload is printable UTF-8. */
  isText(): boolean;
}

/** A relay connection over WebSocket; see `client.js` for the events. */
export declare class RelayWebClient extends EventTarget {
  /** Connects and registers; rejects with a {@linkcode RelayError} when refused. */
  static connect(options: RelayWebClientOptions): Promise<RelayWebClient>;
  private constructor(options: RelayWebClientOptions);
  /** The registered name. */
  readonly name: string;
  /** The relay's welcome, once connected. */
  readonly welcome: Welcome | undefined;
  /** Whether the connection is open and registered. */
  readonly connected: boolean;
  /** Sends text (UTF-8) or bytes to `dest`. */
  send(dest: string, data: string | Uint8Array | ArrayBuffer | Blob): Promise<void>;
  /** Waits until everything sent before has been routed. */
  ping(): Promise<{ time: number; dropped: number }>;
  /** Names online. */
  who(query?: { prefix?: string; after?: string; limit?: number }): Promise<{
    names: string[];
    more: boolean;
  }>;
  /** Watches names; resolves to those online now. */
  watch(names: string[]): Promise<string[]>;
  /** Stops watching names. */
  unwatch(names: string[]): Promise<void>;
  /** The next message, or undefined once closed. */
  receive(): Promise<RelayMessage | undefined>;
  /** Messages as they arrive. */
  [Symbol.asyncIterator](): AsyncIterator<RelayMessage>;
  /** Closes; no reconnect. */
  close(): void;
}

/** Formats bytes as a hex dump. */
export declare function hexDump(bytes: Uint8Array, max?: number): string;
