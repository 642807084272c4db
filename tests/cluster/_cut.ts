/**
 * Test helper: a TCP forwarder in front of a NATS server that a test cuts (every connection
 * closed, new ones refused) and restores on the same port, to cut a relay node off its cluster.
 * @module
 */

/** A TCP forwarder to `target` that the test can cut and restore on the same port. */
export class Cut implements AsyncDisposable {
  #listener: Deno.Listener | undefined;
  readonly #conns = new Set<Deno.Conn>();
  readonly port: number;
  readonly #target: number;
  constructor(target: number) {
    this.#target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accept(this.#listener);
  }
  async #accept(listener: Deno.Listener) {
    for (;;) {
      let inbound: Deno.Conn;
      try {
        inbound = await listener.accept();
      } catch {
        return;
      }
      let outbound: Deno.Conn;
      try {
        outbound = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
      } catch {
        inbound.close();
        continue;
      }
      this.#conns.add(inbound).add(outbound);
      const pipe = (from: Deno.Conn, to: Deno.Conn) =>
        from.readable.pipeTo(to.writable).catch(() => {}).finally(() => {
          for (const c of [from, to]) {
            try {
              c.close();
            } catch { /* closed */ }
            this.#conns.delete(c);
          }
        });
      pipe(inbound, outbound);
      pipe(outbound, inbound);
    }
  }
  /** Cuts every connection and refuses new ones. */
  cut() {
    this.#listener?.close();
    this.#listener = undefined;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    this.#conns.clear();
  }
  /** Forwards again, on the same port. */
  restore() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#accept(this.#listener);
  }
  [Symbol.asyncDispose]() {
    this.cut();
    return Promise.resolve();
  }
}
