/**
 * A connection accepted outside the workers of a relay process (`ThreadedRelay.serve`: an
 * in-process connection, a WebSocket adapter in the main thread), run by a worker's
 * `RelayServer.serve` as if the worker had accepted it: its bytes cross a `MessagePort` as
 * transferred `ArrayBuffer`s, both ways, and the worker's side is a {@linkcode BridgedConn}.
 *
 * ```
 * main: bridgeConn(conn, port)                worker: BridgedConn (RelayServer.serve)
 *   ◀──────────── read, at most n bytes ────── read(p)      (n = p.length)
 *   conn.read ─── data (transferred) | end ──▶ copied into p, or null
 *   ◀──────────── write (a transferred copy) ─ write(p)
 *   conn.write … ─ wrote | failed ───────────▶ resolves p.length, or rejects
 *   ◀──────────── close ────────────────────── close()      → conn.close(), ports closed
 *   Bridge.close() ── closed ───────────────▶ read → null, write rejects
 * ```
 *
 * Backpressure is the worker's own: the main thread reads only when the worker asks, at most
 * as many bytes as its read buffer takes, and a write is answered once `conn` took all of it,
 * so at most one read buffer and one write are on the way per connection, never a queue.
 * @module
 */

import type { RelayConn } from "../relay/connection.ts";

/** Worker → main. */
type Ask =
  | { op: "read"; max: number }
  | { op: "write"; bytes: ArrayBuffer }
  | { op: "close" };

/** Main → worker. */
type Answer =
  | { op: "data"; bytes: ArrayBuffer; length: number }
  | { op: "end" }
  | { op: "wrote" }
  | { op: "failed"; of: "read" | "write"; message: string }
  /** The main thread closed the bridge: the end of input, and no more writes. */
  | { op: "closed" };

/** The main thread's end of a bridged connection. */
export interface Bridge {
  /** Closes the connection and the port (the worker's side reads the end). */
  close(): void;
  /** Resolves once the connection and the port are closed. */
  readonly closed: Promise<void>;
}

/**
 * Serves `conn` to the {@linkcode BridgedConn} at the other end of `port`: reads when it asks,
 * writes what it sends, closes when it closes.
 */
export function bridgeConn(conn: RelayConn, port: MessagePort): Bridge {
  let done = false;
  let ended!: () => void;
  const closed = new Promise<void>((resolve) => ended = resolve);
  const post = (answer: Answer, transfer: Transferable[] = []) => {
    if (!done) port.postMessage(answer, transfer);
  };
  const close = () => {
    if (done) return;
    post({ op: "closed" });
    done = true;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
    port.close();
    ended();
  };
  const read = async (max: number) => {
    const buffer = new Uint8Array(max);
    try {
      const n = await conn.read(buffer);
      if (n === null) post({ op: "end" });
      else post({ op: "data", bytes: buffer.buffer, length: n }, [buffer.buffer]);
    } catch (error) {
      post({ op: "failed", of: "read", message: message(error) });
    }
  };
  const write = async (bytes: ArrayBuffer) => {
    try {
      for (let view = new Uint8Array(bytes); view.length > 0;) {
        view = view.subarray(await conn.write(view));
      }
      post({ op: "wrote" });
    } catch (error) {
      post({ op: "failed", of: "write", message: message(error) });
    }
  };
  port.onmessage = (event: MessageEvent<Ask>) => {
    const ask = event.data;
    if (ask.op === "read") void read(ask.max);
    else if (ask.op === "write") void write(ask.bytes);
    else close();
  };
  return { close, closed };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface Waiting<T> {
  resolve(value: T): void;
  reject(error: Error): void;
}

/**
 * A worker's end of a bridged connection: what `RelayServer.serve` takes. One read and one
 * write at a time (a connection has one reader loop and one writer).
 */
export class BridgedConn implements RelayConn {
  /** The address of the connection's peer, as the main thread saw it. */
  readonly remoteAddr: Deno.Addr;
  readonly #port: MessagePort;
  #read: (Waiting<number | null> & { into: Uint8Array }) | undefined;
  #write: (Waiting<number> & { length: number }) | undefined;
  #ended = false;
  #closed = false;

  /**
   * @param port the worker's end of the connection's channel
   * @param remoteAddr the peer's address (per-IP limits and logs use it)
   */
  constructor(port: MessagePort, remoteAddr: Deno.Addr) {
    this.#port = port;
    this.remoteAddr = remoteAddr;
    port.onmessage = (event: MessageEvent<Answer>) => this.#answer(event.data);
  }

  /** Reads at most `p.length` bytes; null at the end of the connection's input. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("Connection closed"));
    if (this.#ended) return Promise.resolve(null);
    if (this.#read) return Promise.reject(new Error("One read at a time"));
    if (p.length === 0) return Promise.resolve(0);
    return new Promise((resolve, reject) => {
      this.#read = { resolve, reject, into: p };
      this.#port.postMessage({ op: "read", max: p.length } satisfies Ask);
    });
  }

  /** Writes all of `p` (a copy crosses); resolves once the connection took it. */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("Connection closed"));
    if (this.#write) return Promise.reject(new Error("One write at a time"));
    if (p.length === 0) return Promise.resolve(0);
    const copy = p.slice();
    return new Promise((resolve, reject) => {
      this.#write = { resolve, reject, length: p.length };
      this.#port.postMessage({ op: "write", bytes: copy.buffer } satisfies Ask, [copy.buffer]);
    });
  }

  /** Closes the connection (the main thread closes its side); safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#port.postMessage({ op: "close" } satisfies Ask);
    } catch {
      // The main thread's side is gone already.
    }
    this.#port.close();
    const read = this.#read;
    const write = this.#write;
    this.#read = this.#write = undefined;
    read?.resolve(null);
    write?.reject(new Deno.errors.BadResource("Connection closed"));
  }

  #answer(answer: Answer): void {
    if (answer.op === "data") {
      const read = this.#read!;
      this.#read = undefined;
      read.into.set(new Uint8Array(answer.bytes, 0, answer.length));
      read.resolve(answer.length);
    } else if (answer.op === "end") {
      this.#ended = true;
      const read = this.#read;
      this.#read = undefined;
      read?.resolve(null);
    } else if (answer.op === "closed") {
      this.#ended = true;
      const read = this.#read;
      const write = this.#write;
      this.#read = this.#write = undefined;
      read?.resolve(null);
      write?.reject(new Deno.errors.BadResource("Connection closed"));
    } else if (answer.op === "wrote") {
      const write = this.#write!;
      this.#write = undefined;
      write.resolve(write.length);
    } else {
      const error = new Deno.errors.BadResource(answer.message);
      if (answer.of === "read") {
        const read = this.#read;
        this.#read = undefined;
        read?.reject(error);
      } else {
        const write = this.#write;
        this.#write = undefined;
        write?.reject(error);
      }
    }
  }
}
