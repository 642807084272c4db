/**
 * The Tunnel around its sessions: offline peers reported by the relay end streams at once,
 * and registration refusals that retrying cannot fix stop the tunnel instead of looping.
 */
import { logText, withLogs } from "../_helpers/logs.ts";
import { RegistrationError } from "../../lib/client/client.ts";
import { Tunnel } from "../../lib/tunnel/tunnel.ts";
import type { TunnelLink } from "../../lib/tunnel/link.ts";
import {
  assert,
  assertEquals,
  connect,
  echoThrough,
  endedEmpty,
  FakeRelay,
  labAndLaptop,
  readToEnd,
  waitFor,
  withDeadline,
} from "../_helpers/tunnel.ts";

Deno.test("a forwarded connection to an offline peer closes within a second, the reason logged", async () => {
  await withLogs(async (records) => {
    // The open timeout is long: only the relay's word that the peer is offline can end it.
    await using t = labAndLaptop({}, { openTimeoutMs: 30_000 });
    const addr = t.laptop.forward({ port: 0, peer: "nosuch", service: "web" });
    const t0 = performance.now();
    assert(endedEmpty(await echoThrough(addr.port, new TextEncoder().encode("GET /"), 5_000)));
    const ms = performance.now() - t0;
    assert(ms < 1_000, `the connection closed after ${Math.round(ms)} ms`);
    await waitFor(
      () => records.some((r) => r.level === "warning" && /nosuch.*not connected/.test(logText(r))),
      1_000,
      "a warning naming the offline peer",
    );
    // A second connection soon after fails fast too: nothing stale was kept of the peer.
    const t1 = performance.now();
    assert(endedEmpty(await echoThrough(addr.port, new Uint8Array([1]), 5_000)));
    assert(performance.now() - t1 < 2_000);
  });
});

Deno.test("open streams end at once when the relay reports their peer offline", async () => {
  await using t = labAndLaptop({}, { keepaliveMs: 60_000, openTimeoutMs: 30_000 });
  const conn = await connect(t.port);
  await conn.write(new Uint8Array([1]));
  assertEquals(await withDeadline(conn.read(new Uint8Array(1)), 5_000, "the echo"), 1);
  // Lab's link drops without a word (no BYE); the laptop's next DATA finds nobody.
  t.relay.links.get("lab")!.kill();
  await conn.write(new Uint8Array([2]));
  const t0 = performance.now();
  const result = await readToEnd(conn, 5_000);
  conn.close();
  assert(endedEmpty(result));
  assert(performance.now() - t0 < 1_000, "the stream outlived its peer");
  assertEquals(t.laptop.stats()?.resets.peer_offline, 1);
});

/** A connect function that fails with `error` and counts its calls. */
function refusing(error: Error): { connect: () => Promise<TunnelLink>; calls: () => number } {
  let calls = 0;
  return {
    connect: () => {
      calls++;
      return Promise.reject(error);
    },
    calls: () => calls,
  };
}

Deno.test("refusals that retrying cannot fix stop the tunnel with the relay's reason", async (t) => {
  for (const reason of ["bad_token", "auth_required", "invalid_name", "name_taken"] as const) {
    await t.step(reason, async () => {
      const refusal = refusing(new RegistrationError(reason, `Cannot register "lab": ${reason}`));
      await using tunnel = new Tunnel({
        connect: refusal.connect,
        reconnectMinMs: 10,
        reconnectMaxMs: 20,
      });
      const failure = await withDeadline(tunnel.done, 2_000, "the tunnel to give up");
      assert(failure instanceof RegistrationError);
      assertEquals(failure.reason, reason);
      assertEquals(refusal.calls(), 1, "it retried");
      await assert.rejects(tunnel.ready(100), (e: Error) => e === failure);
    });
  }
});

Deno.test("transient refusals and failures are retried", async (t) => {
  for (
    const error of [
      new RegistrationError("rate_limited", "Too many attempts"),
      new RegistrationError("too_many_connections", "The relay has too many connections"),
      new RegistrationError("no_answer", "The relay closed the connection"),
      new Error("Connection refused (os error 111)"),
    ]
  ) {
    await t.step(error.message, async () => {
      const refusal = refusing(error);
      await using tunnel = new Tunnel({
        connect: refusal.connect,
        reconnectMinMs: 10,
        reconnectMaxMs: 20,
      });
      await waitFor(() => refusal.calls() >= 3, 2_000, "retries");
      const settled = await Promise.race([tunnel.done, Promise.resolve("pending")]);
      assertEquals(settled, "pending");
    });
  }
});

Deno.test("name_taken after having been connected is retried for a grace, then final", async () => {
  const relay = new FakeRelay();
  let taken = false;
  let calls = 0;
  await using tunnel = new Tunnel({
    connect: () => {
      calls++;
      if (taken) {
        return Promise.reject(
          new RegistrationError("name_taken", "The name is already registered"),
        );
      }
      return Promise.resolve(relay.connect("lab"));
    },
    reconnectMinMs: 10,
    reconnectMaxMs: 20,
    nameTakenGraceMs: 300,
  });
  await tunnel.ready();
  // The link drops; a dead connection of ours could still hold the name for a while.
  taken = true;
  relay.restart();
  const t0 = performance.now();
  const failure = await withDeadline(tunnel.done, 3_000, "the tunnel to give up");
  assert(failure instanceof RegistrationError && failure.reason === "name_taken");
  assert(performance.now() - t0 >= 250, "gave up before the grace");
  assert(calls >= 3, `${calls} attempts`);
});
