/**
 * The relay's global memory budget: the bytes queued for receivers, and held in flight to
 * their sockets, over all connections. Each receiver's `Outbox` draws on it through
 * a {@linkcode ReceiverShare}; a sender whose receiver is "full" stops being read (the usual
 * backpressure), so senders stop adding to the total while receivers that read keep flowing.
 *
 * How the budget is shared, so that one receiver or one IP cannot take all of it:
 *
 * ```
 * free = budget − used (over all receivers)
 * a receiver's senders wait when its queue q is above 0 and
 *   used ≥ budget                              (the budget is spent: everyone waits for an empty queue)
 *   or q > guaranteed and ( q > maxBufferBytes (the per-receiver cap)
 *                         or ipUsed > free )   (its IP's receivers together hold more than is free)
 * ```
 *
 * - Up to {@linkcode GUARANTEED_QUEUE_BYTES} per receiver are always allowed while the budget
 *   is not spent, so a fresh pair of clients moves messages at full speed however full the
 *   pool is; once it is spent, a receiver that reads still drains its queue to empty and its
 *   senders go on, one read at a time.
 * - The cap of an IP shrinks as the pool fills (a dynamic threshold, as in shared-buffer
 *   switches): alone, one IP's receivers stop at half the budget; k IPs that all push stop at
 *   k/(k+1) of it, and there is always room left for the others.
 * - A receiver is grouped by its IP (an IPv6 /64 counts as one): the bytes are held for it,
 *   because it does not read.
 *
 * The total can pass the budget only by what senders had already read when they were told to
 * wait: at most one read buffer each (`MAX_READ_BYTES`). The total includes the slack of read
 * buffers that queued views keep alive ({@linkcode MemoryBudget.chargeSlack}).
 *
 * Several workers of one process (`--threads N`) share one budget through a
 * {@linkcode SharedBudget}: each keeps its own total in memory (no atomic operation per
 * charge) and publishes it to its slot of a `SharedArrayBuffer` whenever it moved by
 * {@linkcode PUBLISH_STEP_BYTES}, reading the others' slots at the same moment. `usedBytes`
 * is its own total plus the others' last published totals, so the process as a whole passes
 * the budget by at most about two steps per worker on top of the read buffers above.
 *
 * At N workers the budget covers the whole process's relay memory, not only the queues:
 *
 * ```
 * budget ≥ reserved (the rings between workers: fixed, set aside at start, lib/threads/memory_plan.ts)
 *        + used     (queues and pinned read buffers, per worker: slots 0 … N−1
 *                    + held outside the queues, per worker: slots N … 2N−1, a HeldMeter:
 *                      ring records held aside for a blocked receiver, stream-layer chunks
 *                      from another worker not yet queued)
 * senders wait as above, with budget − reserved in place of the budget (and pass it as above,
 * and by what was in a ring when a receiver was stopped)
 * ```
 * @module
 */

import type { QueueShare } from "../io/outbox.ts";
import type { SlackMeter } from "../io/buffer_pool.ts";
import { GUARANTEED_QUEUE_BYTES } from "../limits.ts";

/**
 * Bytes a worker's own total may move before it publishes it to the shared slots and reads the
 * others': small against the budget (256 MiB by default), large against one frame, so the
 * shared memory is touched once per many charges.
 */
export const PUBLISH_STEP_BYTES = 64 * 1024;

/** The slots through which the workers of one process share one budget. */
export interface SharedBudget {
  /** Two BigInt64 slots per worker (`sharedBudgetBuffer`). */
  buffer: SharedArrayBuffer;
  /** This worker's index (its slots are `slot` and `workers + slot`). */
  slot: number;
  /**
   * Bytes of the budget set aside at start for memory the workers hold whether it is used or
   * not (the rings between them): the queues share what is left.
   * @default {0}
   */
  reservedBytes?: number;
}

/**
 * A buffer of slots for `workers` workers sharing one budget: per worker one for its queues
 * ({@linkcode MemoryBudget}) and one for what it holds outside them ({@linkcode HeldMeter}).
 */
export function sharedBudgetBuffer(workers: number): SharedArrayBuffer {
  // One 64-byte cache line per slot, so a worker's publish does not slow the others' reads.
  return new SharedArrayBuffer(2 * workers * 64);
}

/** Bytes in use over every slot of a {@linkcode sharedBudgetBuffer} (the whole process). */
export function sharedUsedBytes(buffer: SharedArrayBuffer): number {
  const slots = new BigInt64Array(buffer);
  let used = 0;
  for (let at = 0; at < slots.length; at += SLOT_STRIDE) used += Number(Atomics.load(slots, at));
  return used;
}

/** Words of a BigInt64Array between two slots (one cache line). */
const SLOT_STRIDE = 8;

/** What the budget holds for one IP's receivers. */
class IpGroup {
  usedBytes = 0;
  receivers = 0;
  constructor(readonly key: string) {}
}

/**
 * What one worker holds for its receivers outside their queues, charged to the shared budget
 * (its second slot, read by every worker's {@linkcode MemoryBudget} with the others'): ring
 * records held aside for a receiver over its share, and chunks of the stream layer between
 * workers not yet queued. Published every {@linkcode PUBLISH_STEP_BYTES} and when back at 0.
 */
export class HeldMeter {
  #bytes = 0;
  #published = 0;
  readonly #slots: BigInt64Array;
  readonly #at: number;

  /** @param shared the worker's slots (the second of its two) */
  constructor(shared: SharedBudget) {
    this.#slots = new BigInt64Array(shared.buffer);
    const workers = this.#slots.length / SLOT_STRIDE / 2;
    this.#at = (workers + shared.slot) * SLOT_STRIDE;
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Adds `bytes` (negative: gives them back). */
  add(bytes: number): void {
    this.#bytes += bytes;
    if (
      Math.abs(this.#bytes - this.#published) >= PUBLISH_STEP_BYTES ||
      (this.#bytes === 0 && this.#published !== 0)
    ) {
      this.#published = this.#bytes;
      Atomics.store(this.#slots, this.#at, BigInt(this.#bytes));
    }
  }
}

/** Options of a {@linkcode MemoryBudget}. */
export interface MemoryBudgetOptions {
  /** Bytes all receivers may hold together; 0 for no global budget (per-receiver caps only). */
  budgetBytes: number;
  /** Bytes one receiver may hold at most (`maxBufferBytes`). */
  maxPerReceiverBytes: number;
  /**
   * Bytes each receiver may always hold while the budget is not spent.
   * @default {GUARANTEED_QUEUE_BYTES}
   */
  guaranteedBytes?: number;
  /** Share the budget with the other workers of this process (`--threads`). */
  shared?: SharedBudget;
}

/** The global memory budget of a relay. */
export class MemoryBudget implements SlackMeter {
  /** Bytes all receivers may hold together; 0 when there is no global budget. */
  readonly budgetBytes: number;
  /** The part of `budgetBytes` set aside at start (`SharedBudget.reservedBytes`). */
  readonly reservedBytes: number;
  /** `budgetBytes − reservedBytes`: what queues and held bytes share. */
  readonly poolBytes: number;
  /** Bytes held now by this worker's receivers. */
  #local = 0;
  /** The other workers' totals as last read (0 without a shared budget). */
  #others = 0;
  /** `#local` as last published. */
  #published = 0;
  readonly #slots: BigInt64Array | undefined;
  readonly #slot: number;
  readonly #maxPerReceiver: number;
  readonly #guaranteed: number;
  readonly #groups = new Map<string, IpGroup>();

  constructor(options: MemoryBudgetOptions) {
    this.budgetBytes = options.budgetBytes;
    this.reservedBytes = options.budgetBytes > 0 ? options.shared?.reservedBytes ?? 0 : 0;
    this.poolBytes = this.budgetBytes - this.reservedBytes;
    if (this.budgetBytes > 0 && this.poolBytes <= 0) {
      throw new RangeError(
        `Memory budget of ${this.budgetBytes} bytes has nothing left after ${this.reservedBytes} set aside`,
      );
    }
    this.#maxPerReceiver = options.maxPerReceiverBytes;
    this.#guaranteed = Math.min(
      options.guaranteedBytes ?? GUARANTEED_QUEUE_BYTES,
      options.maxPerReceiverBytes,
    );
    this.#slots = options.shared ? new BigInt64Array(options.shared.buffer) : undefined;
    this.#slot = (options.shared?.slot ?? 0) * SLOT_STRIDE;
  }

  /**
   * Bytes held now, over all receivers (of every worker, with a shared budget, and what the
   * workers hold outside the queues); the reserved part is not in it.
   */
  get usedBytes(): number {
    return this.#local + this.#others;
  }

  /** Bytes held now by this worker's receivers alone. */
  get localBytes(): number {
    return this.#local;
  }

  /** Adds `bytes` (negative: gives them back) to this worker's total. */
  add(bytes: number): void {
    this.#local += bytes;
    // Published at every step, and at once when this worker's queues are empty again.
    if (
      this.#slots !== undefined &&
      (Math.abs(this.#local - this.#published) >= PUBLISH_STEP_BYTES ||
        (this.#local === 0 && this.#published !== 0))
    ) {
      this.sync();
    }
  }

  /**
   * Publishes this worker's total and reads the others' (on its own after every
   * {@linkcode PUBLISH_STEP_BYTES}; the server also calls it from its timeout sweep, so a quiet
   * worker sees the others' totals fall).
   */
  sync(): void {
    const slots = this.#slots;
    if (slots === undefined) return;
    this.#published = this.#local;
    Atomics.store(slots, this.#slot, BigInt(this.#local));
    let others = 0;
    for (let at = 0; at < slots.length; at += SLOT_STRIDE) {
      if (at !== this.#slot) others += Number(Atomics.load(slots, at));
    }
    this.#others = others;
  }

  /**
   * Read buffers pinned by queued views beyond the bytes those views cover (a slow receiver
   * keeping a 256 KiB buffer alive with one small view): counted in `usedBytes`, so the
   * budget bounds real memory, not only queued bytes. Not charged to any receiver or IP.
   */
  chargeSlack(bytes: number): void {
    this.add(bytes);
    this.slackBytes += bytes;
  }

  /** The part of `usedBytes` that is slack of pinned read buffers. */
  slackBytes = 0;

  /** IP groups holding bytes or receivers now (for tests and stats). */
  get groups(): number {
    return this.#groups.size;
  }

  /**
   * A share for one receiver, grouped with the others of `ipKey`. Release it when the
   * receiver ends (after its outbox is closed).
   */
  share(ipKey: string): ReceiverShare {
    let group = this.#groups.get(ipKey);
    if (group === undefined) {
      group = new IpGroup(ipKey);
      this.#groups.set(ipKey, group);
    }
    group.receivers++;
    return new ReceiverShare(this, group, this.#maxPerReceiver, this.#guaranteed);
  }

  /** @internal A share was released. */
  _released(group: IpGroup): void {
    if (--group.receivers === 0 && group.usedBytes === 0) this.#groups.delete(group.key);
  }
}

/**
 * One receiver's share of a {@linkcode MemoryBudget}: the {@linkcode QueueShare} its
 * `Outbox` charges and asks. Charging is three additions, no lookup.
 */
export class ReceiverShare implements QueueShare {
  readonly #budget: MemoryBudget;
  readonly #group: IpGroup;
  readonly #max: number;
  readonly #guaranteed: number;
  #released = false;

  constructor(budget: MemoryBudget, group: IpGroup, maxBytes: number, guaranteedBytes: number) {
    this.#budget = budget;
    this.#group = group;
    this.#max = maxBytes;
    this.#guaranteed = guaranteedBytes;
  }

  /** {@linkcode QueueShare}: the receiver's queue changed by `bytes`. */
  charge(bytes: number): void {
    this.#budget.add(bytes);
    this.#group.usedBytes += bytes;
  }

  /** {@linkcode QueueShare}: whether senders must wait while `queuedBytes` are queued. */
  full(queuedBytes: number): boolean {
    if (queuedBytes <= 0) return false;
    const budget = this.#budget;
    const total = budget.poolBytes;
    if (budget.budgetBytes === 0) return queuedBytes > this.#max;
    if (budget.usedBytes >= total) return true;
    if (queuedBytes <= this.#guaranteed) return false;
    return queuedBytes > this.#max || this.#group.usedBytes > total - budget.usedBytes;
  }

  /** The receiver has ended (its outbox closed, so it holds nothing). Safe twice. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#budget._released(this.#group);
  }
}
