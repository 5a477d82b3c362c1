// The entitlement check as GraphQL: canUseFeature (and showUsage, for the period) for one or many checks in one document, read field by field.

import type { KanaError } from '../config/errors.js';
import { badResponse, classifyFailure, type GraphQLErrorLike } from './retry-policy.js';

/**
 * Most checks sent in one document. Twenty keeps a document small (about 4 KB with the period)
 * and its answer quick to execute, while 16 calls in flight still carry 320 checks.
 */
export const MAX_CHECKS_PER_DOCUMENT = 20;

/** What an entitlement check asks: may this user use `delta` units of this feature now? */
export interface EntitlementQuery {
  userId: string;
  featureId: string;
  /** Units the request would use. */
  delta: number;
}

/** Kana's answer to an entitlement check: canUseFeature, plus the current usage period from showUsage. */
export interface EntitlementAnswer {
  /** Kana's verdict for the delta asked. */
  readonly access: boolean;
  /** Kana's human-readable reason. */
  readonly reason: string;
  /** The allowance of a CONSUMABLE feature in the user's plan; null for BINARY features and features not in the plan. */
  readonly consumption: {
    readonly used: number;
    /** null = unlimited. */
    readonly budget: number | null;
    readonly overageEnabled: boolean;
  } | null;
  /** The current usage period; null when usage never resets, there is no allowance to reset, or it was not asked or failed. */
  readonly period: { readonly start: Date; readonly end: Date } | null;
}

/**
 * One check's outcome in a document: Kana's answer, the error Kana gave for that check, or
 * 'lost': Kana answered no data for it because another field of the document failed (both root
 * fields are non-null, so one field's error nulls the whole answer): ask again.
 */
export type CheckOutcome = EntitlementAnswer | KanaError | 'lost';

/** A document's answer, check by check, and the error of its period fields, if they failed. */
export interface CheckResults {
  readonly outcomes: readonly CheckOutcome[];
  /** showUsage failed (the checks themselves may still have answered). */
  readonly periodError: KanaError | undefined;
}

/** A GraphQL error with its path: the response key (alias) of the root field it belongs to comes first. */
export interface FieldError extends GraphQLErrorLike {
  path?: readonly (string | number)[];
}

export interface CheckDocument {
  readonly document: string;
  readonly variables: Record<string, unknown>;
  /** Response keys of each check's canUseFeature, and of its showUsage when the period is asked. */
  readonly keys: readonly { readonly check: string; readonly period: string | undefined }[];
}

const CHECK_SELECTION = '{ access reason consumption { used budget overageEnabled } }';
const PERIOD_SELECTION = '{ current { periodStart periodEnd } }';

// One check: the root fields unaliased, as Kana's docs write them.
const SINGLE_CHECK = `query checkEntitlement($userId: String!, $featureId: String!, $delta: Int) {
  canUseFeature(userId: $userId, featureId: $featureId, delta: $delta) ${CHECK_SELECTION}
}`;
const SINGLE_CHECK_WITH_PERIOD = `query checkEntitlement($userId: String!, $featureId: String!, $delta: Int) {
  canUseFeature(userId: $userId, featureId: $featureId, delta: $delta) ${CHECK_SELECTION}
  showUsage(userId: $userId, featureId: $featureId) ${PERIOD_SELECTION}
}`;

/** Documents for n > 1 checks, built once per (n, period). */
const batchDocuments = new Map<string, string>();

/** The document asking `queries` (at most MAX_CHECKS_PER_DOCUMENT), with the period or without. */
export function checkDocument(queries: readonly EntitlementQuery[], period: boolean): CheckDocument {
  if (queries.length === 1) {
    const [{ userId, featureId, delta }] = queries as [EntitlementQuery];
    return {
      document: period ? SINGLE_CHECK_WITH_PERIOD : SINGLE_CHECK,
      variables: { userId, featureId, delta },
      keys: [{ check: 'canUseFeature', period: period ? 'showUsage' : undefined }],
    };
  }
  // Several: aliases c0, c1, ... (and p0, p1, ... for the periods), each with its own variables.
  const variables: Record<string, unknown> = {};
  const keys: { check: string; period: string | undefined }[] = [];
  queries.forEach(({ userId, featureId, delta }, i) => {
    variables[`u${i}`] = userId;
    variables[`f${i}`] = featureId;
    variables[`d${i}`] = delta;
    keys.push({ check: `c${i}`, period: period ? `p${i}` : undefined });
  });
  const id = `${queries.length}:${period}`;
  let document = batchDocuments.get(id);
  if (document === undefined) {
    const parameters: string[] = [];
    const fields: string[] = [];
    for (let i = 0; i < queries.length; i++) {
      parameters.push(`$u${i}: String!, $f${i}: String!, $d${i}: Int`);
      fields.push(`  c${i}: canUseFeature(userId: $u${i}, featureId: $f${i}, delta: $d${i}) ${CHECK_SELECTION}`);
      if (period) fields.push(`  p${i}: showUsage(userId: $u${i}, featureId: $f${i}) ${PERIOD_SELECTION}`);
    }
    document = `query checkEntitlements(${parameters.join(', ')}) {\n${fields.join('\n')}\n}`;
    batchDocuments.set(id, document);
  }
  return { document, variables, keys };
}

/**
 * Reads a document's answer check by check: `data` may be null or partial, and each error names
 * the field it belongs to by its path. A check whose canUseFeature has an error fails with it; one
 * with data is answered (with its period, if that came too); one with neither was lost.
 */
export function readCheckResults(
  data: Record<string, unknown> | null,
  errors: readonly FieldError[],
  { keys }: CheckDocument,
): CheckResults {
  const errorsByKey = new Map<string, FieldError[]>();
  for (const error of errors) {
    const key = String(error.path?.[0]);
    const list = errorsByKey.get(key);
    if (list) list.push(error);
    else errorsByKey.set(key, [error]);
  }
  let periodErrors: FieldError[] | undefined;
  const outcomes = keys.map(({ check, period }): CheckOutcome => {
    const failedPeriod = period === undefined ? undefined : errorsByKey.get(period);
    if (failedPeriod) periodErrors ??= failedPeriod;
    const failed = errorsByKey.get(check);
    if (failed) return classifyFailure({ kind: 'graphql', errors: failed });
    const answered = data?.[check];
    if (answered == null) return 'lost';
    return parseEntitlementAnswer(answered, period === undefined ? undefined : data?.[period]) ?? badResponse(answered);
  });
  return {
    outcomes,
    periodError: periodErrors && classifyFailure({ kind: 'graphql', errors: periodErrors }),
  };
}

/** Reads canUseFeature (+ showUsage); undefined when it does not have the documented shape. */
function parseEntitlementAnswer(canUseFeature: unknown, showUsage: unknown): EntitlementAnswer | undefined {
  const check = canUseFeature as Record<string, unknown>;
  if (typeof check.access !== 'boolean') return undefined;
  let consumption: EntitlementAnswer['consumption'] = null;
  if (check.consumption != null) {
    const raw = check.consumption as Record<string, unknown>;
    const used = toCount(raw.used);
    const budget = raw.budget == null ? null : toCount(raw.budget);
    if (used === undefined || budget === undefined || typeof raw.overageEnabled !== 'boolean') return undefined;
    consumption = { used, budget, overageEnabled: raw.overageEnabled };
  }
  const current = (showUsage as { current?: { periodStart?: unknown; periodEnd?: unknown } | null } | null | undefined)
    ?.current;
  const start = typeof current?.periodStart === 'string' ? Date.parse(current.periodStart) : Number.NaN;
  const end = typeof current?.periodEnd === 'string' ? Date.parse(current.periodEnd) : Number.NaN;
  return {
    access: check.access,
    reason: typeof check.reason === 'string' ? check.reason : '',
    consumption,
    period: Number.isNaN(start) || Number.isNaN(end) ? null : { start: new Date(start), end: new Date(end) },
  };
}

/** A usage count: an Int, tolerating the numeric strings some of Kana's examples show for limits (API.md §5). */
function toCount(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value)) return value;
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return Number(value);
  return undefined;
}
