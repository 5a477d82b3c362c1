// One GraphQL call over HTTP: the JSON POST GraphQL over HTTP defines, and its answer read back as data or a GraphQLAnswerError.

import type { GraphQLErrorLike } from './retry-policy.js';

/** An HTTP answer, body read in full. */
export interface HttpAnswer {
  readonly status: number;
  /** A header's value, or null. */
  header(name: string): string | null;
  readonly body: string;
}

/** Sends a POST and resolves with the answer; rejects as fetch does (a TypeError when no answer came, the signal's reason when aborted). */
export type HttpPost = (
  url: URL,
  headers: Record<string, string>,
  body: string,
  signal: AbortSignal,
) => Promise<HttpAnswer>;

/** An answer that is not plain data: an HTTP status outside 2xx, or GraphQL errors. */
export class GraphQLAnswerError extends Error {
  constructor(
    readonly status: number,
    /** The answer's errors, when its body was a GraphQL result that had some. */
    readonly errors: readonly GraphQLErrorLike[] | undefined,
    /** The answer's data, when its body was a GraphQL result that had some. */
    readonly data: unknown,
    readonly retryAfter: string | null,
  ) {
    // The variables stay out of it: they are the users' ids, and a message travels to logs.
    super(errors?.[0]?.message ?? `GraphQL error (HTTP ${status})`);
    this.name = 'GraphQLAnswerError';
  }
}

const ACCEPT = 'application/graphql-response+json, application/json';

/** A fetch as the HttpPost seam. The headers go as a Headers object, as a fetch's own caller would send them. */
export function postWithFetch(fetch: typeof globalThis.fetch): HttpPost {
  return async (url, headers, body, signal) => {
    const response = await fetch(url, { method: 'POST', headers: new Headers(headers), body, signal });
    return { status: response.status, header: (name) => response.headers.get(name), body: await response.text() };
  };
}

/**
 * Posts `document` with its variables and resolves with the answer's `data` (undefined when it had
 * none). Rejects with a GraphQLAnswerError for a status outside 2xx or an answer with errors, with
 * an Error when a 2xx answer is not a GraphQL result, and with whatever `post` rejected with.
 */
export async function postGraphQL(
  post: HttpPost,
  url: URL,
  apiKey: string,
  document: string,
  variables: Record<string, unknown>,
  signal: AbortSignal,
): Promise<unknown> {
  const body = JSON.stringify({ query: document, variables, operationName: operationName(document) });
  const headers = { authorization: apiKey, accept: ACCEPT, 'content-type': 'application/json' };
  const answer = await post(url, headers, body, signal);
  const ok = answer.status >= 200 && answer.status < 300;
  let result: ExecutionResult;
  try {
    result = executionResult(answer);
  } catch (error) {
    // Not a GraphQL result: a bad response at 2xx; otherwise the status says what went wrong.
    if (ok) throw error;
    throw new GraphQLAnswerError(answer.status, undefined, undefined, answer.header('retry-after'));
  }
  if (!ok || (result.errors?.length ?? 0) > 0) {
    throw new GraphQLAnswerError(answer.status, result.errors, result.data, answer.header('retry-after'));
  }
  return result.data;
}

interface ExecutionResult {
  data?: unknown;
  errors?: readonly GraphQLErrorLike[];
}

/** The answer's body as a GraphQL result: a JSON object whose `data` is an object or null and whose `errors` is a list. */
function executionResult(answer: HttpAnswer): ExecutionResult {
  const contentType = answer.header('content-type')?.toLowerCase() ?? '';
  if (!contentType.includes('application/json') && !contentType.includes('application/graphql-response+json')) {
    throw new Error(`Kana answered ${contentType || 'without a content type'}, not a GraphQL result`);
  }
  const result: unknown = JSON.parse(answer.body);
  if (!isPlainObject(result)) throw new Error('Kana answered JSON that is not a GraphQL result');
  const { data, errors } = result;
  if (errors !== undefined && !Array.isArray(errors)) throw new Error('Kana answered errors that are not a list');
  if (data !== undefined && data !== null && !isPlainObject(data))
    throw new Error('Kana answered data that is not an object');
  return { data, errors };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The name of a document's operation (`query checkEntitlement(...)`): every document kana-meter sends has one. */
function operationName(document: string): string | undefined {
  return /^\s*(?:query|mutation)\s+([_A-Za-z][_0-9A-Za-z]*)/.exec(document)?.[1];
}
