// The Kana client's default transport: the part of fetch graphql-request uses, over node:http(s) with keep-alive.
// Node's fetch (undici) spends several times the CPU of http.request on each call (measured in docs/performance.md),
// and a busy instance makes calls for its active (user, feature) keys every flush. A fetch the host put in place is used instead.

import http from 'node:http';
import https from 'node:https';

/** Node's own fetch, as the process started: a `globalThis.fetch` other than this one was put there on purpose. */
const builtinFetch = globalThis.fetch;

const httpAgent = new http.Agent({ keepAlive: true });
const httpsAgent = new https.Agent({ keepAlive: true });

/**
 * The fetch Kana calls go through when none was given: `globalThis.fetch` when the host replaced it (a test double,
 * an instrumented fetch), else `httpFetch`.
 */
export function defaultFetch(input: URL | string, init?: RequestInit): Promise<Response> {
  return globalThis.fetch === builtinFetch ? httpFetch(input, init) : globalThis.fetch(input, init);
}

/**
 * A POST or GET with a string body, answered with a Response whose body is read in full. It fails as fetch does:
 * a TypeError ("fetch failed", the cause attached) when no HTTP answer came, the signal's reason when aborted.
 * It follows a 307 or 308 within the same origin, as fetch would, body and key kept; any other answer is returned.
 */
export function httpFetch(input: URL | string, init: RequestInit = {}): Promise<Response> {
  const url = input instanceof URL ? input : new URL(String(input));
  if (url.username !== '' || url.password !== '') {
    return Promise.reject(new TypeError('Request cannot be constructed from a URL that includes credentials'));
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return Promise.reject(new TypeError('fetch failed', { cause: new Error(`not HTTP(S): ${url.protocol}`) }));
  }
  const headers = headersOf(init.headers);
  const body = init.body === undefined || init.body === null ? undefined : String(init.body);
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  return send(url, init.method ?? 'GET', headers, body, init.signal ?? undefined, MAX_REDIRECTS);
}

/** fetch's own limit is 20; a GraphQL endpoint that redirects more than a few times is misconfigured. */
const MAX_REDIRECTS = 5;

function send(
  url: URL,
  method: string,
  headers: Record<string, string>,
  body: string | undefined,
  signal: AbortSignal | undefined,
  redirects: number,
): Promise<Response> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  const secure = url.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const failed = (error: unknown) =>
      reject(signal?.aborted ? signal.reason : new TypeError('fetch failed', { cause: error }));
    const request = (secure ? https : http).request(url, {
      method,
      headers,
      agent: secure ? httpsAgent : httpAgent,
      signal,
    });
    request.on('error', failed);
    request.on('response', (response) => {
      const next = redirectTarget(url, response, redirects);
      if (next !== undefined) {
        response.resume();
        resolve(send(next, method, headers, body, signal, redirects - 1));
        return;
      }
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', failed);
      response.on('end', () => {
        try {
          resolve(responseOf(response, Buffer.concat(chunks)));
        } catch (error) {
          failed(error); // a status Response refuses (outside 200..599)
        }
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

function headersOf(headers: ConstructorParameters<typeof Headers>[0]): Record<string, string> {
  const plain: Record<string, string> = {};
  new Headers(headers).forEach((value, name) => {
    plain[name] = value;
  });
  return plain;
}

function responseOf(response: http.IncomingMessage, body: Buffer): Response {
  const headers = new Headers();
  const raw = response.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) headers.append(raw[i] as string, raw[i + 1] as string);
  const status = response.statusCode ?? 0;
  // A null-body status takes no body in a Response (a 204 from a proxy, say).
  const nullBody = status === 204 || status === 205 || status === 304;
  return new Response(nullBody ? null : body, { status, statusText: response.statusMessage ?? '', headers });
}
