// kana.hold(): units of an allowance kept aside for a job in flight, until it commits what it used or releases them.

import type { EntitlementDecision } from '../config/decision.js';
import { describeValue } from '../config/option-checks.js';
import { isValidDelta, MAX_DELTA } from '../metering/metered-feature.js';

/**
 * Units kept aside by `kana.hold()` for work that is billed once it is done (a queue job, a
 * streamed LLM answer). While it lasts, the units count against the allowance on every instance
 * sharing the store. It lasts until `commit()` or `release()`, or `close()` of its kanaMeter; if
 * its process dies, until the store's lease on the units ends (RedisStore `leaseMs`, 10 s by
 * default, after the last renewal). The first of `commit()` and `release()` ends the hold; later
 * calls of either do nothing, so `release()` in a `finally` is safe after a `commit()`.
 * @example
 * const hold = await kana.hold(job.userId, 'exports', job.rows);
 * if (!hold.allowed) return refuse(hold.decision);
 * try { hold.commit(await runExport(job)); } finally { hold.release(); }
 */
export interface UsageHold {
  /** Whether the units are held: the work may go ahead. */
  readonly allowed: boolean;
  /** The decision, as `kana.check()` gives it (`delta`: the units asked for). */
  readonly decision: EntitlementDecision;
  /**
   * Ends the hold and bills `units` (default: the units held) through the queue, as `record()` does.
   * Fewer than held: the rest comes back to the allowance. More: the excess is billed, and counted
   * against the allowance at once. 0 bills nothing (as `release()`). After `close()`, the usage is
   * reported undelivered, like `record()` after close().
   * @throws TypeError when `units` is not an integer in 0..2147483647, or the hold was refused
   *   (nothing was held: bill usage that happened anyway with `kana.record()`).
   */
  commit(units?: number): void;
  /** Ends the hold and bills nothing: the units come back to the allowance. Does nothing on a refused hold. */
  release(): void;
}

/** A hold on `decision.delta` units: `end` gives them back, `bill` queues the units used (after `end`, in the same tick). */
export function createUsageHold(
  decision: EntitlementDecision,
  end: () => void,
  bill: (units: number) => void,
): UsageHold {
  let ended = false;
  const finish = (): boolean => {
    if (ended) return false;
    ended = true;
    end();
    return true;
  };
  return Object.freeze({
    allowed: decision.allowed,
    decision,
    commit(units: number = decision.delta): void {
      if (!decision.allowed) {
        throw new TypeError(
          `kana-meter: commit() on a refused hold (${decision.reason}, feature ${decision.featureId}): nothing was held; bill usage that happened anyway with kana.record().`,
        );
      }
      if (units !== 0 && !isValidDelta(units)) {
        throw new TypeError(
          `kana-meter: commit(): argument \`units\` must be an integer in 0..${MAX_DELTA}; got ${describeValue(units)}.`,
        );
      }
      // Given back and billed in one tick: the units never count twice, nor not at all.
      if (finish() && units > 0) bill(units);
    },
    release(): void {
      finish();
    },
  });
}
