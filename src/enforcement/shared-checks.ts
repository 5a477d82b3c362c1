// One Kana check per key per TTL for the whole fleet: a fresh answer from the store, or the store's lock and a Kana call whose answer every instance then shares; waiters poll, never block.

import { KanaError, type KanaErrorCode } from '../config/errors.js';
import type { Counter } from '../config/stats.js';
import type { EntitlementAnswer, EntitlementQuery } from '../kana/client.js';
import { isRetryableCode } from '../kana/retry-policy.js';
import type { CheckTicket, KanaMeterStore, StoredAnswer, StoreKey } from '../stores/store.js';
import type { Answered } from './entitlements.js';

/** First pause between two polls of another instance's check, doubled up to POLL_MAX_MS. */
export const POLL_FIRST_MS = 5;
export const POLL_MAX_MS = 50;
/** The check lock outlives a check's time limits by this: past it, the holder counts as gone (dead, or too slow) and another instance checks. */
export const LOCK_MARGIN_MS = 100;

export interface SharedChecksOptions {
  store: KanaMeterStore;
  /** This instance's name in the store's check lock. */
  instance: string;
  /** Asks Kana itself (the check queue: batching, the breaker, the time limit). */
  ask: (query: EntitlementQuery, probe: boolean) => Promise<EntitlementAnswer>;
  /** The time limit of one check: the lock is held at most twice that (a slot, then the call) and a margin, after which a waiting instance takes the check over. */
  checkTimeoutMs: number;
  /** How long an answer is fresh (entitlementTtl). */
  ttl: number;
  counters: Record<Counter, number>;
}

export class SharedChecks {
  readonly #options: SharedChecksOptions;

  constructor(options: SharedChecksOptions) {
    this.#options = options;
  }

  /**
   * Kana's answer for a key: another instance's if still fresh in the store, else this instance's
   * own check, shared through the store. Without the store (unavailable, failing) or for the
   * breaker's probe, this instance asks Kana alone.
   */
  async ask(query: EntitlementQuery, probe: boolean): Promise<Answered> {
    const { store, checkTimeoutMs } = this.#options;
    if (probe || !store.available) return this.#askAlone(query, probe);
    const key: StoreKey = { userId: query.userId, featureId: query.featureId };
    // Long enough for the holder's lock to end and for another instance's take-over check: a holder that
    // died costs a wait of at most one lock, then this instance (or another) checks; never onKanaError while Kana answers.
    const deadline = Date.now() + 3 * checkTimeoutMs + 2 * LOCK_MARGIN_MS;
    let pause = POLL_FIRST_MS;
    for (;;) {
      let ticket: CheckTicket;
      try {
        ticket = await this.#beginCheck(key);
      } catch {
        return this.#askAlone(query, probe);
      }
      switch (ticket.status) {
        case 'fresh':
          this.#options.counters.sharedAnswers++;
          return answeredFrom(ticket.answer);
        case 'check':
          return this.#check(key, query, ticket.epoch);
        case 'failed': {
          // Retryable as the retry table says of its code: a check Kana refused stays refused on every instance.
          const code = knownCode(ticket.code);
          throw new KanaError(code, "another instance's check of this entitlement failed just now", {
            retryable: isRetryableCode(code),
          });
        }
        case 'wait': {
          const left = deadline - Date.now();
          if (left <= 0) {
            throw new KanaError(
              'KANA_TIMEOUT',
              `other instances' checks did not answer within ${3 * checkTimeoutMs + 2 * LOCK_MARGIN_MS} ms`,
              {
                retryable: true,
              },
            );
          }
          await pauseFor(Math.min(pause, ticket.waitMs, left));
          pause = Math.min(pause * 2, POLL_MAX_MS);
        }
      }
    }
  }

  #beginCheck(key: StoreKey): Promise<CheckTicket> {
    const { store, instance, checkTimeoutMs } = this.#options;
    // A check may wait checkTimeoutMs for a slot, then take as long: the lock outlives both. An instance that dies
    // holding it keeps the others waiting no longer; a shorter lock would make slow (not dead) holders' checks twice.
    return Promise.resolve(store.beginCheck(key, { instance, lockMs: 2 * checkTimeoutMs + LOCK_MARGIN_MS }));
  }

  /** This instance holds the lock: ask Kana, then store the answer (or the failure) for every instance. */
  async #check(key: StoreKey, query: EntitlementQuery, epoch: number): Promise<Answered> {
    const { store, instance, ttl } = this.#options;
    let answer: EntitlementAnswer;
    try {
      answer = await this.#options.ask(query, false);
    } catch (error) {
      const failed = error instanceof KanaError ? error.code : 'KANA_BAD_RESPONSE';
      // The others stop waiting and decide without Kana until the lock ends; nobody asks Kana again meanwhile.
      void Promise.resolve()
        .then(() => store.storeAnswer(key, { instance, epoch, outcome: { failed } }))
        .catch(() => {});
      throw error;
    }
    try {
      const receipt = await store.storeAnswer(key, { instance, epoch, outcome: storedOutcome(answer, ttl) });
      if (receipt.status === 'stored') return answeredFrom(receipt.answer);
    } catch {
      // The store failed: the answer still decides here.
    }
    return { answer, epoch: 0, ttlMs: undefined };
  }

  async #askAlone(query: EntitlementQuery, probe: boolean): Promise<Answered> {
    return { answer: await this.#options.ask(query, probe), epoch: 0, ttlMs: undefined };
  }
}

/** A stored answer as the cache takes it. */
export function answeredFrom(stored: StoredAnswer): Answered {
  return {
    answer: {
      access: stored.access,
      reason: '',
      consumption: stored.consumable
        ? { used: stored.used, budget: stored.budget, overageEnabled: stored.overageEnabled }
        : null,
      period:
        stored.periodStart === null || stored.periodEnd === null
          ? null
          : { start: new Date(stored.periodStart), end: new Date(stored.periodEnd) },
    },
    epoch: stored.epoch,
    ttlMs: stored.ttlMs,
  };
}

function storedOutcome(answer: EntitlementAnswer, ttlMs: number): Omit<StoredAnswer, 'epoch'> {
  const { consumption, period } = answer;
  return {
    access: answer.access,
    consumable: consumption !== null,
    used: consumption?.used ?? 0,
    budget: consumption?.budget ?? null,
    overageEnabled: consumption?.overageEnabled ?? false,
    periodStart: period?.start.getTime() ?? null,
    periodEnd: period?.end.getTime() ?? null,
    ttlMs,
  };
}

/** The failed check's KanaError code, as the store kept it (written by kana-meter; anything else reads as unreachable). */
function knownCode(code: string): KanaErrorCode {
  return /^KANA_[A-Z_]+$/.test(code) ? (code as KanaErrorCode) : 'KANA_UNREACHABLE';
}

function pauseFor(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
