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
 * @module
 */

import type { QueueShare } from "../io/outbox.ts";
import type { SlackMeter } from "../io/buffer_pool.ts";
import { GUARANTEED_QUEUE_BYTES } from "../limits.ts";

/** What the budget holds for one IP's receivers. */
class IpGroup {
  usedBytes = 0;
  receivers = 0;
  constructor(readonly key: string) {}
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
}

/** The global memory budget of a relay. */
export class MemoryBudget implements SlackMeter {
  /** Bytes all receivers may hold together; 0 when there is no global budget. */
  readonly budgetBytes: number;
  /** Bytes held now, over all receivers. */
  usedBytes = 0;
  readonly #maxPerReceiver: number;
  readonly #guaranteed: number;
  readonly #groups = new Map<string, IpGroup>();

  constructor(options: MemoryBudgetOptions) {
    this.budgetBytes = options.budgetBytes;
    this.#maxPerReceiver = options.maxPerReceiverBytes;
    this.#guaranteed = Math.min(
      options.guaranteedBytes ?? GUARANTEED_QUEUE_BYTES,
      options.maxPerReceiverBytes,
    );
  }

  /**
   * Read buffers pinned by queued views beyond the bytes those views cover (a slow receiver
   * keeping a 256 KiB buffer alive with one small view): counted in `usedBytes`, so the
   * budget bounds real memory, not only queued bytes. Not charged to any receiver or IP.
   */
  chargeSlack(bytes: number): void {
    this.usedBytes += bytes;
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
    this.#budget.usedBytes += bytes;
    this.#group.usedBytes += bytes;
  }

  /** {@linkcode QueueShare}: whether senders must wait while `queuedBytes` are queued. */
  full(queuedBytes: number): boolean {
    if (queuedBytes <= 0) return false;
    const budget = this.#budget;
    const total = budget.budgetBytes;
    if (total === 0) return queuedBytes > this.#max;
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
