// kanaMeter() options: bad values throw at creation, naming the option, the value and what was expected.

import { describe, expect, it } from 'vitest';
import { KanaClient, kanaMeter, meter } from '../src/index.js';

const base = { apiKey: 'prv_test_abc123', userId: () => 'u1' };

describe('kanaMeter options', () => {
  it('creates a middleware with defaults from only apiKey and userId', () => {
    const kana = kanaMeter(base);
    expect(typeof kana).toBe('function');
    expect(kana.length).toBe(3);
    expect(kana.stats()).toMatchObject({ captured: 0, pending: 0, inFlight: 0 });
  });

  it('requires userId to be a function', () => {
    expect(() => kanaMeter({ apiKey: 'prv_test_x' } as never)).toThrow(
      /option `userId` must be a function.*got undefined/,
    );
    expect(() => kanaMeter({ ...base, userId: 'u1' } as never)).toThrow(/option `userId` must be a function.*got "u1"/);
  });

  it('requires apiKey or client, and never echoes the key', () => {
    expect(() => kanaMeter({ userId: () => 'u' })).toThrow(/option `apiKey` is required.*or pass a ready `client`/);
    expect(() => kanaMeter({ ...base, apiKey: '' })).toThrow(
      /option `apiKey` must be your Kana private key.*got an empty string/,
    );
    let message = '';
    try {
      kanaMeter({ ...base, endpoint: 'not a url' });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toMatch(/option `endpoint` must be an http\(s\) URL; got "not a url"/);
    expect(message).not.toContain('prv_test_abc123');
  });

  it('accepts a ready client, but not together with client settings', () => {
    const client = new KanaClient({ apiKey: 'prv_test_abc123' });
    expect(() => kanaMeter({ client, userId: () => 'u' })).not.toThrow();
    expect(() => kanaMeter({ client, userId: () => 'u', endpoint: 'http://x' })).toThrow(
      /`endpoint` cannot be combined with `client`/,
    );
    expect(() => kanaMeter({ client: {} as KanaClient, userId: () => 'u' })).toThrow(
      /option `client` must be a KanaClient instance/,
    );
  });

  it.each([
    [{ flushInterval: -1 }, /option `flushInterval` must be an integer >= 0; got -1/],
    [{ concurrency: 0 }, /option `concurrency` must be an integer >= 1; got 0/],
    [{ timeoutMs: 'fast' }, /option `timeoutMs` must be an integer >= 1; got "fast"/],
    [{ mutation: 'addUsage' }, /option `mutation` must be one of "createUsageEvent", "recordUsage"; got "addUsage"/],
    [{ retry: { retries: -1 } }, /option `retry.retries` must be an integer >= 0; got -1/],
    [
      { retry: { minTimeout: 500, maxTimeout: 100 } },
      /option `retry.maxTimeout` must be >= retry.minTimeout \(500\); got 100/,
    ],
    [{ retry: { retrys: 3 } }, /option `retry.retrys` must be absent/],
    [{ isSuccess: true }, /option `isSuccess` must be a function; got true/],
    [{ onDeliveryFailure: 'log' }, /option `onDeliveryFailure` must be a function/],
    [{ logger: console.log }, /option `logger` must be a pino-compatible logger/],
    [{ fetch: 'fetch' }, /option `fetch` must be a fetch-compatible function/],
    [{ flushIntervalMs: 5 }, /option `flushIntervalMs` must be absent: it is not a kanaMeter option/],
    [{ maxPendingKeys: 0 }, /option `maxPendingKeys` must be an integer >= 1; got 0/],
    [{ spool: './usage.spool' }, /option `spool` must be an object such as \{ path: '.\/kana-usage.spool' \}/],
    [{ spool: { path: '' } }, /option `spool.path` must be a file path; got ""/],
    [{ spool: { path: 'x', writeAhead: 'yes' } }, /option `spool.writeAhead` must be true or false; got "yes"/],
    [{ spool: { path: 'x', fsync: true } }, /option `spool.fsync` must be absent/],
    [{ onDrop: 1 }, /option `onDrop` must be a function; got 1/],
    [{ enforce: 'yes' }, /option `enforce` must be true, false or 'shadow'; got "yes"/],
    [{ staleIfError: -1 }, /option `staleIfError` must be an integer >= 0; got -1/],
    [{ staleIfError: '5m' }, /option `staleIfError` must be an integer >= 0; got "5m"/],
    [{ checkConcurrency: 0 }, /option `checkConcurrency` must be an integer >= 1; got 0/],
    [{ checkConcurrency: 2.5 }, /option `checkConcurrency` must be an integer >= 1; got 2.5/],
    [
      { idempotencyKey: false },
      /option `idempotencyKey` must be true or an object such as \{ header: 'Idempotency-Key'.*; got false/,
    ],
    [
      { idempotencyKey: 'Idempotency-Key' },
      /option `idempotencyKey` must be true or an object.*; got "Idempotency-Key"/,
    ],
    [
      { idempotencyKey: { header: 'Bad Header' } },
      /option `idempotencyKey.header` must be a header name.*; got "Bad Header"/,
    ],
    [{ idempotencyKey: { ttlMs: 0 } }, /option `idempotencyKey.ttlMs` must be an integer >= 1; got 0/],
    [{ idempotencyKey: { maxKeys: -5 } }, /option `idempotencyKey.maxKeys` must be an integer >= 1; got -5/],
    [{ idempotencyKey: { maxBytes: 0 } }, /option `idempotencyKey.maxBytes` must be an integer >= 1; got 0/],
    [
      { idempotencyKey: { ttl: 5 } },
      /option `idempotencyKey.ttl` must be absent \(known: header, ttlMs, maxKeys, maxBytes\); got 5/,
    ],
    [{ onDenied: 402 }, /option `onDenied` must be a function; got 402/],
    [{ onKanaError: 'block' }, /option `onKanaError` must be one of "allow", "deny"; got "block"/],
    [{ checkTimeoutMs: 0 }, /option `checkTimeoutMs` must be an integer >= 1; got 0/],
    [{ entitlementTtl: -1 }, /option `entitlementTtl` must be an integer >= 0; got -1/],
    [{ entitlementTtl: 1.5 }, /option `entitlementTtl` must be an integer >= 0; got 1.5/],
    [{ maxEntitlements: 0 }, /option `maxEntitlements` must be an integer >= 1; got 0/],
    [{ rateLimitHeaders: 1 }, /option `rateLimitHeaders` must be true or false; got 1/],
    [
      { metrics: true },
      /option `metrics` must be an object with bind\(stats\) and observeKanaCall\(call\) methods.*; got true/,
    ],
    [{ metrics: null }, /option `metrics` must be an object with bind.*; got null/],
    [{ metrics: { bind() {} } }, /option `metrics` must be an object with bind.*; got an object/],
    [{ metrics: { bind() {}, observeKanaCall: 'histogram' } }, /option `metrics` must be an object with bind/],
    [
      { routes: { 'GET /x': { feature: 'f', enforce: 'on' } } },
      /option `routes\["GET \/x"\].enforce` must be true, false or 'shadow'; got "on"/,
    ],
  ])('rejects %j', (extra, message) => {
    expect(() => kanaMeter({ ...base, ...(extra as object) })).toThrow(TypeError);
    expect(() => kanaMeter({ ...base, ...(extra as object) })).toThrow(message);
  });

  it('does not mutate the options object', () => {
    const options = Object.freeze({
      ...base,
      routes: Object.freeze({ 'GET /x': 'f' }),
      retry: Object.freeze({ retries: 1 }),
      idempotencyKey: Object.freeze({ header: 'X-Request-Id' }),
    });
    expect(() => kanaMeter(options)).not.toThrow();
    expect(options.idempotencyKey).toEqual({ header: 'X-Request-Id' });
  });

  it("accepts enforce: 'shadow' on kanaMeter, a route map entry and meter(), and the new options' documented forms", () => {
    expect(() =>
      kanaMeter({
        ...base,
        enforce: 'shadow',
        routes: { 'GET /x': { feature: 'f', enforce: 'shadow' } },
        staleIfError: 0,
        checkConcurrency: 1,
        idempotencyKey: true,
      }),
    ).not.toThrow();
    expect(() => meter('f', { enforce: 'shadow' })).not.toThrow();
    expect(() =>
      kanaMeter({ ...base, idempotencyKey: { header: 'X-Request-Id', ttlMs: 1, maxKeys: 1 } }),
    ).not.toThrow();
  });
});

describe('meter() options', () => {
  it.each([
    [[''], /option `meter\(\) feature` must be a non-empty feature id string; got ""/],
    [[7], /got 7/],
    [['f', { delta: -1 }], /option `meter\(\) feature.delta` must be an integer in 1\.\.2147483647/],
    [['f', { delta: 2 ** 31 }], /got 2147483648/],
    [
      ['f', { detla: 2 }],
      /option `meter\(\) feature.detla` must be absent \(known options: delta, enforce, billAborted\)/,
    ],
    [['f', { enforce: 1 }], /option `meter\(\) feature.enforce` must be true, false or 'shadow'; got 1/],
  ])('rejects meter(%j)', (args, message) => {
    expect(() => (meter as (...a: unknown[]) => unknown)(...args)).toThrow(message);
  });
});
