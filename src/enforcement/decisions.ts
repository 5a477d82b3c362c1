// Entitlement decisions: what an answer (fresh, cached or stale) or a failed check means for a request of `delta` units.

import type { DecisionSource, EntitlementDecision, KanaErrorPolicy } from '../config/decision.js';
import { KanaError } from '../config/errors.js';
import { isKeyRefusal } from '../kana/key-status.js';
import type { Entitlement } from './entitlements.js';
import type { Taken } from './key-ledger.js';

/** The decision for `delta` units from an answer Kana gave and what taking units for them decided (leases.ts). */
export function decisionFrom(
  entry: Entitlement,
  delta: number,
  source: DecisionSource,
  error: unknown,
  { outcome, used }: Taken,
): EntitlementDecision {
  const allowed = outcome === 'allowed';
  const budget = entry.budget;
  return {
    allowed,
    reason: outcome,
    status: allowed ? undefined : outcome === 'not-in-plan' ? 402 : 429,
    userId: entry.userId,
    featureId: entry.featureId,
    delta,
    source,
    used,
    budget,
    remaining: budget === null || used === null ? null : Math.max(0, budget - used - (allowed ? delta : 0)),
    overageEnabled: entry.overageEnabled,
    resetAt: entry.resetAt,
    error: error instanceof KanaError ? error : undefined,
  };
}

/** Kana could not be asked and has never answered for this user and feature: `onKanaError` decides. */
export function fallbackDecision(
  userId: string,
  featureId: string,
  delta: number,
  onKanaError: KanaErrorPolicy,
  error: unknown,
): EntitlementDecision {
  const allowed = onKanaError === 'allow';
  return {
    allowed,
    reason: 'kana-error',
    status: allowed ? undefined : 503,
    userId,
    featureId,
    delta,
    source: 'fallback',
    used: null,
    budget: null,
    remaining: null,
    overageEnabled: false,
    resetAt: null,
    error: error instanceof KanaError ? error : undefined,
  };
}

/**
 * Kana answered the check, and refused it for what it asks (a user or a feature it does not know: not
 * retryable, not the key): it is not an outage, and nothing served for it could be billed, so `onConfigError`
 * decides it, not `onKanaError`.
 */
export function isCheckRefused(error: unknown): error is KanaError {
  return error instanceof KanaError && !error.retryable && error.code !== 'KANA_ABORTED' && !isKeyRefusal(error);
}
