// KanaClient: the GraphQL documents kana-meter sends to Kana, one attempt per call, errors mapped to KanaError.

import { KanaError } from '../config/errors.js';
import { checkApiKey, checkEndpoint, checkInteger, checkOneOf, optionError } from '../config/option-checks.js';
import type { SinkFailure, UsageBatch, UsageSink } from '../delivery/usage-sink.js';
import {
  type CheckResults,
  checkDocument,
  type EntitlementAnswer,
  type EntitlementQuery,
  type FieldError,
  MAX_CHECKS_PER_DOCUMENT,
  readCheckResults,
} from './check-document.js';
import { GraphQLAnswerError, type HttpPost, postGraphQL, postWithFetch } from './graphql-post.js';
import { defaultPost } from './http-post.js';
import { badResponse, type CallFailure, classifyFailure } from './retry-policy.js';
import { MAX_USAGE_PER_DOCUMENT, readUsageResult, type UsageMutation, usageDocument } from './usage-document.js';

export type { CheckOutcome, CheckResults, EntitlementAnswer, EntitlementQuery } from './check-document.js';
export { MAX_CHECKS_PER_DOCUMENT } from './check-document.js';
export type { UsageMutation } from './usage-document.js';

/** Kana's admin GraphQL endpoint. */
export const DEFAULT_ENDPOINT = 'https://api.usekana.com/graphql';

// Verbatim from Kana's usage guide (legacy name, Boolean result): one usage event alone.
const CREATE_USAGE_EVENT = `mutation createUsageEvent($input: CreateUsageEventInput!) { createUsageEvent(input: $input) }`;
// Kana's current reference name, { recorded, reason } result.
const RECORD_USAGE = `mutation recordUsage($input: CreateUsageEventInput!) { recordUsage(input: $input) { recorded reason } }`;

// The cheapest authenticated query: a few feature ids. Kana checks the key on every call (API.md §2).
const VERIFY_KEY = 'query kanaMeterVerifyKey { features { id } }';

/** Told the outcome of each Kana call for the key: undefined when Kana answered, the KanaError when it refused the key. */
export type KeyListener = (refusal: KanaError | undefined) => void;

/** Time limit of an entitlement check, in milliseconds: a check runs while a request waits. */
export const DEFAULT_CHECK_TIMEOUT_MS = 2000;

/** One usage record as Kana receives it: ids as Strings, delta a GraphQL Int. */
export interface UsageInput {
  userId: string;
  featureId: string;
  delta: number;
}

export interface CheckOptions {
  /**
   * Time limit of the check, in milliseconds.
   * @default 2000
   */
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * Also ask showUsage for the current usage period (in the same document).
   * @default true
   */
  period?: boolean;
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
   * @default node:http(s), or a replaced globalThis.fetch
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
    endpoint: checkEndpoint('endpoint', options.endpoint, DEFAULT_ENDPOINT),
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

/**
 * Calls Kana's admin GraphQL API. Each method makes one attempt (checkEntitlement a second one
 * without the period when showUsage fails) and throws a KanaError on failure.
 */
export class KanaClient implements UsageSink {
  readonly endpoint: string;
  readonly mutation: UsageMutation;
  readonly timeoutMs: number;
  /** The UsageSink side: up to MAX_USAGE_PER_DOCUMENT usage mutations in one document. */
  readonly maxBatchesPerCall = MAX_USAGE_PER_DOCUMENT;
  readonly #url: URL;
  readonly #post: HttpPost;
  /** Kept to recognise an error message that would reveal it. */
  readonly #apiKey: string;
  readonly #keyListeners = new Set<KeyListener>();

  constructor(options: KanaClientOptions) {
    const { apiKey, endpoint, mutation, timeoutMs, fetch } = parseClientOptions(options);
    this.#apiKey = apiKey;
    this.endpoint = endpoint;
    this.mutation = mutation;
    this.timeoutMs = timeoutMs;
    this.#url = new URL(endpoint);
    this.#post = fetch ? postWithFetch(fetch) : defaultPost;
  }

  /** Records one usage event. Resolves when Kana confirmed it; throws a KanaError otherwise. */
  async recordUsage(usage: UsageInput, signal?: AbortSignal): Promise<void> {
    const input = { userId: usage.userId, featureId: usage.featureId, delta: usage.delta };
    const document = this.mutation === 'recordUsage' ? RECORD_USAGE : CREATE_USAGE_EVENT;
    const data = await this.request<Record<string, unknown>>(document, { input }, signal);
    const failure = readUsageResult(this.mutation, data, this.mutation, undefined);
    if (failure) throw failure;
  }

  /** The UsageSink side: one recordUsage call per attempt. */
  deliver(batch: UsageBatch, signal: AbortSignal): Promise<void> {
    return this.recordUsage(batch, signal);
  }

  /**
   * The UsageSink side: records several batches in one call, one aliased mutation each, and reads
   * Kana's answer mutation by mutation. Throws a KanaError when the whole call failed.
   */
  async deliverMany(batches: readonly UsageBatch[], signal: AbortSignal): Promise<(KanaError | undefined)[]> {
    if (batches.length === 1) {
      // One alone is sent as Kana's guide writes it; its failure is the whole call's.
      await this.recordUsage(batches[0] as UsageBatch, signal);
      return [undefined];
    }
    if (batches.length === 0 || batches.length > MAX_USAGE_PER_DOCUMENT) {
      throw new RangeError(`deliverMany takes 1 to ${MAX_USAGE_PER_DOCUMENT} batches, got ${batches.length}`);
    }
    const { document, variables } = usageDocument(this.mutation, batches);
    const { data, errors } = await this.requestFields<Record<string, unknown>>(
      document,
      variables,
      signal,
      this.timeoutMs,
    );
    return batches.map((_, i) => {
      const field = `u${i}`;
      return readUsageResult(
        this.mutation,
        data,
        field,
        errors.filter((error) => error.path?.[0] === field),
      );
    });
  }

  /** The UsageSink side: a KanaError says from the retry table; anything else is a bug of ours. */
  classify(error: unknown): SinkFailure | undefined {
    if (!(error instanceof KanaError)) return undefined;
    return { retryable: error.retryable, retryAfterMs: error.retryAfterMs, refusedWhole: refusedWhole(error) };
  }

  /**
   * Verifies the API key with one cheap authenticated query (the feature ids). Resolves when Kana
   * answered; throws a KanaError otherwise (`KANA_UNAUTHENTICATED` for a refused key).
   */
  async verifyKey(timeoutMs = this.timeoutMs): Promise<void> {
    await this.request<unknown>(VERIFY_KEY, {}, undefined, timeoutMs);
  }

  /** Calls `listener` after every call: undefined when Kana answered, the KanaError when it refused the key. Returns the unsubscribe. */
  watchKey(listener: KeyListener): () => void {
    const own = (refusal: KanaError | undefined) => listener(refusal);
    this.#keyListeners.add(own);
    return () => this.#keyListeners.delete(own);
  }

  #tellKey(refusal: KanaError | undefined): void {
    for (const listener of this.#keyListeners) {
      try {
        listener(refusal);
      } catch {
        // A listener is kana-meter's own bookkeeping: it must never fail the call.
      }
    }
  }

  /**
   * Asks Kana whether a user may use `delta` units of a feature (canUseFeature), with the current
   * usage period (showUsage) in the same call. The answer depends on canUseFeature alone: if
   * showUsage fails, canUseFeature is asked again on its own, and the answer has no period.
   * Throws a KanaError classified by the retry table when canUseFeature fails.
   */
  async checkEntitlement(query: EntitlementQuery, options: CheckOptions = {}): Promise<EntitlementAnswer> {
    let period = options.period ?? true;
    for (;;) {
      const { outcomes, periodError } = await this.checkEntitlements([query], { ...options, period });
      const [outcome] = outcomes;
      if (outcome instanceof KanaError) throw outcome;
      if (outcome !== 'lost' && outcome !== undefined) return outcome;
      // Lost: only showUsage failed, and it took canUseFeature's data with it.
      if (!period || periodError === undefined) throw badResponse(null);
      period = false;
    }
  }

  /**
   * Asks canUseFeature (and showUsage, unless `period: false`) for up to MAX_CHECKS_PER_DOCUMENT
   * checks in one GraphQL document, one call. Errors Kana gives for single fields are read check
   * by check (see CheckOutcome); a failure of the whole call throws a KanaError.
   */
  async checkEntitlements(queries: readonly EntitlementQuery[], options: CheckOptions = {}): Promise<CheckResults> {
    if (queries.length === 0 || queries.length > MAX_CHECKS_PER_DOCUMENT) {
      throw new RangeError(`checkEntitlements takes 1 to ${MAX_CHECKS_PER_DOCUMENT} checks, got ${queries.length}`);
    }
    const document = checkDocument(queries, options.period ?? true);
    const { data, errors } = await this.requestFields<Record<string, unknown>>(
      document.document,
      document.variables,
      options.signal,
      options.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS,
    );
    return readCheckResults(data, errors, document);
  }

  /** Sends one document with a per-call timeout and maps every failure through the retry table. */
  protected async request<T>(
    document: string,
    variables: Record<string, unknown>,
    signal?: AbortSignal,
    timeoutMs = this.timeoutMs,
  ): Promise<T> {
    return this.#send<T, T>(document, variables, signal, timeoutMs, (data) => data, undefined);
  }

  /**
   * Like request(), but an answer whose errors all belong to fields (each has a `path`) is
   * returned with its data, possibly null or partial, instead of thrown.
   */
  protected async requestFields<T>(
    document: string,
    variables: Record<string, unknown>,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<{ data: T | null; errors: readonly FieldError[] }> {
    return this.#send<T, { data: T | null; errors: readonly FieldError[] }>(
      document,
      variables,
      signal,
      timeoutMs,
      (data) => ({ data, errors: [] }),
      fieldErrorsOf,
    );
  }

  async #send<T, R>(
    document: string,
    variables: Record<string, unknown>,
    signal: AbortSignal | undefined,
    timeoutMs: number,
    answered: (data: T) => R,
    partial: ((error: unknown) => R | undefined) | undefined,
  ): Promise<R> {
    const call = new AbortController();
    const timer = setTimeout(() => call.abort(new DOMException('Kana call timed out', 'TimeoutError')), timeoutMs);
    timer.unref();
    const onAbort = () => call.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) throw signal.reason;
      const data = await postGraphQL(this.#post, this.#url, this.#apiKey, document, variables, call.signal);
      if (data === null || typeof data !== 'object') throw badResponse(data);
      this.#tellKey(undefined);
      return answered(data as T);
    } catch (error) {
      if (error instanceof KanaError) throw error;
      const fields = partial?.(error);
      if (fields !== undefined) {
        this.#tellKey(undefined);
        return fields;
      }
      const failure = classifyFailure(describeFailure(error, call.signal, signal, this.#apiKey));
      if (failure.code === 'KANA_UNAUTHENTICATED' || failure.code === 'KANA_CONFIG_ERROR') this.#tellKey(failure);
      throw failure;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

/**
 * A document refused for what it holds, before running any of it: a permanent 4xx answer (400 for
 * an input Kana will not take, 413, ...) but not the key's 401 or 403, or a 2xx answer whose
 * errors say the request was invalid (GraphQL reports those before running anything: no path).
 */
function refusedWhole(error: KanaError): boolean {
  if (error.retryable) return false;
  if (error.status === undefined) return error.code === 'KANA_REJECTED';
  return error.status >= 400 && error.status < 500 && error.status !== 401 && error.status !== 403;
}

/** The data and errors of a 2xx answer whose every error belongs to a field; undefined for any other failure. */
function fieldErrorsOf<T>(error: unknown): { data: T | null; errors: readonly FieldError[] } | undefined {
  if (!(error instanceof GraphQLAnswerError)) return undefined;
  const { status, data } = error;
  const errors = error.errors as readonly FieldError[] | undefined;
  if (status < 200 || status >= 300 || !errors?.length || !errors.every((e) => e.path?.length)) return undefined;
  if (data != null && typeof data !== 'object') return undefined;
  return { data: (data ?? null) as T | null, errors };
}

/** Turns what the call threw (an answer that was not plain data, or no answer) into a CallFailure for the retry table. */
function describeFailure(
  error: unknown,
  callSignal: AbortSignal,
  outerSignal: AbortSignal | undefined,
  apiKey: string,
): CallFailure {
  if (outerSignal?.aborted) return { kind: 'aborted', cause: error };
  if (callSignal.aborted) return { kind: 'timeout', cause: error };
  if (error instanceof GraphQLAnswerError) {
    const { status, errors, retryAfter } = error;
    const cause = new Error(`HTTP ${status}${errors?.[0]?.message ? `: ${errors[0].message}` : ''}`);
    if (status >= 200 && status < 300) return { kind: 'graphql', errors: errors ?? [], cause };
    return { kind: 'http', status, retryAfter, errors, cause };
  }
  // No HTTP answer. The HTTP layer refusing to build the request is a configuration error; its
  // message may hold the key or the URL, so only this description of it is kept.
  const problem = configurationProblem(error, apiKey);
  if (problem !== undefined) return { kind: 'config', problem };
  // fetch rejects with a TypeError ("fetch failed") when no HTTP answer came.
  if (error instanceof TypeError) return { kind: 'network', cause: error };
  return { kind: 'bad-response', cause: error };
}

/**
 * What the HTTP layer rejected when it refused to build a request (undici and other fetch
 * implementations throw a TypeError naming the header value or URL), or undefined for any other
 * error. An error whose message holds the API key is one too, whatever it says.
 */
function configurationProblem(error: unknown, apiKey: string): string | undefined {
  const message = (error as { message?: unknown } | null)?.message;
  if (typeof message !== 'string') return undefined;
  if (/header value|ByteString|header name|character in header/i.test(message)) return 'a header value it rejects';
  if (/credentials/i.test(message)) return 'a URL with credentials';
  if (/Failed to parse URL|Invalid URL/i.test(message)) return 'an invalid URL';
  return message.includes(apiKey) ? 'an error that named the API key' : undefined;
}
