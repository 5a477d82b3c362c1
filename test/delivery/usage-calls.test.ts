// Several keys in one usage call: up to 20 aliased mutations per document, each read on its own, nothing lost or sent twice.

import type { Express } from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KanaError, type KanaMeterOptions, kanaMeter, type UndeliveredUsage } from '../../src/index.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();
const users = Array.from({ length: 45 }, (_, i) => `user-${i}`);

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
  env.emulator.seed({ users: users.map((id) => ({ id })) });
});

function setup(overrides: Partial<KanaMeterOptions> = {}) {
  const failures: [UndeliveredUsage, KanaError][] = [];
  const { options } = meterOptions(env.emulator, {
    routes: { 'GET /r': 'reports' },
    onDeliveryFailure: (usage, error) => void failures.push([usage, error]),
    retry: { retries: 3, minTimeout: 5, maxTimeout: 20 },
    ...overrides,
  });
  const kana = env.track(kanaMeter(options));
  const app: Express = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
  const hit = (user: string) => request(app).get('/r').set('x-user', user).expect(200);
  return { kana, hit, failures };
}

/** What Kana recorded per user, summed. */
function billed(): Map<string, number> {
  const sums = new Map<string, number>();
  for (const event of env.emulator.usageCalls()) sums.set(event.userId, (sums.get(event.userId) ?? 0) + event.delta);
  return sums;
}

/** The usage mutations each request to Kana carried. */
const mutationsPerRequest = () => env.emulator.requests().map((sent) => sent.fieldNames.length);

describe('usage calls carry several keys', () => {
  it.each(['createUsageEvent', 'recordUsage'] as const)(
    '%s: 45 keys go to Kana in three calls (20, 20, 5), each key once, with its coalesced delta',
    async (mutation) => {
      const { kana, hit, failures } = setup({ mutation });
      const expected = new Map<string, number>();
      for (const [i, user] of users.entries()) {
        const requests = (i % 3) + 1;
        for (let n = 0; n < requests; n++) await hit(user);
        expected.set(user, requests);
      }
      await kana.flush();

      expect(billed()).toEqual(expected);
      expect(env.emulator.usageCalls()).toHaveLength(45);
      expect(mutationsPerRequest().sort((a, b) => b - a)).toEqual([20, 20, 5]);
      expect(env.emulator.requests().every((sent) => sent.fieldNames.every((name) => name === mutation))).toBe(true);
      expect(kana.stats()).toMatchObject({ delivered: 90, failed: 0, calls: 3, retries: 0, pending: 0 });
      expect(failures).toEqual([]);
    },
  );

  it('a key Kana refuses (a user it does not know) fails alone; the rest of its call is billed once', async () => {
    const { kana, hit, failures } = setup();
    await hit('user-0');
    await hit('no-such-user');
    await hit('user-1');
    await hit('user-1');
    await kana.flush();

    expect(billed()).toEqual(
      new Map([
        ['user-0', 1],
        ['user-1', 2],
      ]),
    );
    expect(mutationsPerRequest()).toEqual([3]);
    expect(failures.map(([usage, error]) => [usage.userId, error.code, error.retryable])).toEqual([
      ['no-such-user', 'KANA_REJECTED', false],
    ]);
    expect(kana.stats()).toMatchObject({ delivered: 3, failed: 1, calls: 1, retries: 0 });
  });

  it("a key whose mutation fails on Kana's side is retried alone; the others are not sent again", async () => {
    const { kana, hit, failures } = setup();
    for (const user of ['user-0', 'user-1', 'user-2']) await hit(user);
    env.emulator.failNext({ fieldError: { field: 'createUsageEvent', alias: 'u1' } });
    await kana.flush();

    const [first, retry] = env.emulator.requests();
    expect(first?.fieldNames).toHaveLength(3);
    expect(retry?.fieldNames).toEqual(['createUsageEvent']);
    const failedUser = (first?.variables as Record<string, { userId: string }> | undefined)?.i1?.userId;
    expect(retry?.variables).toEqual({ input: expect.objectContaining({ userId: failedUser }) });
    expect(billed()).toEqual(
      new Map([
        ['user-0', 1],
        ['user-1', 1],
        ['user-2', 1],
      ]),
    );
    expect(env.emulator.usageCalls()).toHaveLength(3);
    expect(kana.stats()).toMatchObject({ delivered: 3, failed: 0, calls: 2, retries: 1 });
    expect(failures).toEqual([]);
  });

  it.each([
    ['HTTP 400', { status: 400 }, 400],
    ['an invalid-input error at HTTP 200', { graphqlError: { message: 'bad input', code: 'BAD_USER_INPUT' } }, 200],
  ] as const)(
    'a call Kana refuses whole (%s) is sent again key by key: nothing lost, nothing twice',
    async (_name, fault, status) => {
      const { kana, hit, failures } = setup();
      for (const user of ['user-0', 'user-1', 'user-2']) await hit(user);
      env.emulator.failNext(fault, { operation: 'createUsageEvent' });
      await kana.flush();

      expect(mutationsPerRequest()).toEqual([3, 1, 1, 1]);
      expect(env.emulator.requests()[0]?.status).toBe(status);
      expect(billed()).toEqual(
        new Map([
          ['user-0', 1],
          ['user-1', 1],
          ['user-2', 1],
        ]),
      );
      expect(kana.stats()).toMatchObject({ delivered: 3, failed: 0, calls: 4 });
      expect(failures).toEqual([]);
    },
  );

  it('a call refused for the API key (HTTP 401) is not sent again key by key: every key of the call fails once', async () => {
    const { kana, hit, failures } = setup();
    for (const user of ['user-0', 'user-1', 'user-2']) await hit(user);
    env.emulator.failNext({ status: 401 }, { operation: 'createUsageEvent', times: Number.POSITIVE_INFINITY });
    await kana.flush();

    expect(mutationsPerRequest()).toEqual([3]);
    expect(failures.map(([usage, error]) => [usage.userId, error.code])).toEqual([
      ['user-0', 'KANA_UNAUTHENTICATED'],
      ['user-1', 'KANA_UNAUTHENTICATED'],
      ['user-2', 'KANA_UNAUTHENTICATED'],
    ]);
    expect(kana.stats()).toMatchObject({ failed: 3, calls: 1, retries: 0 });
  });

  it('a call that fails as a whole (HTTP 503) is retried for every key in it, each billed once', async () => {
    const { kana, hit, failures } = setup();
    for (const user of users.slice(0, 20)) await hit(user);
    env.emulator.failNext({ status: 503 }, { operation: 'createUsageEvent' });
    await kana.flush();

    expect(env.emulator.requests()[0]).toMatchObject({ status: 503 });
    expect(mutationsPerRequest()[0]).toBe(20);
    expect(billed()).toEqual(new Map(users.slice(0, 20).map((user) => [user, 1])));
    expect(env.emulator.usageCalls()).toHaveLength(20);
    const { calls, retries, delivered } = kana.stats();
    expect(delivered).toBe(20);
    // The retries are jittered per key: they share calls or not, but each call after the first is a retry.
    expect(retries).toBe(calls - 1);
    expect(failures).toEqual([]);
  });
});
