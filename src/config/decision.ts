// The entitlement decision of an enforced request: the types the gate, the usage record, options and users share.

import type { KanaError } from './errors.js';

/** Why an enforced request was allowed or refused. */
export type DecisionReason =
  /** The plan allows it: BINARY access, an unlimited or overage-enabled allowance, or enough left. */
  | 'allowed'
  /** The feature is not in the user's plan (no active or trialing subscription has it): 402. */
  | 'not-in-plan'
  /** The allowance of a consumable feature is used up and overage is off: 429. */
  | 'limit-reached'
  /** Kana could not be asked; `onKanaError` decided (allowed, or 503). */
  | 'kana-error';

/**
 * Where a decision came from: a Kana call made for it, the cache, an expired answer kept deciding
 * because Kana could not be asked (stale-if-error), `onKanaError` when Kana failed for a user it
 * has never answered for. `'replay'` is no longer given: an Idempotency-Key retry now gets
 * the stored response and its handler does not run (kept in the type for compatibility).
 */
export type DecisionSource = 'kana' | 'cache' | 'stale' | 'fallback' | 'replay';

/** What an enforced request does when its entitlement cannot be checked and no stale answer is left. */
export type KanaErrorPolicy = 'allow' | 'deny';

/** Whether a route's requests are checked: `true` refuses what the plan does not allow; `'shadow'` decides the same way but never refuses. */
export type EnforceMode = boolean | 'shadow';

/**
 * The entitlement decision of one enforced request: `req.kana` on allowed requests, and what
 * `onDenied` receives. Usage counts include this process's usage Kana has not confirmed yet.
 */
export interface EntitlementDecision {
  readonly allowed: boolean;
  readonly reason: DecisionReason;
  /** The refusal's HTTP status (402, 429, 503); undefined when allowed. */
  readonly status: 402 | 429 | 503 | undefined;
  readonly userId: string;
  readonly featureId: string;
  /** Units checked: the route's fixed delta, or 1 when the delta is computed from the response. */
  readonly delta: number;
  readonly source: DecisionSource;
  /** Units used this period, before this request; null when the feature has no allowance (BINARY, not in plan, unknown). */
  readonly used: number | null;
  /** The allowance this period; null when unlimited, or when there is no allowance. */
  readonly budget: number | null;
  /** Units left once this request is counted (a refused one counts nothing), never below 0; null when there is no finite budget. */
  readonly remaining: number | null;
  /** Whether usage may go past the budget. */
  readonly overageEnabled: boolean;
  /** When the usage period ends and the allowance comes back; null when it never resets or is unknown. */
  readonly resetAt: Date | null;
  /** Why Kana could not be asked (source 'fallback' or 'stale'). */
  readonly error: KanaError | undefined;
}

/** The decision `onDenied` receives: a refusal, with its status. */
export interface RefusedDecision extends EntitlementDecision {
  readonly allowed: false;
  readonly status: 402 | 429 | 503;
}
