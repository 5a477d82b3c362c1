// One kanaMeter's entitlement machinery: Kana checks behind a breaker and a bounded queue, answers
// shared through the store, the cache, and leases on each allowance; wired to the delivery queue.

import type { EntitlementDecision } from '../config/decision.js';
import type { ObserveKanaCall } from '../config/metrics.js';
import type { Counter } from '../config/stats.js';
import type { KanaMeterTracing } from '../config/telemetry.js';
import type { DeliveryQueue } from '../delivery/queue.js';
import type { KanaClient } from '../kana/client.js';
import type { KanaMeterConfig } from '../options.js';
import { MemoryStore } from '../stores/memory-store.js';
import type { KanaMeterStore } from '../stores/store.js';
import { CheckBreaker } from './check-breaker.js';
import { CheckQueue } from './check-queue.js';
import { decisionFrom, fallbackDecision, isCheckRefused } from './decisions.js';
import { EntitlementLookup } from './entitlement-lookup.js';
import { type Entitlement, EntitlementCache } from './entitlements.js';
import { Leases } from './leases.js';
import { answeredFrom, SharedChecks } from './shared-checks.js';

export interface EnforcementOptions {
  config: Pick<
    KanaMeterConfig,
    | 'logger'
    | 'retry'
    | 'onKanaError'
    | 'onConfigError'
    | 'checkTimeoutMs'
    | 'checkConcurrency'
    | 'entitlementTtl'
    | 'staleIfError'
    | 'maxEntitlements'
  >;
  client: KanaClient;
  store: KanaMeterStore;
  counters: Record<Counter, number>;
  /** Usage not yet delivered counts against the allowance; usage it confirms leaves the fleet's count. */
  queue: DeliveryQueue;
  observeKanaCall: ObserveKanaCall | undefined;
  /** Traces check calls. @default none */
  tracing?: KanaMeterTracing | undefined;
}

export function createEnforcement({
  config,
  client,
  store,
  counters,
  queue,
  observeKanaCall,
  tracing,
}: EnforcementOptions) {
  const { logger } = config;
  const breaker: CheckBreaker = new CheckBreaker({
    backoff: config.retry,
    logger,
    counters,
    onKanaError: config.onKanaError,
    probe: (query) => entitlements.load(query.userId, query.featureId, query.delta, true),
  });
  const checks = new CheckQueue({
    client,
    breaker,
    checkTimeoutMs: config.checkTimeoutMs,
    concurrency: config.checkConcurrency,
    counters,
    logger,
    onKanaError: config.onKanaError,
    observeKanaCall,
    tracing,
  });
  const leases = new Leases({
    store,
    counters,
    logger,
    adoptAnswer: (entry, answer) => entitlements.adopt(entry, answeredFrom(answer)),
    // The store lost the answer: asked again as a cache miss would (Kana behind the breaker, or another instance's).
    recheck: async (entry) => {
      const found = await lookup.missed(entry.userId, entry.featureId, 1);
      if (found.source !== 'kana') throw found.error;
    },
  });
  const sharedChecks = new SharedChecks({
    store,
    instance: leases.instanceId,
    ask: (query, probe) => checks.ask(query, probe),
    checkTimeoutMs: config.checkTimeoutMs,
    ttl: config.entitlementTtl,
    counters,
  });
  const entitlements: EntitlementCache = new EntitlementCache({
    ask: (query, probe) => sharedChecks.ask(query, probe),
    ttl: config.entitlementTtl,
    staleIfError: config.staleIfError,
    maxEntries: config.maxEntitlements,
    undelivered: (userId, featureId) => queue.undeliveredDelta(userId, featureId),
    ledgerId: () => leases.ledgerId(),
    onEvict: (entry) => leases.retire(entry),
  });
  // Usage Kana confirmed (or never will) leaves the fleet's unconfirmed count.
  queue.onUsageConfirmed((userId, featureId, delta) => leases.changed(entitlements.confirm(userId, featureId, delta)));
  const lookup = new EntitlementLookup(entitlements, breaker);
  // This process's own store (the default): nobody else reads it, and the queue's undelivered usage is
  // added to each check already, so usage of a key never checked needs no entry of its own.
  const sharedStore = !(store instanceof MemoryStore);

  /** Who decides without an answer: `onConfigError` when Kana refused the check itself (as the gate does), else `onKanaError`. */
  const policyWithout = (error: unknown) => (isCheckRefused(error) ? config.onConfigError : config.onKanaError);

  return {
    entitlements,
    leases,
    lookup,

    /** Usage just queued: Kana's cached `used` lacks it, so count it here until the next fetch, and in the store until Kana confirms it. */
    countUsage(userId: string, featureId: string, delta: number): void {
      leases.changed(entitlements.countUsage(userId, featureId, delta, sharedStore));
    },

    /** kana.check(): the decision enforced requests get, holding nothing; never rejects for a Kana failure. */
    async check(userId: string, featureId: string, delta: number): Promise<EntitlementDecision> {
      const found = await lookup.find(userId, featureId, delta);
      if (found.entry === undefined) {
        return fallbackDecision(userId, featureId, delta, policyWithout(found.error), found.error);
      }
      // Looks without holding: units a reservation brings stay in this instance's block.
      const taken = await leases.take(found.entry, delta, false);
      return decisionFrom(found.entry, delta, found.source, found.error, taken);
    },

    /**
     * kana.hold(): the decision check() would give, with the units held (`held`) until `unhold`, on
     * every instance sharing the store; nothing held when refused, or without an answer (fallback).
     */
    async hold(
      userId: string,
      featureId: string,
      delta: number,
    ): Promise<{ decision: EntitlementDecision; entry: Entitlement | undefined; held: number }> {
      const found = await lookup.find(userId, featureId, delta);
      if (found.entry === undefined) {
        return {
          decision: fallbackDecision(userId, featureId, delta, policyWithout(found.error), found.error),
          entry: undefined,
          held: 0,
        };
      }
      const taken = await leases.take(found.entry, delta, true);
      return {
        decision: decisionFrom(found.entry, delta, found.source, found.error, taken),
        entry: found.entry,
        held: taken.held,
      };
    },

    /** A hold ended: its units come back (what it used comes back as captured usage, in the same tick). */
    unhold(entry: Entitlement | undefined, held: number): void {
      if (entry === undefined || held === 0) return;
      entry.ledger.releaseHeld(held);
      leases.changed(entry);
    },

    gauges() {
      return { checksAvailable: !breaker.isOpen, entitlements: entitlements.size, ...leases.gauges() };
    },

    /** First at close(): no more probes of Kana. */
    stop(): void {
      breaker.stop();
    },

    /** Last at close(), once the queue has delivered what it could: every block goes back to the store. */
    close(): Promise<void> {
      return leases.close();
    },
  };
}
