/**
 * One stream alone, with a fake session behind it: what it holds while its local side is
 * stalled, and that big DATA bodies are written without a copy.
 */
import { Stream, type StreamConn, type StreamOwner } from "../../lib/tunnel/stream.ts";
import { assert, assertEquals, withDeadline } from "../_helpers/tunnel.ts";

const KiB = 1024;
const gc = (globalThis as { gc?: () => void }).gc;

/** A session that sends nothing and records resets. */
function fakeOwner(resets: string[] = []): StreamOwner {
  return {
    sendData() {},
    sendWindow() {},
    sendFin() {},
    sendReset: (_stream, _code, reason) => void resets.push(reason),
    ended() {},
  };
}

/** A local connection whose reads never return and whose writes go to `onWrite`. */
function localConn(onWrite: (p: Uint8Array) => Promise<number>): StreamConn {
  return {
    read: () => new Promise(() => {}),
    write: onWrite,
    closeWrite: () => Promise.resolve(),
    close() {},
  };
}

/** A local connection that never reads: every write waits forever. */
function stalledConn(): StreamConn {
  return localConn(() => new Promise(() => {}));
}

function acceptor(owner: StreamOwner, conn: StreamConn, windowBytes: number): Stream {
  const stream = new Stream({
    owner,
    peer: "laptop",
    id: 1,
    local: false,
    service: "web",
    windowBytes,
    sendCredit: windowBytes,
    conn,
  });
  stream.attach();
  return stream;
}

/** External (ArrayBuffer) memory after a full collection, in bytes. */
function externalBytes(): number {
  gc?.();
  return Deno.memoryUsage().external;
}

/**
 * External memory grown since `before`, once collected buffers are given back (V8 frees
 * backing stores a moment after the collection): polls for up to a second while it stays
 * at or over `limit`, so only memory that is really held fails the test.
 */
async function grownExternal(before: number, limit: number): Promise<number> {
  const deadline = performance.now() + 1_000;
  for (;;) {
    const grown = externalBytes() - before;
    if (grown < limit || performance.now() > deadline) return grown;
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test({
  name: "a stalled stream fed tiny DATA frames pins about its window, not their 64 KiB buffers",
  ignore: gc === undefined,
  async fn() {
    const window = 64 * KiB;
    const stream = acceptor(fakeOwner(), stalledConn(), window);
    // The first byte goes to the local write, which never completes: the writer is stuck.
    stream.onData(new Uint8Array(1));
    await new Promise((r) => setTimeout(r, 0));
    const before = externalBytes();
    // Each frame arrives as a one-byte view into its own 64 KiB read buffer, as from a relay
    // client that read one small message at a time: 2,000 bytes of credit, 125 MiB of buffers.
    for (let i = 0; i < 2_000; i++) {
      const readBuffer = new Uint8Array(64 * KiB);
      readBuffer[100] = i & 0xff;
      stream.onData(readBuffer.subarray(100, 101));
    }
    const limit = 4 * 1024 * KiB;
    const grown = await grownExternal(before, limit);
    assertEquals(stream.state, "open", "the stream was reset");
    assertEquals(stream.buffered, 2_001);
    assert(grown < limit, `the stalled stream pins ${grown} bytes of buffers`);
    assert(stream.pinnedBytes <= 2 * window, `pinnedBytes ${stream.pinnedBytes}`);
    stream.abort("shutdown");
  },
});

Deno.test("a stalled stream fed mid-size DATA frames pins at most twice its window", async () => {
  const window = 64 * KiB;
  const stream = acceptor(fakeOwner(), stalledConn(), window);
  stream.onData(new Uint8Array(1));
  await new Promise((r) => setTimeout(r, 0));
  // 8 KiB bodies, each in its own 256 KiB buffer: counted 64 KiB, pinned far more if kept.
  for (let i = 0; i < 7; i++) {
    stream.onData(new Uint8Array(256 * KiB).subarray(0, 8 * KiB));
  }
  assertEquals(stream.buffered, 56 * KiB + 1);
  assert(stream.pinnedBytes <= 2 * window, `pinnedBytes ${stream.pinnedBytes}`);
  stream.abort("shutdown");
});

Deno.test("DATA past the window resets the stream, with the protocol reason", () => {
  const resets: string[] = [];
  const stream = acceptor(fakeOwner(resets), stalledConn(), 64 * KiB);
  stream.onData(new Uint8Array(64 * KiB));
  assertEquals(stream.state, "open");
  stream.onData(new Uint8Array(1));
  assertEquals(stream.state, "closed");
  assertEquals(stream.end?.reason, "protocol_violation");
  assertEquals(resets, ["Peer sent more than its window allows"]);
});

Deno.test("a large DATA body is written from the buffer it arrived in, and small ones are joined", async () => {
  const written: Uint8Array[] = [];
  let release!: () => void;
  const firstWrite = new Promise<void>((resolve) => release = resolve);
  const conn = localConn(async (p) => {
    written.push(p);
    if (written.length === 1) await firstWrite;
    return p.length;
  });
  const stream = acceptor(fakeOwner(), conn, 2 * 1024 * KiB);
  const packet = new Uint8Array(256 * KiB + 44);
  const body = packet.subarray(44);
  stream.onData(body);
  // While that write waits, tiny frames queue up behind it and are gathered into one chunk.
  for (let i = 0; i < 100; i++) stream.onData(new Uint8Array([i]));
  release();
  await withDeadline(
    (async () => {
      while (stream.buffered > 0) await new Promise((r) => setTimeout(r, 5));
    })(),
    5_000,
    "the stream to drain",
  );
  assert(written[0].buffer === packet.buffer, "the big body was copied");
  assertEquals(written.length, 2, "the 100 small bodies took more than one write");
  assertEquals([...written[1]], Array.from({ length: 100 }, (_, i) => i));
  assertEquals(stream.pinnedBytes, 0);
  stream.abort("shutdown");
});

Deno.test("a quiet stream's pending read holds a small buffer; one that fills it reads big, and back", async () => {
  // Reads are answered from a script: each asks for `p.length` bytes and gets `sizes[i]`.
  const sizes = [10, 16 * KiB, 200 * KiB, 100, 5];
  const asked: number[] = [];
  const sent: number[] = [];
  let next!: () => void;
  const done = new Promise<void>((resolve) => next = resolve);
  const conn: StreamConn = {
    read(p) {
      asked.push(p.length);
      const n = sizes.shift();
      if (n === undefined) {
        next();
        return new Promise(() => {}); // then idle: this read stays pending
      }
      return Promise.resolve(Math.min(n, p.length));
    },
    write: (p) => Promise.resolve(p.length),
    closeWrite: () => Promise.resolve(),
    close() {},
  };
  const owner = {
    ...fakeOwner(),
    sendData: (_s: Stream, _b: Uint8Array, n: number) => void sent.push(n),
  };
  const stream = acceptor(owner, conn, 2 * 1024 * KiB);
  await withDeadline(done, 5_000, "the scripted reads");
  // Small first; the read that filled 16 KiB switches to 256 KiB reads until a short one.
  assertEquals(asked, [16 * KiB, 16 * KiB, 256 * KiB, 256 * KiB, 16 * KiB, 16 * KiB]);
  assertEquals(sent, [10, 16 * KiB, 200 * KiB, 100, 5]);
  stream.abort("shutdown");
});
