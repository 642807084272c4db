/**
 * Relay nodes for the cluster tests: real `relay serve --cluster` processes on a NATS cluster,
 * and the small waits the tests share.
 */
import { RelayClient } from "../../lib/client/client.ts";
import { ServeProcess } from "../_helpers/relay.ts";

/** Starts `relay serve --cluster URLS --node-name NODE` (R3 buckets on a 3-server cluster). */
export function startRelayNode(
  urls: string[],
  node: string,
  extra: string[] = [],
): Promise<ServeProcess> {
  return ServeProcess.start([
    "--cluster",
    urls.join(","),
    "--node-name",
    node,
    "--cluster-replicas",
    String(Math.min(3, urls.length)),
    ...extra,
  ]);
}

/** Waits until a `who` on the relay at `port` lists every one of `names` (the directory spread). */
export async function waitForNames(port: number, names: string[], timeoutMs = 10_000) {
  await using probe = await RelayClient.connect({
    port,
    name: `probe-${crypto.randomUUID().slice(0, 8)}`,
  });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const online = new Set(await probe.who());
    if (names.every((n) => online.has(n))) return;
    if (Date.now() > deadline) {
      throw new Error(`Not listed on port ${port} within ${timeoutMs} ms: ${names.join(", ")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A payload of `length` bytes that says who sent it and which one it is, checkable whole. */
export function pattern(tag: number, seq: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  view.setUint32(0, tag);
  view.setUint32(4, seq);
  for (let i = 8; i < length; i++) out[i] = (tag * 31 + seq * 7 + i) & 0xff;
  return out;
}

/** Whether `payload` is exactly `pattern(tag, seq, length)` for the tag and seq it names. */
export function checkPattern(payload: Uint8Array): { tag: number; seq: number } | undefined {
  if (payload.length < 8) return undefined;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  const tag = view.getUint32(0);
  const seq = view.getUint32(4);
  for (let i = 8; i < payload.length; i++) {
    if (payload[i] !== ((tag * 31 + seq * 7 + i) & 0xff)) return undefined;
  }
  return { tag, seq };
}

/** Resident memory of a process, in bytes (Linux), or undefined. */
export function rssBytes(pid: number): number | undefined {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = /VmRSS:\s+(\d+) kB/.exec(status);
    return kb ? Number(kb[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Registers `name` on `port` as soon as the cluster lets it; returns the client and the wait. */
export async function claimWhenFree(port: number, name: string, timeoutMs: number) {
  const started = performance.now();
  for (;;) {
    try {
      const client = await RelayClient.connect({ port, name, connectTimeoutMs: 2_000 });
      return { client, ms: performance.now() - started };
    } catch (error) {
      if (!/already registered|name_taken/i.test(String(error))) throw error;
      if (performance.now() - started > timeoutMs) {
        throw new Error(`${name} still taken after ${timeoutMs} ms`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
