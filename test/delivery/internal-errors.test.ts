// A bug of ours on the delivery path (a client that throws a TypeError) costs no usage: logged once per cause, counted, kept.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  type KanaCall,
  KanaClient,
  type KanaError,
  type KanaMeterOptions,
  kanaMeter,
  logCodes,
  type UndeliveredUsage,
  type UsageBatch,
} from '../../src/index.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
});

/**
 * The seam: a KanaClient whose usage calls (deliverMany, what the queue calls) fail with what
 * `bug(call)` returns (a bug of ours: rejected like an async function's throw, or thrown at once
 * with `sync`), or call Kana when it returns undefined.
 */
class BuggyClient extends KanaClient {
  calls = 0;
  constructor(
    private readonly bug: (call: number) => Error | undefined,
    private readonly sync = false,
  ) {
    super({ apiKey: env.emulator.apiKey, endpoint: env.emulator.url });
  }
  override deliverMany(batches: readonly UsageBatch[], signal: AbortSignal): Promise<(KanaError | undefined)[]> {
    const error = this.bug(++this.calls);
    if (error && this.sync) throw error;
    return error ? Promise.reject(error) : super.deliverMany(batches, signal);
  }
}

function setup(client: KanaClient, overrides: Partial<KanaMeterOptions> = {}) {
  const failures: [UndeliveredUsage, KanaError][] = [];
  const observed: KanaCall[] = [];
  const { options, sink } = meterOptions(env.emulator, {
    apiKey: undefined,
    endpoint: undefined,
    client,
    routes: { 'GET /r': 'reports' },
    onDeliveryFailure: (usage, error) => void failures.push([usage, error]),
    metrics: { bind() {}, observeKanaCall: (call) => void observed.push(call) },
    ...overrides,
  });
  const kana = env.track(kanaMeter(options));
  const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
  const hit = (user: string) => request(app).get('/r').set('x-user', user).expect(200);
  return { kana, hit, sink, failures, observed };
}

describe('an internal error while sending usage', () => {
  it('keeps the usage, backs off, and delivers it once the error stops; logged once with its stack, counted', async () => {
    const client = new BuggyClient((call) =>
      call <= 4 ? new TypeError('import_p_retry.default is not a function') : undefined,
    );
    const { kana, hit, sink, failures, observed } = setup(client);

    await hit('u1');
    await hit('u2');
    await hit('u1');
    await kana.flush();

    expect(env.emulator.usage('u1', 'reports')).toBe(2);
    expect(env.emulator.usage('u2', 'reports')).toBe(1);
    // The first call carried both keys (two errors), then three probes of one key each failed.
    expect(kana.stats()).toMatchObject({ internalErrors: 5, failed: 0, delivered: 3, pending: 0, kanaAvailable: true });
    expect(failures).toEqual([]);
    const logged = sink.withCode(logCodes.internalError);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 50, internalErrors: 1 });
    expect(logged[0]?.err).toMatchObject({
      type: 'TypeError',
      message: 'import_p_retry.default is not a function',
      stack: expect.stringMatching(/at BuggyClient\.deliverMany/),
    });
    // Not blamed on Kana: no delivery failure, no "Kana is unavailable".
    expect(sink.withCode(logCodes.deliveryFailed)).toEqual([]);
    expect(sink.withCode(logCodes.kanaUnavailable)).toEqual([]);
    expect(observed.filter((call) => call.outcome === logCodes.internalError)).toHaveLength(4);
    // Then the probe that succeeds, and the other key.
    expect(client.calls).toBe(6);
  });

  it('logs each distinct cause once (thrown at once, this time)', async () => {
    const client = new BuggyClient((call) => {
      if (call > 6) return undefined;
      return call % 2 ? new TypeError('one bug') : new RangeError('another bug');
    }, true);
    const { kana, hit, sink } = setup(client);

    await hit('u1');
    await kana.flush();

    expect(env.emulator.usage('u1', 'reports')).toBe(1);
    expect(kana.stats()).toMatchObject({ internalErrors: 6, failed: 0 });
    expect(sink.withCode(logCodes.internalError).map((line) => (line.err as { message: string }).message)).toEqual([
      'one bug',
      'another bug',
    ]);
  });

  it('leaves the usage in the spool at close(), never reported undeliverable; the next start delivers it', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'kana-meter-internal-'));
    try {
      const path = join(directory, 'usage.spool');
      const { kana, hit, failures, sink } = setup(new BuggyClient(() => new TypeError('always')), { spool: { path } });
      await hit('u1');
      await hit('u1');
      await kana.close({ timeoutMs: 5000 });

      expect(env.emulator.usage('u1', 'reports')).toBe(0);
      expect(failures).toEqual([]);
      expect(kana.stats()).toMatchObject({ failed: 0, captured: 2 });
      expect(sink.withCode(logCodes.spooledAtClose)).toHaveLength(1);

      const next = setup(new BuggyClient(() => undefined), { spool: { path } });
      await next.kana.flush();
      expect(env.emulator.usage('u1', 'reports')).toBe(2);
      expect(next.kana.stats()).toMatchObject({ replayed: 2, delivered: 2 });
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
