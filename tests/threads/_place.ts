/**
 * Test helpers for a multi-threaded relay: a raw client placed on a chosen worker (the kernel
 * spreads connections over the workers' reusePort listeners, so a client reconnects until the
 * name table shows its name on the worker wanted), and frame reading.
 * @module
 */

import { RawPeer, text, waitFor } from "../_helpers/relay.ts";
import type { ThreadedRelay } from "../../lib/threads/threaded_relay.ts";
import { RelayClient, type RelayClientOptions } from "../../lib/client/client.ts";

/** Most reconnects before giving up on a worker (4 workers: 1 in 4 lands on each). */
const MAX_PLACEMENT_TRIES = 200;

/** A raw client registered as `name` on worker `worker`. */
export async function onWorker(
  relay: ThreadedRelay,
  worker: number,
  name: string,
): Promise<RawPeer> {
  for (let tries = 0; tries < MAX_PLACEMENT_TRIES; tries++) {
    const peer = await RawPeer.connect(relay.port, name);
    await waitFor(() => relay.workerOf(name) !== undefined, 5_000, `${name} registered`);
    if (relay.workerOf(name) === worker) return peer;
    await peer.close();
    await waitFor(() => relay.workerOf(name) === undefined, 5_000, `${name} freed`);
  }
  throw new Error(`No connection of ${name} landed on worker ${worker}`);
}

/** A RelayClient registered as `name` on worker `worker` (reconnecting until it lands there). */
export async function clientOnWorker(
  relay: ThreadedRelay,
  worker: number,
  name: string,
  options: Omit<RelayClientOptions, "port" | "name"> = {},
): Promise<RelayClient> {
  for (let tries = 0; tries < MAX_PLACEMENT_TRIES; tries++) {
    const client = await RelayClient.connect({ ...options, port: relay.port, name });
    if (relay.workerOf(name) === worker) return client;
    await client.close();
    await waitFor(() => relay.workerOf(name) === undefined, 5_000, `${name} freed`);
  }
  throw new Error(`No connection of ${name} landed on worker ${worker}`);
}

/** One delivered frame. */
export interface Delivered {
  from: string;
  payload: Uint8Array;
}

/** Reads one `sender|len|payload` frame. */
export async function readFrame(peer: RawPeer, timeoutMs = 10_000): Promise<Delivered> {
  let header = "";
  let bars = 0;
  while (bars < 2) {
    const c = await peer.readText(1, timeoutMs);
    if (c === "|") bars++;
    header += c;
    if (header.length > 300) throw new Error(`No frame header: ${JSON.stringify(header)}`);
  }
  const [from, len] = header.split("|");
  return { from, payload: await peer.read(Number(len), timeoutMs) };
}

/** A frame `dest|len|payload` as bytes. */
export function frame(dest: string, payload: Uint8Array | string): Uint8Array {
  const body = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const head = new TextEncoder().encode(`${dest}|${body.length}|`);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** A payload of `size` bytes that says who sent it and its number, and checks itself. */
export function numbered(from: string, i: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const tag = new TextEncoder().encode(`${from}:${i}:`);
  out.set(tag.subarray(0, size));
  for (let at = tag.length; at < size; at++) out[at] = (i * 31 + at) & 0xff;
  return out;
}

/** The sender and number of a {@linkcode numbered} payload; throws when it is damaged. */
export function checkNumbered(payload: Uint8Array): { from: string; i: number } {
  const head = text(payload.subarray(0, Math.min(64, payload.length)));
  const match = /^([^:]+):(\d+):/.exec(head);
  if (!match) throw new Error(`Not a numbered payload: ${JSON.stringify(head)}`);
  const i = Number(match[2]);
  const start = new TextEncoder().encode(match[0]).length;
  for (let at = start; at < payload.length; at++) {
    if (payload[at] !== ((i * 31 + at) & 0xff)) {
      throw new Error(`Payload ${match[1]}:${i} damaged at byte ${at}`);
    }
  }
  return { from: match[1], i };
}
