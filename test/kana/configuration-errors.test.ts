// The key and the endpoint: checked at creation without echoing them; a configuration error at run time is permanent, and never logs them.

import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { KanaClient, type KanaError, kanaMeter, logCodes, type UndeliveredUsage } from '../../src/index.js';
import { basicSeed, createLogSink, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

const secret = 'prv_live_SECRETxyz789';

/** The message kanaMeter() and new KanaClient() throw for these options. */
function creationErrors(options: { apiKey?: string; endpoint?: string }): string[] {
  const messages: string[] = [];
  for (const create of [
    () => kanaMeter({ apiKey: secret, userId: () => 'u1', ...options }),
    () => new KanaClient({ apiKey: secret, ...options }),
  ]) {
    try {
      create();
      messages.push('(no error)');
    } catch (error) {
      expect(error).toBeInstanceOf(TypeError);
      messages.push((error as Error).message);
    }
  }
  return messages;
}

describe('the API key must be a valid header value', () => {
  it.each([
    ['a line feed', `${secret}\n`, /a line feed \(LF\) at index 21/],
    ['a carriage return and line feed inside', `prv_live_SECRET\r\nX-Evil: 1`, /a carriage return \(CR\) at index 15/],
    ['a NUL', `prv_live_SECRET\u0000xyz`, /a NUL at index 15/],
    ['a tab', `prv_live_SECRET\txyz`, /a control character \(U\+0009\)/],
    ['a trailing space', `${secret} `, /a leading or trailing space/],
    ['a character outside ASCII', `prv_live_SECRET€xyz`, /a character outside printable ASCII/],
  ])('refuses a key with %s, naming apiKey and never echoing the key', (_name, apiKey, what) => {
    for (const message of creationErrors({ apiKey })) {
      expect(message).toMatch(/option `apiKey` must be a valid HTTP header value/);
      expect(message).toMatch(what);
      expect(message).not.toContain('SECRET');
    }
  });
});

describe('the endpoint', () => {
  it('refuses credentials in the URL, naming endpoint and never echoing them', () => {
    for (const message of creationErrors({ endpoint: 'https://kana-user:hunter2pw@api.usekana.com/graphql' })) {
      expect(message).toMatch(/option `endpoint` must not contain credentials .*for api\.usekana\.com/);
      expect(message).not.toMatch(/hunter2pw|kana-user/);
    }
    // Nor in a value that is not a URL at all.
    for (const message of creationErrors({ endpoint: 'https://kana-user:hunter2pw@api usekana/graphql' })) {
      expect(message).toMatch(/option `endpoint` must be an http\(s\) URL/);
      expect(message).not.toMatch(/hunter2pw|kana-user/);
    }
  });

  it.each([
    ['plain http to another host', 'http://kana.internal.example:8080/graphql', ['kana.internal.example:8080']],
    ['https', 'https://kana.internal.example/graphql', []],
    ['http to 127.0.0.1', 'http://127.0.0.1:4000/graphql', []],
    ['http to localhost', 'http://localhost:4000/graphql', []],
    ['http to [::1]', 'http://[::1]:4000/graphql', []],
  ])('%s: warns once at creation when the key would travel in cleartext', (_name, endpoint, hosts) => {
    const sink = createLogSink();
    kanaMeter({ apiKey: secret, endpoint, userId: () => 'u1', logger: sink.logger });
    expect(sink.withCode(logCodes.insecureEndpoint).map((line) => line.host)).toEqual(hosts);
    expect(sink.raw.join('')).not.toContain('SECRET');
  });
});

describe('a configuration error found at run time', () => {
  /** A fetch that sends the key with a header injected after it: the HTTP layer refuses it, the key in its message. */
  const brokenFetch: typeof fetch = (input, init) =>
    fetch(input, {
      ...init,
      headers: {
        ...(init?.headers as Record<string, string>),
        authorization: `${env.emulator.apiKey}\r\nx-injected: 1`,
      },
    });

  it('is permanent, with its own code: the usage fails at once, flush() settles, no outage, no key in the logs', async () => {
    const failures: [UndeliveredUsage, KanaError][] = [];
    const { options, sink } = meterOptions(env.emulator, {
      routes: { 'GET /r': 'reports' },
      fetch: brokenFetch,
      onDeliveryFailure: (usage, error) => void failures.push([usage, error]),
    });
    const kana = env.track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await request(app).get('/r').set('x-user', 'u1').expect(200);
    await request(app).get('/r').set('x-user', 'u2').expect(200);
    await kana.flush();

    expect(failures.map(([usage, error]) => [usage.userId, error.code, error.retryable])).toEqual([
      ['u1', 'KANA_CONFIG_ERROR', false],
      ['u2', 'KANA_CONFIG_ERROR', false],
    ]);
    // Both keys in one call, refused before anything was sent.
    expect(kana.stats()).toMatchObject({ calls: 1, retries: 0, failed: 2, pending: 0, kanaAvailable: true });
    expect(sink.withCode(logCodes.configError)).toHaveLength(1);
    expect(sink.withCode(logCodes.kanaUnavailable)).toEqual([]);
    expect(env.emulator.requests()).toEqual([]); // nothing was sent
    expect(sink.raw.join('\n')).not.toContain(env.emulator.apiKey.slice('prv_test_'.length));
  });

  it('fails an entitlement check the same way, without the key in the log line', async () => {
    const { options, sink } = meterOptions(env.emulator, {
      routes: { 'GET /r': { feature: 'reports', enforce: true } },
      fetch: brokenFetch,
    });
    const kana = env.track(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    // Issue 16: a configuration error is not an outage: onConfigError ('deny') decides, not onKanaError ('allow').
    await request(app).get('/r').set('x-user', 'u1').expect(503);
    expect(sink.withCode(logCodes.configError)).toEqual([
      expect.objectContaining({ level: 50, err: expect.objectContaining({ code: 'KANA_CONFIG_ERROR' }) }),
    ]);
    expect(kana.stats().configError).toBe('KANA_CONFIG_ERROR');
    expect(sink.raw.join('\n')).not.toContain(env.emulator.apiKey.slice('prv_test_'.length));
  });
});
