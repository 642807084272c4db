import assert from "node:assert/strict";
import { MAX_IP_KEY_BYTES, SharedIpLimits } from "../../lib/threads/ip_table.ts";
import { addressKey, type ConnectionLease } from "../../lib/relay/limiter.ts";

const WRONG_TOKENS = { limit: 10, intervalMs: 60_000 };

/** Two views over one buffer, as two workers hold them, on one fake clock. */
function views(options: {
  addresses?: number;
  maxConnectionsPerIp?: number;
  registerRate?: { limit: number; intervalMs: number };
  authFailureRate?: { limit: number; intervalMs: number };
}) {
  const clock = { now: 1_000 };
  const buffer = SharedIpLimits.buffer(options.addresses);
  const make = () =>
    new SharedIpLimits(buffer, {
      maxConnectionsPerIp: options.maxConnectionsPerIp ?? 0,
      registerRate: options.registerRate,
      authFailureRate: options.authFailureRate ?? WRONG_TOKENS,
      now: () => clock.now,
    });
  return { a: make(), b: make(), clock };
}

function lease(got: ConnectionLease | string): ConnectionLease {
  assert.notEqual(typeof got, "string", `refused: ${got}`);
  return got as ConnectionLease;
}

Deno.test("ip table: connections from one IP through two workers count against one limit", () => {
  const { a, b } = views({ maxConnectionsPerIp: 3 });
  const ip = addressKey("192.0.2.7");
  const first = lease(a.tryConnect(ip));
  lease(b.tryConnect(ip));
  lease(a.tryConnect(ip));
  assert.equal(b.tryConnect(ip), "too_many_connections_per_ip");
  assert.equal(a.tryConnect(ip), "too_many_connections_per_ip");
  assert.equal(b.connections(ip), 3);
  first.release();
  first.release(); // twice gives back one slot only
  assert.equal(a.connections(ip), 2);
  lease(b.tryConnect(ip));
  assert.equal(a.tryConnect(ip), "too_many_connections_per_ip");
});

Deno.test("ip table: two addresses never share a counter, IPv6 counted by its /64", () => {
  const { a, b } = views({ maxConnectionsPerIp: 1 });
  // Many addresses, so that some share a hash bucket and probe past each other.
  for (let i = 0; i < 2_000; i++) lease(a.tryConnect(addressKey(`10.0.${i >> 8}.${i & 255}`)));
  for (let i = 0; i < 2_000; i++) {
    assert.equal(
      b.tryConnect(addressKey(`10.0.${i >> 8}.${i & 255}`)),
      "too_many_connections_per_ip",
    );
  }
  lease(a.tryConnect(addressKey("2001:db8:1:2::1")));
  assert.equal(b.tryConnect(addressKey("2001:db8:1:2:ffff::9")), "too_many_connections_per_ip");
  lease(b.tryConnect(addressKey("2001:db8:1:3::1"))); // the next /64
  assert.equal(a.size, 2_002);
});

Deno.test("ip table: a full table refuses a new address, and has room again once one is forgotten", () => {
  const { a, b } = views({ addresses: 8, maxConnectionsPerIp: 2 });
  const leases = Array.from({ length: 8 }, (_, i) => lease(a.tryConnect(`192.0.2.${i}`)));
  assert.equal(b.tryConnect("192.0.2.100"), "address_table_full");
  assert.equal(a.fullRefusals, 1);
  lease(b.tryConnect("192.0.2.3")); // an address already counted still is
  leases[0].release(); // no connection, rates full: forgotten
  lease(b.tryConnect("192.0.2.100"));
  assert.equal(a.tryConnect("192.0.2.101"), "address_table_full");
  assert.equal(b.tryConnect("x".repeat(MAX_IP_KEY_BYTES + 1)), "address_table_full");
});

Deno.test("ip table: the registration rate is one bucket for every worker", () => {
  const { a, b, clock } = views({ registerRate: { limit: 3, intervalMs: 900 } });
  const ip = "198.51.100.4";
  assert.ok(a.tryRegister(ip));
  assert.ok(b.tryRegister(ip));
  assert.ok(a.tryRegister(ip));
  assert.ok(!b.tryRegister(ip));
  assert.ok(!a.tryRegister(ip));
  assert.ok(b.tryRegister("198.51.100.5"), "another address has its own bucket");
  clock.now += 300; // one registration every 300 ms
  assert.ok(b.tryRegister(ip));
  assert.ok(!a.tryRegister(ip));
});

Deno.test("ip table: an address whose rate has not refilled keeps its place in a full table", () => {
  const { a, b, clock } = views({ addresses: 8, registerRate: { limit: 1, intervalMs: 1_000 } });
  for (let i = 0; i < 8; i++) assert.ok(a.tryRegister(`192.0.2.${i}`));
  assert.ok(!b.tryRegister("192.0.2.50"), "full: refused, not let through unlimited");
  assert.ok(!b.tryRegister("192.0.2.0"), "its bucket is still empty");
  clock.now += 1_000; // every bucket refilled: the addresses can be forgotten
  assert.ok(b.tryRegister("192.0.2.50"));
  assert.ok(a.tryRegister("192.0.2.0"));
  assert.ok(!b.tryRegister("192.0.2.0"));
});

Deno.test("ip table: wrong tokens from one IP through two workers count against one limit", () => {
  const { a, b, clock } = views({ authFailureRate: { limit: 4, intervalMs: 60_000 } });
  const ip = "203.0.113.9";
  assert.ok(a.mayTryToken(ip));
  a.countWrongToken(ip);
  b.countWrongToken(ip);
  a.countWrongToken(ip);
  assert.ok(b.mayTryToken(ip));
  b.countWrongToken(ip);
  assert.ok(!a.mayTryToken(ip));
  assert.ok(!b.mayTryToken(ip));
  assert.ok(a.mayTryToken("203.0.113.10"));
  clock.now += 15_000;
  assert.ok(b.mayTryToken(ip));
});
