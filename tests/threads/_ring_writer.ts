/// <reference lib="deno.worker" />
// The writing thread of ring_test.ts: writes `records` records of varied sizes (0 to 300 B),
// each filled with its own pattern, as fast as the ring takes them, then says so.
import { RingWriter } from "../../lib/threads/ring.ts";

self.onmessage = async (event: MessageEvent<{ ring: SharedArrayBuffer; records: number }>) => {
  const { ring, records } = event.data;
  const writer = new RingWriter(ring);
  for (let tag = 0; tag < records; tag++) {
    const length = (tag * 37) % 301;
    const bytes = new Uint8Array(length);
    for (let i = 0; i < length; i++) bytes[i] = (tag * 31 + i * 7) & 0xff;
    while (!writer.tryWrite(tag, length, bytes)) await writer.waitForRoom(50);
  }
  self.postMessage("done");
};
