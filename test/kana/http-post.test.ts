// The client's default transport (node:http(s), keep-alive): what reaches Kana, how its answer is read, how it fails, and a host's own fetch.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { KanaClient, KanaError } from '../../src/index.js';
import { httpPost } from '../../src/kana/http-post.js';

/** Node's own fetch, kept before a test replaces the global. */
const nodeFetch = globalThis.fetch;
const servers: (http.Server | https.Server)[] = [];
afterEach(async () => {
  vi.unstubAllGlobals();
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The client's port: the same for calls over one kept-alive connection. */
  port: number | undefined;
}

/** A GraphQL endpoint on loopback that records each request and answers with `answer`. */
async function endpoint(
  answer: (res: http.ServerResponse) => void,
  server: http.Server | https.Server = http.createServer(),
): Promise<{ url: string; received: Received[] }> {
  const received: Received[] = [];
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    let body = '';
    req.on('data', (chunk) => {
      body += chunk;
    });
    req.on('end', () => {
      received.push({ headers: req.headers, body, port: req.socket.remotePort });
      answer(res);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const scheme = server instanceof https.Server ? 'https' : 'http';
  return { url: `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}/graphql`, received };
}

const answerData = (res: http.ServerResponse) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ data: { createUsageEvent: true } }));
};

describe('the default transport', () => {
  it('posts the mutation over node:http, one keep-alive connection for several calls', async () => {
    const kana = await endpoint(answerData);
    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url });
    await client.recordUsage({ userId: 'u1', featureId: 'api-calls', delta: 3 });
    await client.recordUsage({ userId: 'u2', featureId: 'api-calls', delta: 1 });

    expect(kana.received).toHaveLength(2);
    const [first] = kana.received;
    expect(first?.headers.authorization).toBe('secret-key');
    expect(first?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(first?.body ?? '').variables.input).toEqual({ userId: 'u1', featureId: 'api-calls', delta: 3 });
    // Not Node's fetch (undici marks its requests), and the connection was kept for the second call.
    expect(first?.headers['sec-fetch-mode']).toBeUndefined();
    expect(kana.received[1]?.port).toBe(first?.port);
  });

  it('posts GraphQL over HTTP: the document, its variables and its operation name, as JSON, asking for a GraphQL result', async () => {
    const kana = await endpoint(answerData);
    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url, mutation: 'createUsageEvent' });
    await client.recordUsage({ userId: 'u1', featureId: 'api-calls', delta: 3 });
    const [call] = kana.received;
    expect(call?.headers.accept).toBe('application/graphql-response+json, application/json');
    const body = JSON.parse(call?.body ?? '');
    expect(body.operationName).toBe('createUsageEvent');
    expect(body.query).toMatch(/^mutation createUsageEvent\(\$input: CreateUsageEventInput!\)/);
    expect(Number(call?.headers['content-length'])).toBe(Buffer.byteLength(call?.body ?? ''));
  });

  it.each([
    ['a 2xx answer that is not JSON', 200, 'text/html', '<html>proxy</html>', 'KANA_BAD_RESPONSE', true],
    [
      'a 2xx answer that is JSON but not a GraphQL result',
      200,
      'application/json',
      '[1, 2]',
      'KANA_BAD_RESPONSE',
      true,
    ],
    ['a 2xx answer whose data is not an object', 200, 'application/json', '{"data": 7}', 'KANA_BAD_RESPONSE', true],
    ['a 2xx answer whose JSON is cut short', 200, 'application/json', '{"data": {', 'KANA_BAD_RESPONSE', true],
    ['a 502 from a proxy, in HTML', 502, 'text/html', '<html>bad gateway</html>', 'KANA_SERVER_ERROR', true],
    ['a 404 without a body', 404, 'text/plain', '', 'KANA_HTTP_ERROR', false],
    [
      'a 400 with GraphQL errors',
      400,
      'application/json',
      '{"errors":[{"message":"bad input"}]}',
      'KANA_REJECTED',
      false,
    ],
  ])('reads %s as the retry table says', async (_name, status, contentType, body, code, retryable) => {
    const kana = await endpoint((res) => {
      res.writeHead(status, { 'content-type': contentType });
      res.end(body);
    });
    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url });
    const error = await client.recordUsage({ userId: 'u1', featureId: 'f', delta: 1 }).catch((caught) => caught);
    expect(error).toBeInstanceOf(KanaError);
    expect([error.code, error.retryable]).toEqual([code, retryable]);
    expect(error.message).not.toContain('secret-key');
  });

  it("reads a 429's Retry-After", async () => {
    const kana = await endpoint((res) => {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7' });
      res.end('{"errors":[{"message":"slow down"}]}');
    });
    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url });
    const error = await client.recordUsage({ userId: 'u1', featureId: 'f', delta: 1 }).catch((caught) => caught);
    expect([error.code, error.retryable, error.retryAfterMs]).toEqual(['KANA_RATE_LIMITED', true, 7000]);
  });

  it("reads Kana's refusal (HTTP 401 with GraphQL errors) as it did over fetch", async () => {
    const kana = await endpoint((res) => {
      res.statusCode = 401;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ errors: [{ message: 'bad key', extensions: { code: 'UNAUTHENTICATED' } }] }));
    });
    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url });
    const error = await client.recordUsage({ userId: 'u1', featureId: 'f', delta: 1 }).catch((caught) => caught);
    expect(error).toBeInstanceOf(KanaError);
    expect(error.code).toBe('KANA_UNAUTHENTICATED');
  });

  it('fails as fetch does when the answer is cut off: a TypeError with the cause, retried as a network failure', async () => {
    const kana = await endpoint((res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"data":');
      res.socket?.destroy();
    });
    const failure = await httpPost(new URL(kana.url), {}, '{}').catch((caught) => caught);
    expect(failure).toBeInstanceOf(TypeError);
    expect(failure.message).toBe('fetch failed');
    expect(failure.cause).toBeInstanceOf(Error);

    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url });
    const error = await client.recordUsage({ userId: 'u1', featureId: 'f', delta: 1 }).catch((caught) => caught);
    expect(error.code).toBe('KANA_UNREACHABLE');
    expect(error.retryable).toBe(true);
  });

  it('speaks TLS to an https endpoint (a self-signed certificate is refused, not sent in the clear)', async () => {
    const tls = (name: string) => readFileSync(new URL(`../fixtures/tls/self-signed-${name}.pem`, import.meta.url));
    const kana = await endpoint(answerData, https.createServer({ key: tls('key'), cert: tls('cert') }));
    const failure = await httpPost(new URL(kana.url), {}, '{}').catch((caught) => caught);
    expect(failure).toBeInstanceOf(TypeError);
    expect(failure.cause.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');
    expect(kana.received).toHaveLength(0);
  });

  it('rejects with the signal’s reason when aborted, and refuses a URL with credentials', async () => {
    const kana = await endpoint(() => {}); // never answers
    const call = new AbortController();
    const pending = httpPost(new URL(kana.url), {}, '{}', call.signal);
    const reason = new Error('gave up');
    setTimeout(() => call.abort(reason), 20);
    await expect(pending).rejects.toBe(reason);

    const withCredentials = kana.url.replace('http://', 'http://user:pass@');
    await expect(httpPost(new URL(withCredentials), {}, '{}')).rejects.toThrow(/credentials/);
  });

  it('follows a 307/308 within the origin as fetch does, body and key kept; not to another origin', async () => {
    const elsewhere = await endpoint(answerData);
    let redirectTo = '/v2/graphql';
    const kana = await endpoint((res) => {
      if (res.req.url === '/v2/graphql') return answerData(res);
      res.writeHead(308, { location: redirectTo });
      res.end();
    });
    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url });
    await client.recordUsage({ userId: 'u1', featureId: 'api-calls', delta: 2 });
    expect(kana.received).toHaveLength(2);
    expect(kana.received[1]?.headers.authorization).toBe('secret-key');
    expect(kana.received[1]?.body).toBe(kana.received[0]?.body);

    // Another origin would be sent the key: the 308 is the answer, a failure that is not retried.
    redirectTo = elsewhere.url;
    const error = await client
      .recordUsage({ userId: 'u1', featureId: 'api-calls', delta: 1 })
      .catch((caught) => caught);
    expect(error.code).toBe('KANA_HTTP_ERROR');
    expect(elsewhere.received).toHaveLength(0);
  });

  it("uses the host's fetch when it replaced globalThis.fetch (a test double, an instrumented fetch)", async () => {
    const kana = await endpoint(answerData);
    const hostFetch = vi.fn((input: string | URL | Request, init?: RequestInit) => nodeFetch(input, init));
    vi.stubGlobal('fetch', hostFetch);
    const client = new KanaClient({ apiKey: 'secret-key', endpoint: kana.url });
    await client.recordUsage({ userId: 'u1', featureId: 'api-calls', delta: 1 });
    expect(hostFetch).toHaveBeenCalledTimes(1);
    expect(String(hostFetch.mock.calls[0]?.[0])).toBe(kana.url);
    // The POST a fetch's own caller would make: its headers as a Headers, the key among them.
    const init = hostFetch.mock.calls[0]?.[1];
    expect(init?.method).toBe('POST');
    expect(init?.headers).toBeInstanceOf(Headers);
    expect(new Headers(init?.headers).get('authorization')).toBe('secret-key');
    expect(kana.received).toHaveLength(1);
  });
});
