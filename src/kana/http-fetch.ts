// The Kana client's default transport: the part of fetch graphql-request uses, over node:http(s) with keep-alive.
// Node's fetch (undici) spends several times the CPU of http.request on each call (measured in docs/performance.md),
// and a busy instance makes a call per active (user, feature) every flush. A fetch the host put in place is used instead.

import http from 'node:http';
import https from 'node:https';

/** Node's own fetch, as the process started: a `globalThis.fetch` other than this one was put there on purpose. */
const builtinFetch = globalThis.fetch;

const agents = {
  'http:': new http.Agent({ keepAlive: true }),
  'https:': new https.Agent({ keepAlive: true }),
};

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
 */
export function httpFetch(input: URL | string, init: RequestInit = {}): Promise<Response> {
  const url = input instanceof URL ? input : new URL(String(input));
  if (url.username !== '' || url.password !== '') {
    return Promise.reject(new TypeError('Request cannot be constructed from a URL that includes credentials'));
  }
  const agent = url.protocol === 'http:' || url.protocol === 'https:' ? agents[url.protocol] : undefined;
  if (agent === undefined) return Promise.reject(new TypeError('fetch failed', { cause: new Error('not HTTP(S)') }));
  const { signal } = init;
  if (signal?.aborted) return Promise.reject(signal.reason);
  const transport = url.protocol === 'https:' ? https : http;
  const headers = headersOf(init.headers);
  const body = init.body === undefined || init.body === null ? undefined : String(init.body);
  if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
  return new Promise((resolve, reject) => {
    const failed = (error: unknown) =>
      reject(signal?.aborted ? signal.reason : new TypeError('fetch failed', { cause: error }));
    const request = transport.request(url, {
      method: init.method ?? 'GET',
      headers,
      agent,
      signal: signal ?? undefined,
    });
    request.on('error', failed);
    request.on('response', (response) => {
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
