/**
 * What a session remembers of its peers: the sessions of a peer that ended (BYE or a
 * restart) are retired, their packets refused, and the list is bounded.
 */
import { TUNNEL_MAX_RETIRED_SESSIONS } from "../../lib/limits.ts";
import { newSessionId } from "../../lib/wire/tunnel.ts";
import { toHex } from "../../lib/util/bytes.ts";
import { assertEquals, labAndLaptop, rawPeer, waitFor } from "../_helpers/tunnel.ts";

Deno.test("a peer's ended sessions are retired: their packets are dropped and dial nothing", async () => {
  await using t = labAndLaptop();
  const lab = await t.lab.ready();
  await using evil = await rawPeer(t.relay, "evil", "lab");
  const first = evil.session;
  await evil.send([{ type: "ping", ack: false, data: new Uint8Array(8) }]);
  await evil.next((f) => f.type === "ping" && f.ack);
  await evil.send([{ type: "bye", reason: "going away" }]);
  await waitFor(() => lab.retiredSessions("evil").length === 1, 2_000, "the session to retire");
  assertEquals(lab.retiredSessions("evil"), [toHex(first)]);
  // The ended session's packets are refused, whatever they carry.
  await evil.send([{ type: "open", stream: 1, window: 65536, service: "echo" }], first);
  await waitFor(() => lab.stats().packetsDropped.retired_session === 1, 2_000, "the drop");
  assertEquals(t.echo.accepted(), 0);
  assertEquals(lab.streamCount, 0);
});

Deno.test("a peer restarting with a new session retires the old one; the list keeps the latest 16", async () => {
  await using t = labAndLaptop();
  const lab = await t.lab.ready();
  await using evil = await rawPeer(t.relay, "evil", "lab");
  const sessions = [evil.session];
  // Lab learns the first session from the first packet addressed to it.
  await evil.send([{ type: "ping", ack: false, data: new Uint8Array(8) }]);
  await evil.next((f) => f.type === "ping" && f.ack);
  // Each new session id is a restart: the one before is retired.
  for (let i = 0; i < TUNNEL_MAX_RETIRED_SESSIONS + 2; i++) {
    const next = newSessionId();
    sessions.push(next);
    await evil.send([{ type: "ping", ack: false, data: new Uint8Array(8) }], next);
    await evil.next((f) => f.type === "ping" && f.ack);
  }
  const retired = lab.retiredSessions("evil");
  assertEquals(retired.length, TUNNEL_MAX_RETIRED_SESSIONS);
  assertEquals(retired, sessions.slice(-TUNNEL_MAX_RETIRED_SESSIONS - 1, -1).map(toHex));
  assertEquals(lab.stats().peerRestarts, TUNNEL_MAX_RETIRED_SESSIONS + 2);
  // A retired session still on the list cannot come back.
  await evil.send([{ type: "ping", ack: false, data: new Uint8Array(8) }], sessions.at(-2)!);
  await waitFor(() => lab.stats().packetsDropped.retired_session === 1, 2_000, "the drop");
  assertEquals(lab.stats().peerRestarts, TUNNEL_MAX_RETIRED_SESSIONS + 2);
});
