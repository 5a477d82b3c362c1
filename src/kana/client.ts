// KanaClient: the GraphQL documents kana-meter sends to Kana, one attempt per call, errors mapped to KanaError.

import { ClientError, GraphQLClient } from 'graphql-request';
import { KanaError } from '../config/errors.js';
import { checkApiKey, checkInteger, checkOneOf, checkUrl, optionError } from '../config/option-checks.js';
import { type CallFailure, classifyFailure, type GraphQLErrorLike } from './retry-policy.js';

/** Kana's admin GraphQL endpoint. */
export const DEFAULT_ENDPOINT = 'https://api.usekana.com/graphql';

/** The mutation that records usage: Kana's usage guide names it createUsageEvent; the current reference, recordUsage. */
export type UsageMutation = 'createUsageEvent' | 'recordUsage';

// Verbatim from Kana's usage guide (legacy name, Boolean result).
const CREATE_USAGE_EVENT = `mutation createUsageEvent($input: CreateUsageEventInput!) { createUsageEvent(input: $input) }`;
// Kana's current reference name, { recorded, reason } result.
const RECORD_USAGE = `mutation recordUsage($input: CreateUsageEventInput!) { recordUsage(input: $input) { recorded reason } }`;
// canUseFeature (API.md §7, §11.8) and, in the same round trip, the current usage period, whose end
// is when a used-up allowance comes back (showUsage's `current` is null when usage never resets).
const CHECK_ENTITLEMENT = `query checkEntitlement($userId: String!, $featureId: String!, $delta: Int) {
  canUseFeature(userId: $userId, featureId: $featureId, delta: $delta) { access reason consumption { used budget overageEnabled } }
  showUsage(userId: $userId, featureId: $featureId) { current { periodStart periodEnd } }
}`;

/** Time limit of an entitlement check, in milliseconds: a check runs while a request waits. */
export const DEFAULT_CHECK_TIMEOUT_MS = 2000;

/** One usage record as Kana receives it: ids as Strings, delta a GraphQL Int. */
export interface UsageInput {
  userId: string;
  featureId: string;
  delta: number;
}

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
  /** The current usage period; null when usage never resets, or there is no allowance to reset. */
  readonly period: { readonly start: Date; readonly end: Date } | null;
}

export interface CheckOptions {
  /**
   * Time limit of the check, in milliseconds.
   * @default 2000
   */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface KanaClientOptions {
  /** Kana private key (`prv_test_...` / `prv_live_...`), sent as the `Authorization` header. */
  apiKey: string;
  /**
   * Kana's GraphQL endpoint.
   * @default 'https://api.usekana.com/graphql'
   */
  endpoint?: string;
  /**
   * The mutation that records usage.
   * @default 'createUsageEvent'
   */
  mutation?: UsageMutation;
  /**
   * Time limit of one call, in milliseconds. A call that times out is retried, but Kana may have applied it.
   * @default 10000
   */
  timeoutMs?: number;
  /**
   * The fetch implementation (the one seam to replace the network in unit tests).
   * @default globalThis.fetch
   */
  fetch?: typeof fetch;
}

/** KanaClientOptions checked, with their defaults: what a KanaClient is built from. */
export interface ClientSettings {
  readonly apiKey: string;
  readonly endpoint: string;
  readonly mutation: UsageMutation;
  readonly timeoutMs: number;
  readonly fetch: typeof fetch | undefined;
}

/** Validates KanaClientOptions (a bad one throws a TypeError naming it, never echoing the key). */
export function parseClientOptions(options: KanaClientOptions): ClientSettings {
  if (typeof options !== 'object' || options === null) throw optionError('KanaClient options', options, 'an object');
  if (options.fetch !== undefined && typeof options.fetch !== 'function') {
    throw optionError('fetch', options.fetch, 'a fetch-compatible function');
  }
  return Object.freeze({
    apiKey: checkApiKey(options.apiKey),
    endpoint: checkUrl('endpoint', options.endpoint, DEFAULT_ENDPOINT),
    mutation: checkOneOf(
      'mutation',
      options.mutation,
      ['createUsageEvent', 'recordUsage'] as const,
      'createUsageEvent',
    ),
    timeoutMs: checkInteger('timeoutMs', options.timeoutMs, 10_000, 1),
    fetch: options.fetch,
  });
}

/** Calls Kana's admin GraphQL API. Each method makes exactly one attempt and throws a KanaError on failure. */
export class KanaClient {
  readonly endpoint: string;
  readonly mutation: UsageMutation;
  readonly timeoutMs: number;
  readonly #graphql: GraphQLClient;

  constructor(options: KanaClientOptions) {
    const { apiKey, endpoint, mutation, timeoutMs, fetch } = parseClientOptions(options);
    this.endpoint = endpoint;
    this.mutation = mutation;
    this.timeoutMs = timeoutMs;
    this.#graphql = new GraphQLClient(endpoint, {
      headers: { authorization: apiKey },
      ...(fetch ? { fetch } : {}),
    });
  }

  /** Records one usage event. Resolves when Kana confirmed it; throws a KanaError otherwise. */
  async recordUsage(usage: UsageInput, signal?: AbortSignal): Promise<void> {
    const input = { userId: usage.userId, featureId: usage.featureId, delta: usage.delta };
    if (this.mutation === 'recordUsage') {
      const data = await this.request<{ recordUsage?: { recorded?: unknown; reason?: string | null } | null }>(
        RECORD_USAGE,
        { input },
        signal,
      );
      const result = data.recordUsage;
      if (result == null || typeof result.recorded !== 'boolean') throw badResponse(data);
      if (!result.recorded) throw classifyFailure({ kind: 'not-recorded', reason: result.reason });
      return;
    }
    const data = await this.request<{ createUsageEvent?: unknown }>(CREATE_USAGE_EVENT, { input }, signal);
    if (data.createUsageEvent === true) return;
    if (data.createUsageEvent === false || data.createUsageEvent === null) {
      throw classifyFailure({ kind: 'not-recorded' });
    }
    throw badResponse(data);
  }

  /**
   * Asks Kana whether a user may use `delta` units of a feature (canUseFeature), with the current
   * usage period (showUsage) in the same call. One attempt, with its own short timeout; throws a
   * KanaError classified by the retry table on failure.
   */
  async checkEntitlement(query: EntitlementQuery, options: CheckOptions = {}): Promise<EntitlementAnswer> {
    const data = await this.request<{ canUseFeature?: unknown; showUsage?: unknown }>(
      CHECK_ENTITLEMENT,
      { userId: query.userId, featureId: query.featureId, delta: query.delta },
      options.signal,
      options.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS,
    );
    const answer = parseEntitlementAnswer(data);
    if (answer === undefined) throw badResponse(data);
    return answer;
  }

  /** Sends one document with a per-call timeout and maps every failure through the retry table. */
  protected async request<T>(
    document: string,
    variables: Record<string, unknown>,
    signal?: AbortSignal,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    const call = new AbortController();
    const timer = setTimeout(() => call.abort(new DOMException('Kana call timed out', 'TimeoutError')), timeoutMs);
    timer.unref();
    const onAbort = () => call.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) throw signal.reason;
      const data = await this.#graphql.request<T>({ document, variables, signal: call.signal });
      if (data === null || typeof data !== 'object') throw badResponse(data);
      return data;
    } catch (error) {
      if (error instanceof KanaError) throw error;
      throw classifyFailure(describeFailure(error, call.signal, signal));
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

/** Reads canUseFeature + showUsage; undefined when the answer does not have the documented shape. */
function parseEntitlementAnswer(data: { canUseFeature?: unknown; showUsage?: unknown }): EntitlementAnswer | undefined {
  const check = data.canUseFeature as Record<string, unknown> | null | undefined;
  if (check == null || typeof check.access !== 'boolean') return undefined;
  let consumption: EntitlementAnswer['consumption'] = null;
  if (check.consumption != null) {
    const raw = check.consumption as Record<string, unknown>;
    const used = toCount(raw.used);
    const budget = raw.budget == null ? null : toCount(raw.budget);
    if (used === undefined || budget === undefined || typeof raw.overageEnabled !== 'boolean') return undefined;
    consumption = { used, budget, overageEnabled: raw.overageEnabled };
  }
  const current = (data.showUsage as { current?: { periodStart?: unknown; periodEnd?: unknown } | null } | null)
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

function badResponse(data: unknown): KanaError {
  return classifyFailure({
    kind: 'bad-response',
    cause: new Error(`unexpected data: ${JSON.stringify(data)?.slice(0, 200)}`),
  });
}

/** Turns what graphql-request or fetch threw into a CallFailure for the retry table. */
function describeFailure(error: unknown, callSignal: AbortSignal, outerSignal: AbortSignal | undefined): CallFailure {
  if (outerSignal?.aborted) return { kind: 'aborted', cause: error };
  if (callSignal.aborted) return { kind: 'timeout', cause: error };
  if (error instanceof ClientError) {
    const { status, errors, headers } = error.response as {
      status: number;
      errors?: GraphQLErrorLike[];
      headers?: Headers;
    };
    // Keep the response, not the request: graphql-request's message embeds the variables.
    const cause = new Error(`HTTP ${status}${errors?.[0]?.message ? `: ${errors[0].message}` : ''}`);
    if (status >= 200 && status < 300) return { kind: 'graphql', errors: errors ?? [], cause };
    return { kind: 'http', status, retryAfter: headers?.get?.('retry-after') ?? null, errors, cause };
  }
  // fetch rejects with a TypeError ("fetch failed") when no HTTP answer came.
  if (error instanceof TypeError) return { kind: 'network', cause: error };
  return { kind: 'bad-response', cause: error };
}
