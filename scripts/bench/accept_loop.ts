/**
 * The floor of the one-after-another registration row: a bare Deno accept loop that reads each
 * connection into a 1 KiB buffer and writes back what it read, with no protocol at all. What
 * the relay adds on top of this (parsing, registry, logging) is what that row measures. Prints
 * `Listening on HOST:PORT` on stderr once it accepts connections.
 * @module
 */

/** Read size per connection, the smallest buffer a real server would use. */
const READ_BUFFER_BYTES = 1024;

/** Echoes one connection until it closes. */
async function serve(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(READ_BUFFER_BYTES);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await conn.write(buf.subarray(off, n));
    }
  } catch {
    // A reset ends the connection like a close.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

if (import.meta.main) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.error(`Listening on 127.0.0.1:${listener.addr.port}`);
  for await (const conn of listener) serve(conn);
}
