// The retry rules: one table that turns every way a Kana call can fail into a KanaError.

import { KanaError, type KanaErrorCode } from '../config/errors.js';

/** What went wrong with one Kana call, before it is classified. */
export type CallFailure =
  /** close() hit its deadline and aborted the call. */
  | { kind: 'aborted'; cause?: unknown }
  /** The per-call timeout fired. */
  | { kind: 'timeout'; cause?: unknown }
  /** No HTTP answer: connection refused or reset, DNS, TLS. */
  | { kind: 'network'; cause?: unknown }
  /** A non-2xx HTTP answer, with the GraphQL errors in its body if there were any. */
  | { kind: 'http'; status: number; retryAfter?: string | null; errors?: readonly GraphQLErrorLike[]; cause?: unknown }
  /** An HTTP 2xx answer carrying GraphQL errors. */
  | { kind: 'graphql'; errors: readonly GraphQLErrorLike[]; cause?: unknown }
  /** Kana answered `false` (createUsageEvent) or `recorded: false` (recordUsage). */
  | { kind: 'not-recorded'; reason?: string | null }
  /** A 2xx answer that is not the GraphQL result we asked for. */
  | { kind: 'bad-response'; cause?: unknown }
  /** The HTTP layer refused to build the request from the configuration (a header or URL it rejects). */
  | { kind: 'config'; problem: string };

export interface GraphQLErrorLike {
  message?: string;
  extensions?: { code?: string; exception?: { name?: string } };
}

export interface RetryRule {
  /** Row number, as referenced by the test matrix and the README. */
  row: number;
  matches: (failure: CallFailure) => boolean;
  code: KanaErrorCode;
  retryable: boolean;
  describe: (failure: CallFailure) => string;
}

const VALIDATION_CODES = new Set(['GRAPHQL_VALIDATION_FAILED', 'GRAPHQL_PARSE_FAILED', 'BAD_USER_INPUT']);

function isUnauthenticated(failure: CallFailure): boolean {
  const errors = failure.kind === 'http' || failure.kind === 'graphql' ? failure.errors : undefined;
  return (errors ?? []).some(
    (error) =>
      error.message?.startsWith('Unauthenticated') === true ||
      error.extensions?.code === 'UNAUTHENTICATED' ||
      error.extensions?.exception?.name === 'AuthenticationError',
  );
}

function isValidationError(failure: CallFailure): boolean {
  const errors = failure.kind === 'http' || failure.kind === 'graphql' ? failure.errors : undefined;
  return (errors ?? []).some((error) => VALIDATION_CODES.has(error.extensions?.code ?? ''));
}

const status = (failure: CallFailure) => (failure.kind === 'http' ? failure.status : 0);

function firstMessage(failure: CallFailure): string {
  const errors = failure.kind === 'http' || failure.kind === 'graphql' ? failure.errors : undefined;
  const message = errors?.[0]?.message;
  return message ? `: ${message}` : '';
}

/**
 * The retry table. The first matching row decides. Kana documents no rate limits and no
 * idempotency key, so the rules follow the HTTP and GraphQL conventions its server (Apollo) uses.
 */
export const retryRules: readonly RetryRule[] = [
  {
    row: 1,
    matches: (f) => f.kind === 'aborted',
    code: 'KANA_ABORTED',
    retryable: false,
    describe: () => 'the call was aborted by close()',
  },
  {
    row: 2,
    matches: (f) => f.kind === 'timeout',
    code: 'KANA_TIMEOUT',
    retryable: true,
    describe: () => 'Kana did not answer before the call timeout (it may still have applied the call)',
  },
  {
    row: 3,
    matches: (f) => f.kind === 'network',
    code: 'KANA_UNREACHABLE',
    retryable: true,
    describe: (f) => `Kana could not be reached${causeText(f)}`,
  },
  {
    row: 4,
    matches: (f) => status(f) === 401 || status(f) === 403 || isUnauthenticated(f),
    code: 'KANA_UNAUTHENTICATED',
    retryable: false,
    describe: (f) => `Kana refused the API key${firstMessage(f)}`,
  },
  {
    row: 5,
    matches: (f) => status(f) === 429,
    code: 'KANA_RATE_LIMITED',
    retryable: true,
    describe: () => 'Kana answered HTTP 429 Too Many Requests',
  },
  {
    row: 6,
    matches: (f) => status(f) === 408,
    code: 'KANA_TIMEOUT',
    retryable: true,
    describe: () => 'Kana answered HTTP 408 Request Timeout',
  },
  {
    row: 7,
    matches: (f) => status(f) >= 500,
    code: 'KANA_SERVER_ERROR',
    retryable: true,
    describe: (f) => `Kana answered HTTP ${status(f)}${firstMessage(f)}`,
  },
  {
    row: 8,
    matches: (f) => status(f) === 400 || isValidationError(f),
    code: 'KANA_REJECTED',
    retryable: false,
    describe: (f) => `Kana rejected the request as invalid${firstMessage(f)}`,
  },
  {
    row: 9,
    matches: (f) => f.kind === 'http',
    code: 'KANA_HTTP_ERROR',
    retryable: false,
    describe: (f) => `Kana answered HTTP ${status(f)}${firstMessage(f)}`,
  },
  {
    // A resolver error at HTTP 200 (Apollo's INTERNAL_SERVER_ERROR and the like): Kana's side failed.
    row: 10,
    matches: (f) => f.kind === 'graphql',
    code: 'KANA_SERVER_ERROR',
    retryable: true,
    describe: (f) => `Kana answered with a GraphQL error${firstMessage(f)}`,
  },
  {
    row: 11,
    matches: (f) => f.kind === 'not-recorded',
    code: 'KANA_NOT_RECORDED',
    retryable: true,
    describe: (f) => `Kana did not record the usage${f.kind === 'not-recorded' && f.reason ? `: ${f.reason}` : ''}`,
  },
  {
    row: 12,
    matches: (f) => f.kind === 'bad-response',
    code: 'KANA_BAD_RESPONSE',
    retryable: true,
    describe: (f) => `Kana's answer was not the expected GraphQL result${causeText(f)}`,
  },
  {
    // Nothing was sent: every call would fail the same way until the configuration changes.
    row: 13,
    matches: (f) => f.kind === 'config',
    code: 'KANA_CONFIG_ERROR',
    retryable: false,
    describe: (f) =>
      `the HTTP client refused to build the Kana call: ${f.kind === 'config' ? f.problem : 'a configuration error'} (check apiKey, endpoint and what a custom fetch adds)`,
  },
];

function causeText(failure: CallFailure): string {
  const cause = 'cause' in failure ? failure.cause : undefined;
  if (!(cause instanceof Error)) return '';
  // fetch hides the socket error (ECONNREFUSED, ...) one level down.
  const inner = cause.cause instanceof Error ? cause.cause : undefined;
  const detail = (inner as NodeJS.ErrnoException | undefined)?.code ?? inner?.message ?? cause.message;
  return detail ? ` (${detail})` : '';
}

/** The row of the retry table that decides this failure: the first that matches (the last row matches anything left). */
export function matchRetryRule(failure: CallFailure): RetryRule {
  return retryRules.find((candidate) => candidate.matches(failure)) as RetryRule;
}

/** Whether the retry table retries failures of this code (a failure known by its code alone, shared by another instance). */
export function isRetryableCode(code: KanaErrorCode): boolean {
  return retryRules.find((rule) => rule.code === code)?.retryable ?? true;
}

/** Classifies a failed call with the retry table. */
export function classifyFailure(failure: CallFailure): KanaError {
  const rule = matchRetryRule(failure);
  const retryAfterMs = rule.retryable && failure.kind === 'http' ? parseRetryAfter(failure.retryAfter) : undefined;
  return new KanaError(rule.code, rule.describe(failure), {
    retryable: rule.retryable,
    status: failure.kind === 'http' ? failure.status : undefined,
    retryAfterMs,
    cause: 'cause' in failure ? failure.cause : undefined,
  });
}

/** A 2xx answer whose data is not what was asked: `data` (its first 200 characters) is the cause. */
export function badResponse(data: unknown): KanaError {
  return classifyFailure({
    kind: 'bad-response',
    cause: new Error(`unexpected data: ${JSON.stringify(data)?.slice(0, 200)}`),
  });
}

/** Longest wait a `Retry-After` header can impose, so a bad header cannot stall delivery. */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;

/** Parses `Retry-After` (delta-seconds or an HTTP date) into milliseconds, capped. */
export function parseRetryAfter(header: string | null | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const trimmed = header.trim();
  let ms: number;
  if (/^\d+$/.test(trimmed)) {
    ms = Number(trimmed) * 1000;
  } else {
    // An HTTP-date always names its day and month ("Wed, 21 Oct 2015 07:28:00 GMT").
    const date = /[A-Za-z]/.test(trimmed) ? Date.parse(trimmed) : Number.NaN;
    if (Number.isNaN(date)) return undefined;
    ms = Math.max(0, date - now);
  }
  return Math.min(ms, MAX_RETRY_AFTER_MS);
}
