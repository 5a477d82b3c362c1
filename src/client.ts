// KanaClient: the GraphQL documents kana-meter sends to Kana, one attempt per call, errors mapped to KanaError.

import { ClientError, GraphQLClient } from 'graphql-request';
import { KanaError } from './errors.js';
import { checkApiKey, checkInteger, checkOneOf, checkUrl, optionError } from './option-checks.js';
import { type CallFailure, classifyFailure, type GraphQLErrorLike } from './retry-policy.js';

/** Kana's admin GraphQL endpoint. */
export const DEFAULT_ENDPOINT = 'https://api.usekana.com/graphql';

/** The mutation that records usage: Kana's usage guide names it createUsageEvent; the current reference, recordUsage. */
export type UsageMutation = 'createUsageEvent' | 'recordUsage';

// Verbatim from Kana's usage guide (legacy name, Boolean result).
const CREATE_USAGE_EVENT = `mutation createUsageEvent($input: CreateUsageEventInput!) { createUsageEvent(input: $input) }`;
// Kana's current reference name, { recorded, reason } result.
const RECORD_USAGE = `mutation recordUsage($input: CreateUsageEventInput!) { recordUsage(input: $input) { recorded reason } }`;

/** One usage record as Kana receives it: ids as Strings, delta a GraphQL Int. */
export interface UsageInput {
  userId: string;
  featureId: string;
  delta: number;
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

/** Calls Kana's admin GraphQL API. Each method makes exactly one attempt and throws a KanaError on failure. */
export class KanaClient {
  readonly endpoint: string;
  readonly mutation: UsageMutation;
  readonly timeoutMs: number;
  readonly #graphql: GraphQLClient;

  constructor(options: KanaClientOptions) {
    if (typeof options !== 'object' || options === null) throw optionError('KanaClient options', options, 'an object');
    const apiKey = checkApiKey(options.apiKey);
    this.endpoint = checkUrl('endpoint', options.endpoint, DEFAULT_ENDPOINT);
    this.mutation = checkOneOf(
      'mutation',
      options.mutation,
      ['createUsageEvent', 'recordUsage'] as const,
      'createUsageEvent',
    );
    this.timeoutMs = checkInteger('timeoutMs', options.timeoutMs, 10_000, 1);
    if (options.fetch !== undefined && typeof options.fetch !== 'function') {
      throw optionError('fetch', options.fetch, 'a fetch-compatible function');
    }
    this.#graphql = new GraphQLClient(this.endpoint, {
      headers: { authorization: apiKey },
      ...(options.fetch ? { fetch: options.fetch } : {}),
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

  /** Sends one document with a per-call timeout and maps every failure through the retry table. */
  protected async request<T>(document: string, variables: Record<string, unknown>, signal?: AbortSignal): Promise<T> {
    const call = new AbortController();
    const timer = setTimeout(() => call.abort(new DOMException('Kana call timed out', 'TimeoutError')), this.timeoutMs);
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
