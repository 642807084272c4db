import { assert, assertEquals, assertMatch } from "./_assert.ts";
import { get, startWebRelay } from "./_helpers.ts";
import { parseExposition, value } from "./_prometheus.ts";
import { expectText, RawPeer, waitFor } from "../_helpers/relay.ts";
import { VERSION } from "../../lib/version.ts";

Deno.test("/healthz and /readyz answer for load balancers", async (t) => {
  await t.step("up and ready", async () => {
    await using server = await startWebRelay();
    const health = await get(`${server.base}/healthz`);
    assertEquals([health.status, health.body], [200, "ok\n"]);
    const ready = await get(`${server.base}/readyz`);
    assertEquals(ready.status, 200);
    assertEquals(JSON.parse(ready.body).ready, true);
  });
  await t.step("not ready at --max-connections", async () => {
    await using server = await startWebRelay({ maxConnections: 1 });
    await using peer = await RawPeer.connect(server.relay.port, "only");
    await waitFor(() => server.relay.stats().connections === 1);
    const ready = await get(`${server.base}/readyz`);
    assertEquals(ready.status, 503);
    assertEquals(JSON.parse(ready.body).ready, false);
    void peer;
  });
});

Deno.test("/api/status and /api/names show the relay as JSON", async (t) => {
  await using server = await startWebRelay({}, { settings: { maxConnections: 16384 } });
  await using alice = await RawPeer.connect(server.relay.port, "alice");
  await using bob = await RawPeer.connect(server.relay.port, "bob");
  await waitFor(() => server.relay.stats().registered === 2);
  await alice.write("bob|5|hello");
  await expectText(bob, "alice|5|hello");

  await t.step("status", async () => {
    const { status, body, headers } = await get(`${server.base}/api/status?history`);
    assertEquals(status, 200);
    assertMatch(headers.get("content-type")!, /^application\/json/);
    const s = JSON.parse(body);
    assertEquals(s.version, VERSION);
    assertEquals([s.connections, s.registered, s.messages, s.bytes], [2, 2, 1, 5]);
    assertEquals(s.names, ["alice", "bob"]);
    assertEquals(s.settings, { maxConnections: 16384 });
    assert(Array.isArray(s.history));
    assert(s.process.rss > 0);
  });
  await t.step("names with a prefix and a limit", async () => {
    assertEquals(JSON.parse((await get(`${server.base}/api/names`)).body), {
      names: ["alice", "bob"],
      more: false,
    });
    assertEquals(JSON.parse((await get(`${server.base}/api/names?limit=1`)).body), {
      names: ["alice"],
      more: true,
    });
    assertEquals(JSON.parse((await get(`${server.base}/api/names?prefix=b`)).body).names, ["bob"]);
    assertEquals(JSON.parse((await get(`${server.base}/api/names?after=alice`)).body), {
      names: ["bob"],
      more: false,
    });
    assertEquals((await get(`${server.base}/api/names?limit=0`)).status, 400);
  });
});

Deno.test("with listing off, names are counted but not listed", async () => {
  await using server = await startWebRelay({}, { listing: false });
  await using alice = await RawPeer.connect(server.relay.port, "alice");
  await waitFor(() => server.relay.stats().registered === 1);
  const s = JSON.parse((await get(`${server.base}/api/status`)).body);
  assertEquals([s.registered, s.names, s.listing], [1, undefined, false]);
  const names = await get(`${server.base}/api/names`);
  assertEquals(names.status, 403);
  assertEquals(JSON.parse(names.body).error, "listing_disabled");
  void alice;
});

Deno.test("/api/events streams a snapshot a second", async () => {
  await using server = await startWebRelay();
  const controller = new AbortController();
  const response = await fetch(`${server.base}/api/events`, { signal: controller.signal });
  assertMatch(response.headers.get("content-type")!, /^text\/event-stream/);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 5_000;
  await using peer = await RawPeer.connect(server.relay.port, "carol");
  // The first event has the history; a later one shows carol registered.
  while (!/"registered": ?1/.test(seen.split("\n\n").slice(1).join("")) && Date.now() < deadline) {
    const { value: chunk, done } = await reader.read();
    if (done) break;
    seen += chunk;
  }
  controller.abort();
  await reader.cancel().catch(() => {});
  const events = seen.split("\n\n").filter((e) => e.includes("data: "));
  assert(events.length >= 2, `only ${events.length} events`);
  const first = JSON.parse(events[0].split("data: ")[1]);
  assert(Array.isArray(first.history));
  const last = JSON.parse(events.at(-1)!.split("data: ")[1]);
  assertEquals(last.registered, 1);
  void peer;
});

Deno.test("/metrics parses as Prometheus text and moves with traffic", async () => {
  await using server = await startWebRelay({ maxBufferBytes: 1 << 20 });
  const scrape = async () => {
    const { status, body, headers } = await get(`${server.base}/metrics`);
    assertEquals(status, 200);
    assertMatch(headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    return parseExposition(body);
  };
  const before = await scrape();
  assertEquals(before.types.get("relay_messages_delivered_total"), "counter");
  assertEquals(before.types.get("relay_message_size_bytes"), "histogram");
  assertEquals(value(before, "relay_messages_delivered_total"), 0);
  // Every reason has a series from the start.
  assertEquals(value(before, "relay_disconnects_total", { reason: "idle_timeout" }), 0);
  assertEquals(value(before, "relay_dropped_total", { reason: "unknown_destination" }), 0);
  assertEquals(value(before, "relay_refused_total", { reason: "too_many_connections" }), 0);
  assertEquals(value(before, "relay_info", { version: VERSION }), 1);
  assert(value(before, "process_resident_memory_bytes")! > 0);

  await using alice = await RawPeer.connect(server.relay.port, "alice");
  await using bob = await RawPeer.connect(server.relay.port, "bob");
  await waitFor(() => server.relay.stats().registered === 2);
  await alice.write("bob|5|hellobob|300|" + "x".repeat(300) + "nobody|1|?");
  await expectText(bob, "alice|5|hello");
  await expectText(bob, "alice|300|" + "x".repeat(300));
  await waitFor(() => (server.relay.stats().dropped.unknown_destination ?? 0) === 1);
  const after = await scrape();
  assertEquals(value(after, "relay_connections"), 2);
  assertEquals(value(after, "relay_registered_names"), 2);
  assertEquals(value(after, "relay_messages_delivered_total"), 2);
  assertEquals(value(after, "relay_messages_received_total"), 3);
  assertEquals(value(after, "relay_delivered_bytes_total"), 305);
  assertEquals(value(after, "relay_dropped_total", { reason: "unknown_destination" }), 1);
  assertEquals(value(after, "relay_message_size_bytes_bucket", { le: "16" }), 1);
  assertEquals(value(after, "relay_message_size_bytes_bucket", { le: "256" }), 1);
  assertEquals(value(after, "relay_message_size_bytes_bucket", { le: "4096" }), 2);
  assertEquals(value(after, "relay_message_size_bytes_count"), 2);
  assertEquals(value(after, "relay_message_size_bytes_sum"), 305);
  assertEquals(value(after, "relay_buffer_budget_bytes"), 1 << 20);
  bob.conn.close();
  await waitFor(() => server.relay.stats().connections === 1);
  const closed = await scrape();
  assertEquals(value(closed, "relay_disconnects_total", { reason: "client_closed" }), 1);
});

Deno.test("--http-token protects the pages that reveal names, not the rest", async (t) => {
  const token = "s3cret-token";
  await using server = await startWebRelay({}, { token });
  const guarded = ["/", "/metrics", "/api/status", "/api/names", "/api/events"];
  await t.step("without the token: 401 with a basic-auth challenge", async () => {
    for (const path of guarded) {
      const { status, headers } = await get(server.base + path);
      assertEquals(status, 401, path);
      assertMatch(headers.get("www-authenticate")!, /^Basic realm="relay"/);
    }
  });
  await t.step("a wrong token: 401", async () => {
    for (const auth of ["Bearer wrong", `Basic ${btoa("x:wrong")}`, "Bearer", "Digest abc"]) {
      assertEquals((await get(`${server.base}/api/status`, { authorization: auth })).status, 401);
    }
  });
  await t.step("bearer and basic auth pass", async () => {
    for (const auth of [`Bearer ${token}`, `Basic ${btoa(`anyone:${token}`)}`]) {
      for (const path of guarded.filter((p) => p !== "/api/events")) {
        assertEquals((await get(server.base + path, { authorization: auth })).status, 200, path);
      }
    }
  });
  await t.step("open: health, the playground, the client and /ws", async () => {
    for (const path of ["/healthz", "/readyz", "/playground", "/client.js", "/assets/style.css"]) {
      assertEquals((await get(server.base + path)).status, 200, path);
    }
    assertEquals((await get(`${server.base}/ws`)).status, 426);
  });
});

Deno.test("pages and assets are served with their types; unknown paths 404", async () => {
  await using server = await startWebRelay();
  const cases: [string, RegExp][] = [
    ["/", /^text\/html/],
    ["/playground", /^text\/html/],
    ["/client.js", /^text\/javascript/],
    ["/assets/status.js", /^text\/javascript/],
    ["/assets/playground.js", /^text\/javascript/],
    ["/assets/client.js", /^text\/javascript/],
    ["/assets/style.css", /^text\/css/],
  ];
  for (const [path, type] of cases) {
    const { status, headers, body } = await get(server.base + path);
    assertEquals(status, 200, path);
    assertMatch(headers.get("content-type")!, type, path);
    assert(body.length > 100, path);
  }
  const page = await get(`${server.base}/`);
  assertMatch(page.headers.get("content-security-policy")!, /default-src 'self'/);
  assert(!/https?:\/\/(?!www\.w3\.org)/.test(page.body), "the page loads nothing from elsewhere");
  assertEquals((await get(`${server.base}/nope`)).status, 404);
  assertEquals((await get(`${server.base}/assets/nope.js`)).status, 404);
  const post = await fetch(`${server.base}/api/status`, { method: "POST", body: "x" });
  await post.body?.cancel();
  assertEquals(post.status, 405);
});
