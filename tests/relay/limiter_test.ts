import assert from "node:assert/strict";
import {
  addressKey,
  BandwidthLimiter,
  ConnectionCounter,
  DEFAULT_MAX_KEYS,
  RateLimiter,
} from "../../lib/relay/limiter.ts";

/** A clock the test moves by hand. */
function fakeClock(start = 1_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

function takeAll(limiter: RateLimiter, key: string, tries: number): number {
  let allowed = 0;
  for (let i = 0; i < tries; i++) if (limiter.take(key)) allowed++;
  return allowed;
}

Deno.test("RateLimiter allows a burst, then the refill rate", async (t) => {
  await t.step("per second", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 5, intervalMs: 1_000, now: clock.now });
    assert.equal(takeAll(limiter, "1.2.3.4", 10), 5);
    clock.advance(200); // one event's worth
    assert.equal(takeAll(limiter, "1.2.3.4", 10), 1);
    clock.advance(199);
    assert.equal(limiter.take("1.2.3.4"), false);
    clock.advance(1);
    assert.equal(limiter.take("1.2.3.4"), true);
    clock.advance(60_000);
    assert.equal(takeAll(limiter, "1.2.3.4", 10), 5, "refills up to the burst, not past it");
  });
  await t.step("per minute with a larger burst", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 6, intervalMs: 60_000, burst: 10, now: clock.now });
    assert.equal(takeAll(limiter, "k", 20), 10);
    clock.advance(10_000);
    assert.equal(takeAll(limiter, "k", 20), 1);
    clock.advance(60_000);
    assert.equal(takeAll(limiter, "k", 20), 6);
  });
  await t.step("keys are independent", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1_000, now: clock.now });
    assert.equal(takeAll(limiter, "a", 5), 2);
    assert.equal(takeAll(limiter, "b", 5), 2);
  });
  await t.step("a cost takes several events, and never more than the burst", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 4, intervalMs: 1_000, now: clock.now });
    assert.equal(limiter.take("k", 3), true);
    assert.equal(limiter.take("k", 2), false);
    assert.equal(limiter.take("k", 1), true);
    assert.equal(limiter.take("other", 5), false);
  });
  await t.step("a clock that steps back does not add events", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1_000, now: clock.now });
    assert.equal(limiter.take("k"), true);
    clock.advance(-5_000);
    assert.equal(limiter.take("k"), false);
  });
});

Deno.test("RateLimiter.peek and retryAfterMs count nothing", () => {
  const clock = fakeClock();
  const limiter = new RateLimiter({ limit: 2, intervalMs: 1_000, now: clock.now });
  assert.equal(limiter.peek("k"), true);
  assert.equal(limiter.retryAfterMs("k"), 0);
  assert.equal(limiter.size, 0);
  limiter.take("k");
  limiter.take("k");
  assert.equal(limiter.peek("k"), false);
  assert.equal(limiter.retryAfterMs("k"), 500);
  assert.equal(limiter.retryAfterMs("k", 2), 1_000);
  clock.advance(499);
  assert.equal(limiter.retryAfterMs("k"), 1);
  clock.advance(1);
  assert.equal(limiter.peek("k"), true);
  assert.equal(limiter.peek("k"), true);
  assert.equal(limiter.take("k"), true);
  assert.equal(limiter.take("k"), false);
});

Deno.test("RateLimiter memory stays under its key cap", async (t) => {
  await t.step("a flood of addresses never grows the map past maxKeys", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 60_000, maxKeys: 100, now: clock.now });
    for (let i = 0; i < 10_000; i++) {
      limiter.take(`10.0.${i >> 8}.${i & 255}`);
      assert.ok(limiter.size <= 100, `size ${limiter.size} after ${i + 1} keys`);
    }
    assert.equal(limiter.size, 100);
  });
  await t.step("the least recently used key is forgotten first", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 60_000, maxKeys: 3, now: clock.now });
    limiter.take("a");
    limiter.take("b");
    limiter.take("c");
    assert.equal(limiter.take("a"), false, "touches a, so b is now the oldest");
    limiter.take("d");
    assert.equal(limiter.size, 3);
    assert.equal(limiter.take("a"), false, "a is remembered");
    assert.equal(limiter.take("c"), false, "c is remembered");
    assert.equal(limiter.take("b"), true, "b was forgotten, so it starts again from a full bucket");
  });
  await t.step("keys whose bucket refilled are dropped as others arrive", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 10, intervalMs: 1_000, now: clock.now });
    for (let i = 0; i < 50; i++) limiter.take(`k${i}`);
    assert.equal(limiter.size, 50);
    clock.advance(1_000);
    for (let i = 0; i < 50; i++) limiter.take("busy");
    assert.equal(limiter.size, 1, "each take dropped one refilled key");
  });
  await t.step("prune forgets refilled keys and keeps the rest", () => {
    const clock = fakeClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1_000, now: clock.now });
    limiter.take("a");
    limiter.take("b");
    clock.advance(1_000);
    limiter.take("c"); // also drops "a", the oldest, as a step of pruning
    assert.equal(limiter.size, 2);
    assert.equal(limiter.prune(), 1);
    assert.equal(limiter.size, 1);
    assert.equal(limiter.take("c"), false);
  });
  await t.step("delete gives a key a full bucket", () => {
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1_000, now: fakeClock().now });
    limiter.take("k");
    limiter.delete("k");
    assert.equal(limiter.take("k"), true);
  });
  await t.step("the default cap", () => assert.equal(DEFAULT_MAX_KEYS, 65_536));
});

Deno.test("limiters reject options that are not positive", () => {
  const bad: [string, () => unknown][] = [
    ["limit 0", () => new RateLimiter({ limit: 0, intervalMs: 1_000 })],
    ["negative interval", () => new RateLimiter({ limit: 1, intervalMs: -1 })],
    ["NaN burst", () => new RateLimiter({ limit: 1, intervalMs: 1, burst: NaN })],
    ["maxKeys 0", () => new RateLimiter({ limit: 1, intervalMs: 1, maxKeys: 0 })],
    ["maxPerKey 0", () => new ConnectionCounter({ maxPerKey: 0 })],
    ["infinite rate", () => new BandwidthLimiter({ bytesPerSecond: Infinity })],
    ["burst 0", () => new BandwidthLimiter({ bytesPerSecond: 1, burstBytes: 0 })],
  ];
  for (const [what, make] of bad) assert.throws(make, RangeError, what);
});

Deno.test("ConnectionCounter caps connections per key and releases once", () => {
  const counter = new ConnectionCounter({ maxPerKey: 2 });
  const a1 = counter.tryAcquire("a")!;
  const a2 = counter.tryAcquire("a")!;
  assert.ok(a1 && a2);
  assert.equal(counter.tryAcquire("a"), undefined);
  const b = counter.tryAcquire("b")!;
  assert.equal(b.key, "b");
  assert.deepEqual([counter.count("a"), counter.count("b"), counter.total, counter.keys], [
    2,
    1,
    3,
    2,
  ]);
  a1.release();
  a1.release();
  assert.equal(counter.count("a"), 1, "a second release does nothing");
  assert.ok(counter.tryAcquire("a"));
  assert.equal(counter.tryAcquire("a"), undefined);
  b.release();
  assert.equal(counter.keys, 1, "a key with no connection is not kept");
  {
    using lease = counter.tryAcquire("c")!;
    assert.equal(counter.count("c"), 1);
    assert.equal(lease.key, "c");
  }
  assert.equal(counter.count("c"), 0, "using releases the lease");
  assert.equal(counter.total, 2);
});

Deno.test("BandwidthLimiter holds the average to the rate", async (t) => {
  await t.step("a burst passes, then reads wait for their debt", () => {
    const clock = fakeClock();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 1_000, now: clock.now });
    assert.equal(limiter.consume(600), 0);
    assert.equal(limiter.consume(400), 0);
    assert.equal(limiter.consume(500), 500, "500 bytes of debt take 500 ms at 1000 B/s");
    clock.advance(250);
    assert.equal(limiter.delayMs(), 250);
    clock.advance(250);
    assert.equal(limiter.delayMs(), 0);
  });
  await t.step("a read loop that waits as told moves bytes at the rate", () => {
    const clock = fakeClock();
    const rate = 64 * 1024;
    const limiter = new BandwidthLimiter({
      bytesPerSecond: rate,
      burstBytes: 16 * 1024,
      now: clock.now,
    });
    const start = clock.now();
    let bytes = 0;
    for (let i = 0; i < 1_000; i++) {
      const n = 1_000 + ((i * 7919) % 31_000); // reads of varying size, up to 32 KB
      bytes += n;
      clock.advance(limiter.consume(n) + 1);
    }
    const seconds = (clock.now() - start) / 1_000;
    const measured = bytes / seconds;
    assert.ok(measured <= rate * 1.01, `measured ${measured} B/s over ${rate}`);
    assert.ok(measured >= rate * 0.9, `measured ${measured} B/s, far under ${rate}`);
  });
  await t.step("idle time refills only up to the burst", () => {
    const clock = fakeClock();
    const limiter = new BandwidthLimiter({ bytesPerSecond: 100, burstBytes: 50, now: clock.now });
    clock.advance(60_000);
    assert.equal(limiter.consume(50), 0);
    assert.equal(limiter.consume(10), 100);
  });
});

Deno.test("addressKey folds IPv6 to its /64 and leaves IPv4 as it is", () => {
  const cases: [string, string][] = [
    ["127.0.0.1", "127.0.0.1"],
    ["203.0.113.9", "203.0.113.9"],
    ["::1", "0:0:0:0::/64"],
    ["2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"],
    ["2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"],
    ["2001:DB8:0001:0002::", "2001:db8:1:2::/64"],
    ["2001:db8::", "2001:db8:0:0::/64"],
    ["[2001:db8:1:2::5]", "2001:db8:1:2::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    ["::ffff:192.0.2.7", "192.0.2.7"],
    ["::ffff:c000:207", "192.0.2.7"],
    ["64:ff9b::192.0.2.7", "64:ff9b:0:0::/64"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4::/64"],
    ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4::/64"],
    ["not:an:address::x", "not:an:address::x"],
    ["1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9"],
    ["1::2::3", "1::2::3"],
    ["::ffff:300.0.0.1", "::ffff:300.0.0.1"],
    ["localhost", "localhost"],
  ];
  for (const [input, expected] of cases) assert.equal(addressKey(input), expected, input);
});
