// The Kana client's default transport: a POST over node:http(s) with keep-alive, and a host's replaced globalThis.fetch.
// Node's fetch (undici) spends several times the CPU of http.request on each call (measured in docs/performance.md), and
// loading it (its Headers, its Response) adds megabytes to the process: a busy instance makes calls every flush.

import http from 'node:http';
import https from 'node:https';
import { type HttpAnswer, type HttpPost, postWithFetch } from './graphql-post.js';

/** Node's own fetch, as the process started: a `globalThis.fetch` other than this one was put there on purpose. */
const builtinFetch = globalThis.fetch;

const httpAgent = new http.Agent({ keepAlive: true });
const httpsAgent = new https.Agent({ keepAlive: true });

/**
 * How Kana calls are posted when no `fetch` was given: through `globalThis.fetch` when the host replaced it (a test
 * double, an instrumented fetch), else `httpPost`.
 */
export const defaultPost: HttpPost = (url, headers, body, signal) =>
  globalThis.fetch === builtinFetch
    ? httpPost(url, headers, body, signal)
    : postWithFetch(globalThis.fetch)(url, headers, body, signal);

/**
 * A POST over node:http(s), answered with the status, headers and whole body. It fails as fetch does: a TypeError
 * ("fetch failed", the cause attached) when no HTTP answer came, the signal's reason when aborted. It follows a 307
 * or 308 within the same origin, as fetch would, body and key kept; any other answer is returned.
 */
export function httpPost(
  url: URL,
  headers: Record<string, string>,
  body: string,
  signal?: AbortSignal,
): Promise<HttpAnswer> {
  if (url.username !== '' || url.password !== '') {
    return Promise.reject(new TypeError('Request cannot be constructed from a URL that includes credentials'));
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return Promise.reject(new TypeError('fetch failed', { cause: new Error(`not HTTP(S): ${url.protocol}`) }));
  }
  const sent = { ...headers, 'content-length': String(Buffer.byteLength(body)) };
  return send(url, sent, body, signal, MAX_REDIRECTS);
}

/** fetch's own limit is 20; a GraphQL endpoint that redirects more than a few times is misconfigured. */
const MAX_REDIRECTS = 5;

function send(
  url: URL,
  headers: Record<string, string>,
  body: string,
  signal: AbortSignal | undefined,
  redirects: number,
): Promise<HttpAnswer> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  const secure = url.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const failed = (error: unknown) =>
      reject(signal?.aborted ? signal.reason : new TypeError('fetch failed', { cause: error }));
    const request = (secure ? https : http).request(url, {
      method: 'POST',
      headers,
      agent: secure ? httpsAgent : httpAgent,
      signal,
    });
    request.on('error', failed);
    request.on('response', (response) => {
      const next = redirectTarget(url, response, redirects);
      if (next !== undefined) {
        response.resume();
        resolve(send(next, headers, body, signal, redirects - 1));
        return;
      }
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', failed);
      response.on('end', () => {
        const { headers: received, statusCode = 0 } = response;
        // Not an HTTP status fetch would hand on (it refuses a Response outside 200..599).
        if (statusCode < 200 || statusCode > 599) return failed(new RangeError(`HTTP status ${statusCode}`));
        resolve({
          status: statusCode,
          header: (name) => headerValue(received[name.toLowerCase()]),
          body: Buffer.concat(chunks).toString('utf8'),
        });
      });
    });
    request.end(body);
  });
}

/** Where a 307 or 308 within the same origin points, while redirects are left; else undefined. */
function redirectTarget(url: URL, response: http.IncomingMessage, redirects: number): URL | undefined {
  if ((response.statusCode !== 307 && response.statusCode !== 308) || redirects === 0) return undefined;
  const location = response.headers.location;
  if (location === undefined) return undefined;
  const target = URL.canParse(location, url.href) ? new URL(location, url) : undefined;
  // Another origin would get the API key: fetch drops it there, and Kana would refuse the call anyway.
  return target?.origin === url.origin ? target : undefined;
}

/** A header as fetch's Headers.get() gives it: several lines of one field joined with ", ". */
function headerValue(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return typeof value === 'string' ? value : value.join(', ');
}
