// kana-meter/prometheus against the emulator: a metered app scraped through prom-client, exact values after real traffic and faults.

import { readFile } from 'node:fs/promises';
import { register as globalRegister, Registry } from 'prom-client';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, type KanaMeterStats, kanaMeter } from '../../src/index.js';
import { prometheusMetrics } from '../../src/integrations/prometheus.js';
import { RedisStore } from '../../src/stores/redis-store.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import { redisClients, redisIsExternal, redisSkipReason, startRedisServer } from '../helpers/redis.js';

const env = useEmulator();

beforeEach(async () => {
  await env.emulator.setOffline(false);
  env.emulator.reset();
  // u1 and u2 may use reports without limit, and searches twice (enforced).
  env.emulator.seed({
    users: [{ id: 'u1' }, { id: 'u2' }],
    features: [
      { id: 'reports', type: 'CONSUMABLE' },
      { id: 'searches', type: 'CONSUMABLE' },
    ],
    packages: [
      {
        id: 'small',
        features: [
          { id: 'reports', limit: null },
          { id: 'searches', limit: 2 },
        ],
      },
    ],
    subscriptions: [
      { userId: 'u1', packageId: 'small' },
      { userId: 'u2', packageId: 'small' },
    ],
  });
});

/** A metered app whose kanaMeter reports to a fresh registry; `scrape()` reads it as Prometheus does. */
function setup(overrides: Partial<KanaMeterOptions> = {}) {
  const register = new Registry();
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /r': 'reports', 'GET /search': { feature: 'searches', enforce: true } },
    metrics: prometheusMetrics({ register }),
    ...overrides,
  });
  const kana = kanaMeter(options);
  env.track(kana);
  const app = meteredApp(expressVersions[0][1], kana, (app) => {
    app.get('/r', (_req, res) => res.json({}));
    app.get('/search', (_req, res) => res.json({}));
    app.get('/metrics', async (_req, res) => {
      res.type(register.contentType).send(await register.metrics());
    });
  });
  const hit = (path = '/r', status = 200, user = 'u1') => request(app).get(path).set('x-user', user).expect(status);
  const scrape = async () => parseExposition((await request(app).get('/metrics').expect(200)).text);
  return { kana, register, hit, scrape, sink };
}

/** Sample lines of the text exposition format, by `name{labels}` as written. */
function parseExposition(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

const duration = (operation: string, outcome: string, suffix: 'count' | 'sum') =>
  `kana_meter_kana_call_duration_seconds_${suffix}{operation="${operation}",outcome="${outcome}"}`;

describe('prometheusMetrics() on a metered app', () => {
  it('counts what was captured and delivered, and times each usage call', async () => {
    const { kana, hit, scrape } = setup();
    for (let i = 0; i < 5; i++) await hit();
    for (let i = 0; i < 2; i++) await hit('/r', 200, 'u2');
    let samples = await scrape();
    expect(samples.get('kana_meter_events_captured_total')).toBe(7);
    expect(samples.get('kana_meter_events_delivered_total')).toBe(0);
    expect(samples.get('kana_meter_pending_events')).toBe(7);
    expect(samples.get('kana_meter_pending_keys')).toBe(2);

    await kana.flush();
    samples = await scrape();
    expect(samples.get('kana_meter_events_captured_total')).toBe(7);
    expect(samples.get('kana_meter_events_delivered_total')).toBe(7);
    expect(samples.get('kana_meter_events_failed_total')).toBe(0);
    // Both keys in one call.
    expect(samples.get('kana_meter_usage_calls_total')).toBe(1);
    expect(samples.get('kana_meter_usage_call_retries_total')).toBe(0);
    expect(samples.get('kana_meter_pending_events')).toBe(0);
    expect(samples.get('kana_meter_pending_keys')).toBe(0);
    expect(samples.get('kana_meter_usage_calls_in_flight')).toBe(0);
    expect(samples.get('kana_meter_kana_available')).toBe(1);
    expect(samples.get(duration('usage', 'ok', 'count'))).toBe(1);
    expect(samples.get(duration('usage', 'ok', 'sum'))).toBeGreaterThan(0);
    expect(samples.get('kana_meter_kana_call_duration_seconds_bucket{le="+Inf",operation="usage",outcome="ok"}')).toBe(
      1,
    );
    expect(env.emulator.usage('u1', 'reports')).toBe(5);
  });

  it('counts retries after a 503, and times the failed attempts under their code', async () => {
    const { kana, hit, scrape } = setup();
    env.emulator.failNext({ status: 503 }, { times: 2 });
    await hit();
    await kana.flush();
    const samples = await scrape();
    expect(samples.get('kana_meter_usage_call_retries_total')).toBe(2);
    expect(samples.get('kana_meter_usage_calls_total')).toBe(3);
    expect(samples.get('kana_meter_events_delivered_total')).toBe(1);
    expect(samples.get(duration('usage', 'KANA_SERVER_ERROR', 'count'))).toBe(2);
    expect(samples.get(duration('usage', 'ok', 'count'))).toBe(1);
  });

  it('counts an event that failed for good', async () => {
    const { kana, hit, scrape } = setup({ onDeliveryFailure: () => {} });
    env.emulator.failNext({ status: 401 });
    await hit();
    await kana.flush();
    const samples = await scrape();
    expect(samples.get('kana_meter_events_failed_total')).toBe(1);
    expect(samples.get('kana_meter_events_delivered_total')).toBe(0);
    expect(samples.get('kana_meter_usage_call_retries_total')).toBe(0);
    expect(samples.get(duration('usage', 'KANA_UNAUTHENTICATED', 'count'))).toBe(1);
    expect(samples.has(duration('usage', 'ok', 'count'))).toBe(false);
  });

  it('shows an outage: Kana unavailable and usage pending, then back', async () => {
    const { kana, hit, scrape } = setup({ retry: { retries: 1, minTimeout: 1, maxTimeout: 50 }, flushInterval: 0 });
    await env.emulator.setOffline(true);
    await hit();
    await hit();
    await expect.poll(() => kana.stats().kanaAvailable).toBe(false);
    let samples = await scrape();
    expect(samples.get('kana_meter_kana_available')).toBe(0);
    expect(samples.get('kana_meter_pending_events')).toBe(2);
    expect(samples.get(duration('usage', 'KANA_UNREACHABLE', 'count'))).toBeGreaterThanOrEqual(2);

    await env.emulator.setOffline(false);
    await kana.flush();
    samples = await scrape();
    expect(samples.get('kana_meter_kana_available')).toBe(1);
    expect(samples.get('kana_meter_pending_events')).toBe(0);
    expect(samples.get('kana_meter_events_delivered_total')).toBe(2);
  });

  it('counts enforcement: allowed, denied, cache hits, checks; and times the check', async () => {
    const { kana, hit, scrape } = setup();
    await hit('/search');
    await hit('/search');
    await hit('/search', 429);
    await kana.flush();
    const samples = await scrape();
    expect(samples.get('kana_meter_enforcement_allowed_total')).toBe(2);
    expect(samples.get('kana_meter_enforcement_denied_total')).toBe(1);
    expect(samples.get('kana_meter_enforcement_cache_hits_total')).toBe(2);
    expect(samples.get('kana_meter_entitlement_checks_total')).toBe(1);
    expect(samples.get('kana_meter_entitlement_check_errors_total')).toBe(0);
    expect(samples.get('kana_meter_enforcement_failed_open_total')).toBe(0);
    expect(samples.get('kana_meter_cached_entitlements')).toBe(1);
    expect(samples.get(duration('check', 'ok', 'count'))).toBe(1);
    expect(samples.get('kana_meter_events_delivered_total')).toBe(2);
    expect(env.emulator.usage('u1', 'searches')).toBe(2);
  });

  it('counts a failed check let through (fail open), timed under KANA_TIMEOUT', async () => {
    const { hit, scrape } = setup({ checkTimeoutMs: 100 });
    env.emulator.failNext({ delayMs: 400 }, { operation: 'canUseFeature' });
    await hit('/search');
    const samples = await scrape();
    expect(samples.get('kana_meter_enforcement_failed_open_total')).toBe(1);
    expect(samples.get('kana_meter_enforcement_allowed_total')).toBe(1);
    expect(samples.get('kana_meter_entitlement_check_errors_total')).toBe(1);
    expect(samples.get(duration('check', 'KANA_TIMEOUT', 'count'))).toBe(1);
    expect(samples.get(duration('check', 'KANA_TIMEOUT', 'sum'))).toBeGreaterThanOrEqual(0.095);
  });

  it('counts requests without a user, and invalid deltas', async () => {
    const { hit, scrape } = setup({
      routes: { 'GET /r': { feature: 'reports', delta: () => Number.NaN }, 'GET /search': 'searches' },
    });
    await hit('/r');
    await hit('/search', 200, '');
    const samples = await scrape();
    expect(samples.get('kana_meter_invalid_deltas_total')).toBe(1);
    expect(samples.get('kana_meter_requests_without_user_total')).toBe(1);
    expect(samples.get('kana_meter_events_captured_total')).toBe(0);
  });
});

describe.skipIf(redisSkipReason || redisIsExternal)('prometheusMetrics() with RedisStore against redis-server', () => {
  it("exports the store's state: available, commands, leases and leased units; its outage, failures and the decisions made without it", async () => {
    const redis = await startRedisServer();
    const client = await (redisClients[0] as (typeof redisClients)[number])[1](redis.url);
    try {
      const store = new RedisStore({ sendCommand: client.sendCommand, timeoutMs: 300 });
      const { kana, hit, scrape } = setup({ store });
      await hit('/search'); // searches: 2 for u1; the first reservation grants 1 unit, spent
      expect((await kana.check('u2', 'searches')).allowed).toBe(true); // reserves 1 unit for u2, not spent
      let samples = await scrape();
      expect(samples.get('kana_meter_store_available')).toBe(1);
      expect(samples.get('kana_meter_store_commands_total')).toBe(kana.stats().storeCommands);
      expect(samples.get('kana_meter_store_commands_total')).toBeGreaterThanOrEqual(4); // 2 x (begin-check, store-answer, reserve)
      expect(samples.get('kana_meter_store_failures_total')).toBe(0);
      expect(samples.get('kana_meter_store_leases')).toBe(2);
      expect(samples.get('kana_meter_store_leased_units')).toBe(1);
      expect(samples.get('kana_meter_shared_answers_total')).toBe(0);
      expect(samples.get('kana_meter_store_fallbacks_total')).toBe(0);
      await redis.kill();
      await hit('/search'); // u1's block is spent: the reservation fails, decided here (1 of 2 used)
      samples = await scrape();
      expect(samples.get('kana_meter_store_fallbacks_total')).toBe(1);
      expect(samples.get('kana_meter_store_available')).toBe(0);
      expect(samples.get('kana_meter_store_outages_total')).toBe(1);
      expect(samples.get('kana_meter_store_failures_total')).toBeGreaterThanOrEqual(1);
    } finally {
      client.close();
      await redis.stop();
    }
  });
});

describe('the exposition', () => {
  it('has HELP and the right TYPE for every metric: counters end in _total, one histogram in seconds', async () => {
    const { register } = setup();
    const metrics = await register.getMetricsAsJSON();
    for (const metric of metrics) {
      expect(metric.help.length).toBeGreaterThan(10);
      expect(metric.name).toMatch(/^kana_meter_[a-z_]+$/);
      const expected = metric.name.endsWith('_total')
        ? 'counter'
        : metric.name.endsWith('_seconds')
          ? 'histogram'
          : 'gauge';
      expect(String(metric.type)).toBe(expected);
    }
    expect(metrics.filter((metric) => String(metric.type) === 'counter')).toHaveLength(36);
    expect(metrics.filter((metric) => String(metric.type) === 'gauge')).toHaveLength(10);
  });

  it('reads stats() once per scrape, so every value comes from the same instant', async () => {
    const register = new Registry();
    const prometheus = prometheusMetrics({ register });
    let reads = 0;
    setup({
      metrics: {
        bind: (stats) =>
          prometheus.bind(() => {
            reads++;
            return stats();
          }),
        observeKanaCall: (call) => prometheus.observeKanaCall(call),
      },
    });
    await register.metrics();
    expect(reads).toBe(1);
    await register.getMetricsAsJSON();
    expect(reads).toBe(2);
  });

  it('takes a prefix and buckets', async () => {
    const register = new Registry();
    const { kana, hit } = setup({ metrics: prometheusMetrics({ register, prefix: 'api_kana_', buckets: [0.5, 30] }) });
    await hit();
    await kana.flush();
    const samples = parseExposition(await register.metrics());
    expect(samples.get('api_kana_events_delivered_total')).toBe(1);
    expect(samples.has('kana_meter_events_delivered_total')).toBe(false);
    expect([...samples.keys()].filter((name) => name.startsWith('api_kana_kana_call_duration_seconds_bucket'))).toEqual(
      [
        'api_kana_kana_call_duration_seconds_bucket{le="0.5",operation="usage",outcome="ok"}',
        'api_kana_kana_call_duration_seconds_bucket{le="30",operation="usage",outcome="ok"}',
        'api_kana_kana_call_duration_seconds_bucket{le="+Inf",operation="usage",outcome="ok"}',
      ],
    );
  });

  it("uses prom-client's global register by default", async () => {
    const { kana, hit } = setup({ metrics: prometheusMetrics() });
    try {
      await hit();
      await kana.flush();
      const samples = parseExposition(await globalRegister.metrics());
      expect(samples.get('kana_meter_events_delivered_total')).toBe(1);
    } finally {
      globalRegister.clear();
    }
  });
});

describe('one prometheusMetrics() per kanaMeter()', () => {
  it('refuses to be bound to a second kanaMeter(), with a clear error', () => {
    const metrics = prometheusMetrics({ register: new Registry() });
    setup({ metrics });
    const { options } = meterOptions(env.emulator, { metrics });
    expect(() => kanaMeter(options)).toThrow(
      /option `metrics`: this prometheusMetrics\(\) is already bound to another kanaMeter\(\); create one per kanaMeter\(\), each with its own `prefix` or `register`/,
    );
  });

  it('refuses a second prometheusMetrics() with the same prefix in one registry; another prefix is fine', () => {
    const register = new Registry();
    prometheusMetrics({ register });
    expect(() => prometheusMetrics({ register })).toThrow(
      /the registry already has a metric named kana_meter_events_captured_total .*give each one its own `prefix` or `register`/,
    );
    expect(() => prometheusMetrics({ register, prefix: 'kana_meter_worker_' })).not.toThrow();
  });
});

describe('prometheusMetrics() options', () => {
  it.each([
    [null, /option `prometheusMetrics options` must be an object/],
    [
      { registry: new Registry() },
      /option `prometheusMetrics.registry` must be absent \(known: register, prefix, buckets\)/,
    ],
    [{ register: {} }, /option `prometheusMetrics.register` must be a prom-client Registry.*; got an object/],
    [
      { prefix: 'kana-meter-' },
      /option `prometheusMetrics.prefix` must be a Prometheus metric name prefix.*; got "kana-meter-"/,
    ],
    [{ prefix: '1kana_' }, /option `prometheusMetrics.prefix` must be a Prometheus metric name prefix/],
    [{ prefix: 7 }, /option `prometheusMetrics.prefix` must be .*; got 7/],
    [{ buckets: [] }, /option `prometheusMetrics.buckets` must be a non-empty array of increasing positive numbers/],
    [{ buckets: [1, 0.5] }, /option `prometheusMetrics.buckets` must be a non-empty array of increasing/],
    [{ buckets: [0, 1] }, /option `prometheusMetrics.buckets` must be/],
    [{ buckets: [0.1, Number.POSITIVE_INFINITY] }, /option `prometheusMetrics.buckets` must be/],
    [{ buckets: '0.1,1' }, /option `prometheusMetrics.buckets` must be.*; got "0.1,1"/],
  ])('rejects %j', (options, message) => {
    expect(() => prometheusMetrics(options as never)).toThrow(TypeError);
    expect(() => prometheusMetrics(options as never)).toThrow(message);
  });

  it('accepts an empty prefix: every metric is registered under its bare name, and reads stats()', async () => {
    const register = new Registry();
    const metrics = prometheusMetrics({ register, prefix: '' });
    const stats = { ...setup().kana.stats(), captured: 7 };
    metrics.bind(() => stats);
    const names = (await register.getMetricsAsJSON()).map((metric) => metric.name);
    expect(names).toContain('events_captured_total');
    expect(names.filter((name) => name.startsWith('kana_meter_'))).toEqual([]);
    expect(parseExposition(await register.metrics()).get('events_captured_total')).toBe(7);
  });
});

describe("the observability guide's stats() table", () => {
  /** Rows of the table under "## `kana.stats()`" in docs/observability.md: field, kind, metric. */
  async function tableRows() {
    const guide = await readFile(new URL('../../docs/observability.md', import.meta.url), 'utf8');
    const start = guide.indexOf('## `kana.stats()`');
    expect(start).toBeGreaterThan(-1);
    const section = guide.slice(start, guide.indexOf('\n## ', start + 1));
    return [...section.matchAll(/^\| `(\w+)` +\| (counter|gauge) +\|.*\| `(kana_meter_\w+)`.*\|$/gm)].map(
      ([, field, kind, metric]) => ({ field: field as keyof KanaMeterStats, kind, metric: metric as string }),
    );
  }

  it('lists every stats() field, once, with the metric prometheusMetrics() exposes for it', async () => {
    const rows = await tableRows();
    const { kana } = setup();
    const fields = Object.keys(kana.stats()) as (keyof KanaMeterStats)[];
    expect(rows.map((row) => row.field).sort()).toEqual([...fields].sort());

    // Feed prometheusMetrics() a stats() whose every field has its own value, and read each row's metric.
    const values = Object.fromEntries(fields.map((field, i) => [field, i + 1])) as Record<string, number>;
    const booleans = new Set<string>(['kanaAvailable', 'checksAvailable', 'storeAvailable', 'configError']);
    const fake = {
      ...values,
      kanaAvailable: false,
      checksAvailable: false,
      storeAvailable: false,
      configError: null,
    } as unknown as KanaMeterStats;
    const register = new Registry();
    prometheusMetrics({ register }).bind(() => fake);
    const samples = parseExposition(await register.metrics());
    const metrics = await register.getMetricsAsJSON();
    for (const { field, kind, metric } of rows) {
      expect(samples.get(metric), `${field} -> ${metric}`).toBe(booleans.has(field) ? 0 : values[field]);
      expect(String(metrics.find((m) => m.name === metric)?.type), metric).toBe(kind);
    }
    // And nothing else but the histogram.
    expect(metrics.map((m) => m.name).sort()).toEqual(
      [...rows.map((row) => row.metric), 'kana_meter_kana_call_duration_seconds'].sort(),
    );
  });
});
