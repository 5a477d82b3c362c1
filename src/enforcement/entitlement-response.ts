// What enforcement writes on a response: RFC 9457 problem+json refusals, Retry-After, and the RateLimit headers.

import type { ServerResponse } from 'node:http';
import type { EntitlementDecision } from '../config/decision.js';
import type { Entitlement } from './entitlements.js';

/**
 * The RateLimit header fields follow draft-ietf-httpapi-ratelimit-headers-10: one policy per
 * feature, named by its feature id, quota = the allowance, window = the usage period.
 */
export const RATELIMIT_DRAFT = 'draft-ietf-httpapi-ratelimit-headers-10';

/** The draft's problem type for a used-up quota (section 5.1), with its `violated-policies` member. */
export const QUOTA_EXCEEDED_TYPE = 'https://iana.org/assignments/http-problem-types#quota-exceeded';

/** A problem details object (RFC 9457) as kana-meter sends it. */
export interface EntitlementProblem {
  type: string;
  title: string;
  status: number;
  detail: string;
  featureId: string;
  used?: number;
  budget?: number;
  'violated-policies'?: string[];
}

/** The default response to a refused request. */
export function sendRefusal(res: ServerResponse, decision: EntitlementDecision, entry: Entitlement | undefined): void {
  if (res.headersSent) return;
  const status = decision.status ?? 403;
  if (status === 429 && entry !== undefined) {
    const seconds = secondsUntil(decision.resetAt);
    if (seconds !== undefined) res.setHeader('Retry-After', String(seconds));
    setRateLimitHeaders(res, entry, 0);
  }
  const body = JSON.stringify(problemFor(decision));
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/problem+json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

/** The problem details of a refusal: about:blank for 402 and 503, the draft's quota-exceeded type for 429. */
export function problemFor(decision: EntitlementDecision): EntitlementProblem {
  const { featureId } = decision;
  const feature = JSON.stringify(featureId);
  if (decision.reason === 'limit-reached') {
    const resets = decision.resetAt ? `; it resets at ${decision.resetAt.toISOString()}` : '';
    return {
      type: QUOTA_EXCEEDED_TYPE,
      title: 'Request cannot be satisfied as assigned quota has been exceeded',
      status: 429,
      detail: `The allowance of ${feature} does not cover this request: ${decision.used} of ${decision.budget} used${resets}.`,
      featureId,
      ...(decision.used !== null && { used: decision.used }),
      ...(decision.budget !== null && { budget: decision.budget }),
      'violated-policies': [featureId],
    };
  }
  if (decision.reason === 'not-in-plan') {
    return {
      type: 'about:blank',
      title: 'Payment Required',
      status: 402,
      detail: `The user's plan does not include ${feature}.`,
      featureId,
    };
  }
  return {
    type: 'about:blank',
    title: 'Service Unavailable',
    status: decision.status ?? 503,
    detail: `The entitlement to ${feature} could not be checked.`,
    featureId,
  };
}

/**
 * Sets `RateLimit-Policy` and `RateLimit` for a consumable feature with a finite allowance and
 * no overage; appends to the fields when another feature of the request set them already.
 */
export function setRateLimitHeaders(res: ServerResponse, entry: Entitlement, remaining: number): void {
  let policy = entry.policyHeader;
  if (policy === undefined) policy = entry.policyHeader = policyHeaderOf(entry);
  if (policy === null) return;
  const seconds = secondsUntil(entry.resetAt);
  const limit = `${entry.policyName};r=${remaining}${seconds === undefined ? '' : `;t=${seconds}`}`;
  addField(res, 'RateLimit-Policy', policy);
  addField(res, 'RateLimit', limit);
}

/**
 * Appended when another feature of the request (or another limiter) set the field already: a client reads the
 * lines of one field as one comma-separated list. Else set: appendHeader validates the field, then setHeader again.
 */
function addField(res: ServerResponse, name: string, value: string): void {
  if (res.hasHeader(name)) res.appendHeader(name, value);
  else res.setHeader(name, value);
}

function policyHeaderOf(entry: Entitlement): string | null {
  if (!entry.consumable || entry.budget === null || entry.overageEnabled) return null;
  const name = quotedName(entry.featureId);
  if (name === undefined) return null;
  entry.policyName = name;
  const window = entry.periodSeconds !== undefined && entry.periodSeconds > 0 ? `;w=${entry.periodSeconds}` : '';
  return `${name};q=${entry.budget}${window}`;
}

/** A Structured Fields String (RFC 8941 3.3.3), or undefined when the id has characters it cannot carry. */
function quotedName(featureId: string): string | undefined {
  if (!/^[\x20-\x7e]*$/.test(featureId)) return undefined;
  return `"${featureId.replace(/[\\"]/g, '\\$&')}"`;
}

/** Whole seconds until `date`, rounded up, never negative. */
function secondsUntil(date: Date | null): number | undefined {
  if (date === null) return undefined;
  return Math.max(0, Math.ceil((date.getTime() - Date.now()) / 1000));
}
