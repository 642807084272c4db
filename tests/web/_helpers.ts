/**
 * Test helpers for the HTTP side: a relay with its web server on port 0, and a WebSocket peer
 * that reads the relay byte stream exactly as it arrives.
 * @module
 */

import { RelayServer, type RelayServerOptions } from "../../lib/relay/server.ts";
import { WebServer, type WebServerOptions } from "../../lib/web/server.ts";

/** A relay and its web server, closed together (web first). */
export interface WebRelay extends AsyncDisposable {
  relay: RelayServer;
  web: WebServer;
  /** `http://127.0.0.1:PORT` of the web server. */
  base: string;
  /** `ws://127.0.0.1:PORT/ws`. */
  wsUrl: string;
}

/** Starts a relay on 127.0.0.1:0 and its web server on 127.0.0.1:0. */
export async function startWebRelay(
  relayOptions: RelayServerOptions = {},
  webOptions: Omit<WebServerOptions, "relay" | "port"> = {},
): Promise<WebRelay> {
  const relay = await RelayServer.listen({ hostname: "127.0.0.1", port: 0, ...relayOptions });
  let web: WebServer;
  try {
    web = await WebServer.listen({
      relay,
      hostname: "127.0.0.1",
      port: 0,
      maxBufferBytes: relayOptions.maxBufferBytes,
      maxMessageBytes: relayOptions.maxMessageBytes,
      maxConnections: relayOptions.maxConnections,
      ...webOptions,
    });
  } catch (error) {
    await relay.close();
    throw error;
  }
  return {
    relay,
    web,
    base: `http://127.0.0.1:${web.port}`,
    wsUrl: `ws://127.0.0.1:${web.port}/ws`,
    async [Symbol.asyncDispose]() {
      await web.close();
      await relay.close();
    },
  };
}

/** A WebSocket to `/ws` whose received bytes are kept as one stream. */
export class WsPeer implements AsyncDisposable {
  readonly socket: WebSocket;
  #buffered = new Uint8Array(0);
  #closed = false;
  /** The close code, once closed. */
  closeCode: number | undefined;
  #changed: (() => void) | undefined;
  readonly #closedPromise: Promise<void>;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => {
      const data = typeof event.data === "string"
        ? new TextEncoder().encode(event.data)
        : new Uint8Array(event.data as ArrayBuffer);
      const merged = new Uint8Array(this.#buffered.length + data.length);
      merged.set(this.#buffered);
      merged.set(data, this.#buffered.length);
      this.#buffered = merged;
      this.#changed?.();
    });
    this.#closedPromise = new Promise((resolve) => {
      socket.addEventListener("close", (event) => {
        this.#closed = true;
        this.closeCode = event.code;
        this.#changed?.();
        resolve();
      });
    });
  }

  /** Opens `url` and waits until it is open. */
  static async open(url: string): Promise<WsPeer> {
    const socket = new WebSocket(url);
    const peer = new WsPeer(socket);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener("open", () => resolve(), { once: true });
      socket.addEventListener("error", () => reject(new Error(`Cannot open ${url}`)), {
        once: true,
      });
    });
    return peer;
  }

  /** Sends bytes (or text as UTF-8) as one binary message. */
  send(data: string | Uint8Array): void {
    this.socket.send(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** Reads exactly `n` bytes, or throws after `timeoutMs` or on close. */
  async read(n: number, timeoutMs = 5_000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buffered.length < n) {
      if (this.#closed) throw new Error(`Closed after ${this.#buffered.length} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out after ${this.#buffered.length} of ${n} bytes`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#changed = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#changed = undefined;
    }
    const out = this.#buffered.slice(0, n);
    this.#buffered = this.#buffered.slice(n);
    return out;
  }

  /** Reads `expected`'s length and returns it as text. */
  async readText(length: number, timeoutMs?: number): Promise<string> {
    return new TextDecoder().decode(await this.read(length, timeoutMs));
  }

  /** Waits until the relay closes the socket; throws after `timeoutMs`. */
  async closed(timeoutMs = 5_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("Still open")), timeoutMs);
    });
    try {
      await Promise.race([this.#closedPromise, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the socket and waits for the close to finish. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#closed) {
      this.socket.close();
      await this.closed().catch(() => {});
    }
  }
}

/** Fetches `url` and returns status and body text (the body is always consumed). */
export async function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; headers: Headers }> {
  const response = await fetch(url, { headers });
  return { status: response.status, body: await response.text(), headers: response.headers };
}

/**
 * Opens a WebSocket by hand on a raw TCP socket (to send any `Origin`, or to stop reading):
 * returns the socket after the server's answer, and the status code of that answer.
 */
export async function rawWebSocket(
  port: number,
  headers: Record<string, string> = {},
): Promise<{ conn: Deno.TcpConn; status: number; rest: Uint8Array }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = [
    "GET /ws HTTP/1.1",
    `Host: 127.0.0.1:${port}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  await conn.write(new TextEncoder().encode(lines.join("\r\n") + "\r\n\r\n"));
  let got = new Uint8Array(0);
  const deadline = Date.now() + 5_000;
  for (;;) {
    const end = indexOfHeaderEnd(got);
    if (end >= 0) {
      const head = new TextDecoder().decode(got.subarray(0, end));
      return { conn, status: Number(head.split(" ")[1]), rest: got.slice(end + 4) };
    }
    if (Date.now() > deadline) throw new Error("No HTTP answer");
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    if (n === null) throw new Error("Closed before the HTTP answer");
    const merged = new Uint8Array(got.length + n);
    merged.set(got);
    merged.set(buf.subarray(0, n), got.length);
    got = merged;
  }
}

function indexOfHeaderEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

/** One masked client-to-server binary WebSocket frame carrying `payload`. */
export function maskedFrame(payload: Uint8Array): Uint8Array {
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const n = payload.length;
  const head = n < 126 ? [0x82, 0x80 | n] : n < 65536 ? [0x82, 0x80 | 126, n >> 8, n & 0xff] : [
    0x82,
    0x80 | 127,
    0,
    0,
    0,
    0,
    (n >>> 24) & 0xff,
    (n >> 16) & 0xff,
    (n >> 8) & 0xff,
    n & 0xff,
  ];
  const out = new Uint8Array(head.length + 4 + n);
  out.set(head);
  out.set(mask, head.length);
  for (let i = 0; i < n; i++) out[head.length + 4 + i] = payload[i] ^ mask[i & 3];
  return out;
}
