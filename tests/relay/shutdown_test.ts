/**
 * Shutdown and signals of the relay: the grace for queued data on SIGTERM, SIGINT, a
 * connection that arrives while the relay stops, and the auth file reloaded on SIGHUP.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { AuthPolicy, hashToken } from "../../lib/relay/auth.ts";
import { RelayClient } from "../../lib/client/client.ts";
import type { RelayConn } from "../../lib/relay/connection.ts";
import { RelayServer } from "../../lib/relay/server.ts";
import { bytes, expectText, RawPeer, ServeProcess, waitFor } from "../_helpers/relay.ts";

const POSIX = Deno.build.os !== "windows";

Deno.test({
  name: "serve on SIGTERM lets queued data go out within its grace, then exits 0",
  ignore: !POSIX,
  async fn() {
    await using relay = await ServeProcess.start();
    await using rx = await RawPeer.connect(relay.port, "rx");
    await using tx = await RawPeer.connect(relay.port, "tx");
    await rx.write("rx|0|");
    // More than the kernel's socket buffers hold, so most of it waits in the relay's queue.
    const size = 7 * 1024 * 1024;
    const payload = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) payload[i] = (i / 4096) & 0xff;
    await tx.write(new Uint8Array([...bytes(`rx|${size}|`), ...payload]));
    // The relay handles one sender's frames in order: once this returns, all is queued.
    await tx.write("tx|2|ok");
    await expectText(tx, "tx|2|ok");
    relay.child.kill("SIGTERM");
    await relay.waitLog(/Shutting down/);
    // rx only starts reading now: without the grace its queue would be gone.
    const header = `tx|${size}|`;
    await expectText(rx, header, 5_000);
    const got = await rx.read(size, 5_000);
    for (let i = 0; i < size; i += 4096) {
      if (got[i] !== ((i / 4096) & 0xff)) assert.fail(`byte ${i} is wrong`);
    }
    await rx.closed(5_000);
    assert.equal((await relay.exited()).code, 0);
  },
});

Deno.test({
  name: "serve exits 0 on SIGINT, like SIGTERM, and closes its clients",
  ignore: !POSIX,
  async fn() {
    const relay = await ServeProcess.start();
    await using peer = await RawPeer.connect(relay.port, "x");
    await peer.write("x|2|up");
    await expectText(peer, "x|2|up");
    assert.equal(await relay.stopWith("SIGINT"), 0);
    await peer.closed(3_000);
    assert.match(relay.stderr, /Shutting down/);
  },
});

/** A connection handed to `serve()` that records whether the relay closed it. */
class HandedConn implements RelayConn {
  readonly remoteAddr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1 };
  closed = false;
  read(): Promise<number | null> {
    return new Promise((resolve) => queueMicrotask(() => resolve(this.closed ? null : 0)));
  }
  write(p: Uint8Array): Promise<number> {
    return Promise.resolve(p.length);
  }
  close(): void {
    this.closed = true;
  }
}

Deno.test("a connection that arrives while the relay shuts down is closed at once", async () => {
  const server = await RelayServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    shutdownGraceMs: 3_000,
  });
  const port = server.port;
  // A receiver that does not read keeps the shutdown in its grace period.
  const rx = await RawPeer.connect(port, "rx");
  const tx = await RawPeer.connect(port, "tx");
  try {
    await waitFor(() => server.stats().registered === 2, 2_000, "registration");
    await tx.write(new Uint8Array([...bytes(`rx|${8 << 20}|`), ...new Uint8Array(8 << 20)]));
    await waitFor(() => server.stats().messages === 1, 2_000, "queued");
    const closing = server.close();
    let finished = false;
    closing.then(() => finished = true);
    const late = new HandedConn();
    server.serve(late);
    assert.equal(late.closed, true, "closed at once, never run");
    assert.equal(server.stats().connections, 2, "the late connection was not added");
    // The listener is closed already: a new TCP connection is refused (or closed at once).
    const refused = await RawPeer.connect(port).then(
      async (peer) => {
        const closed = await peer.closed(1_000).then(() => true, () => false);
        await peer.close();
        return closed;
      },
      () => true,
    );
    assert.ok(refused, "a TCP connection during shutdown was served");
    assert.equal(finished, false, "still in the grace period");
    await rx.close();
    await closing;
  } finally {
    await rx.close();
    await tx.close();
    await server.close();
  }
});

Deno.test("auth: a reloaded auth file applies to new registrations; open ones stay", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "auth.json");
    await Deno.writeTextFile(file, JSON.stringify({ lab: { sha256: await hashToken("one") } }));
    const auth = await AuthPolicy.load(file);
    await using server = await RelayServer.listen({ hostname: "127.0.0.1", port: 0, auth });
    await using first = await RelayClient.connect({ port: server.port, name: "lab", token: "one" });
    await Deno.writeTextFile(file, JSON.stringify({ lab: { sha256: await hashToken("two") } }));
    assert.equal(await server.auth!.reload(), 1);
    await first.send("lab", bytes("still here"));
    assert.equal(new TextDecoder().decode((await first.receive())!.payload), "still here");
    await first.close();
    await waitFor(() => server.stats().registered === 0, 2_000, "release");
    await assert.rejects(() =>
      RelayClient.connect({ port: server.port, name: "lab", token: "one" })
    );
    await using second = await RelayClient.connect({
      port: server.port,
      name: "lab",
      token: "two",
    });
    assert.equal(second.name, "lab");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "serve reloads its auth file on SIGHUP",
  ignore: !POSIX,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const file = join(dir, "auth.json");
      await Deno.writeTextFile(file, JSON.stringify({ lab: { sha256: await hashToken("one") } }));
      await using relay = await ServeProcess.start(["--auth-file", file]);
      const connect = (token: string) =>
        RelayClient.connect({ port: relay.port, name: "lab", token });
      await (await connect("one")).close();
      await Deno.writeTextFile(file, JSON.stringify({ lab: { sha256: await hashToken("two") } }));
      relay.child.kill("SIGHUP");
      await relay.waitLog(/Auth file reloaded/, 5_000);
      await waitFor(() => /Disconnected lab/.test(relay.stderr), 2_000, "first lab gone");
      await assert.rejects(() => connect("one"), "the old token no longer works");
      await (await connect("two")).close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
