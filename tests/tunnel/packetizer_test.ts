/**
 * The session's one writer: what it does when a packet cannot be built or sent. A lost
 * OPEN or FIN must not leave its stream hanging until a timeout.
 */
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { decodeFrames, decodePacketHeader } from "../../lib/wire/tunnel.ts";
import {
  assert,
  assertEquals,
  echoThrough,
  endedEmpty,
  labAndLaptop,
  patternBytes,
  sameBytes,
  waitFor,
} from "../_helpers/tunnel.ts";

/** Whether a plain tunnel packet carries a frame of `type`. */
function carries(payload: Uint8Array, type: string): boolean {
  try {
    return decodeFrames(decodePacketHeader(payload).body).some((f) => f.type === type);
  } catch {
    return false;
  }
}

/** Collects log records of the tunnel while `fn` runs. */
async function withLogs(fn: (records: LogRecord[]) => Promise<void>): Promise<void> {
  const records: LogRecord[] = [];
  await configure({
    sinks: { capture: (r) => void records.push(r) },
    loggers: [
      { category: ["relay"], lowestLevel: "debug", sinks: ["capture"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
    reset: true,
  });
  try {
    await fn(records);
  } finally {
    await reset();
  }
}

function text(record: LogRecord): string {
  return record.message.map(String).join("");
}

Deno.test("a packet the link refuses resets the streams it carried at once, logged at warning", async () => {
  await withLogs(async (records) => {
    // A long open timeout: the stream must end because its packet failed, not by timing out.
    await using t = labAndLaptop({}, { openTimeoutMs: 30_000 });
    let refused = 0;
    t.relay.tap = (m) => {
      if (m.from === "laptop" && refused === 0 && carries(m.payload, "open")) {
        refused++;
        throw new TypeError("Test: the link refuses this packet");
      }
    };
    const t0 = performance.now();
    const got = await echoThrough(t.port, new TextEncoder().encode("hello"), 5_000);
    const ms = performance.now() - t0;
    assertEquals(refused, 1);
    assert(endedEmpty(got), "the stream whose OPEN was lost got an answer");
    assert(ms < 2_000, `the stream ended ${Math.round(ms)} ms later`);
    const stats = t.laptop.stats()!;
    assertEquals(stats.packetsFailed, 1);
    assertEquals(stats.resets.send_failed, 1);
    const warning = records.find((r) =>
      r.level === "warning" && text(r).includes("Cannot send a packet to lab")
    );
    assert(warning, "no warning about the failed packet");
    // The session goes on: the next stream works.
    const data = patternBytes(200_000, 3);
    const again = await echoThrough(t.port, data);
    assert(again instanceof Uint8Array && sameBytes(again, data), "no stream after the failure");
    await waitFor(() => t.laptop.session?.streamCount === 0, 2_000, "streams to close");
  });
});

Deno.test("a FIN lost with its packet resets its stream instead of leaving it half-open", async () => {
  await withLogs(async () => {
    await using t = labAndLaptop({}, { keepaliveMs: 60_000 });
    let refused = 0;
    t.relay.tap = (m) => {
      if (m.from === "laptop" && refused === 0 && carries(m.payload, "fin")) {
        refused++;
        throw new RangeError("Test: the link refuses this packet");
      }
    };
    // Without the FIN lab's side never ends, so this would hang until its deadline and throw;
    // with it reset, the local connection closes (whatever was echoed before that).
    await echoThrough(t.port, patternBytes(1_000), 5_000);
    assertEquals(refused, 1);
    await waitFor(
      () => (t.laptop.stats()?.resets.send_failed ?? 0) === 1,
      2_000,
      "the stream to be reset",
    );
    await waitFor(() => t.laptop.session?.streamCount === 0, 2_000, "the stream to be gone");
  });
});
