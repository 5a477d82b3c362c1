// Enforcement against a misbehaving Kana: 30 new users while checks hang, an over-budget user in an outage, a burst of new users.
// Usage: node --import tsx bench/check-faults.ts   (prints one JSON line per scenario)
// Uses only options every release of kanaMeter has, so the same file measures before and after a change.

import type { AddressInfo } from 'node:net';
import express from 'express';
import { type KanaEmulator, startKanaEmulator } from '../src/emulator/index.js';
import { type KanaMeterOptions, kanaMeter } from '../src/index.js';

const HOUR = 3_600_000;
const BURST_USERS = 300;
const users = Array.from({ length: BURST_USERS + 40 }, (_, i) => `u${i}`);

function seed(emulator: KanaEmulator): void {
  emulator.reset();
  emulator.seed({
    users: [...users, 'over'].map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 5, resetPeriod: 'DAY' }] }],
    subscriptions: [...users, 'over'].map((userId) => ({
      userId,
      packageId: 'small',
      startedAt: new Date(Date.now() - 23 * HOUR).toISOString(),
    })),
    usage: [{ userId: 'over', featureId: 'api-calls', used: 5 }],
  });
}

/** An enforced app on a real port; `fetch` counts check calls in flight. */
async function startApp(emulator: KanaEmulator, options: Partial<KanaMeterOptions>) {
  let inFlight = 0;
  let peakInFlight = 0;
  const kana = kanaMeter({
    apiKey: emulator.apiKey,
    endpoint: emulator.url,
    userId: (req) => req.get('x-user'),
    routes: { 'GET /api/calls': 'api-calls' },
    enforce: true,
    logger: { error() {}, warn() {}, info() {}, debug() {} },
    fetch: async (input, init) => {
      // Entitlement checks only: usage deliveries go through this fetch too.
      if (!String(init?.body).includes('canUseFeature')) return fetch(input, init);
      peakInFlight = Math.max(peakInFlight, ++inFlight);
      try {
        return await fetch(input, init);
      } finally {
        inFlight--;
      }
    },
    ...options,
  });
  const app = express();
  app.use(kana);
  app.get('/api/calls', (req, res) => res.json({ source: req.kana?.source ?? null }));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  const get = async (user: string) => {
    const started = performance.now();
    const response = await fetch(`http://127.0.0.1:${port}/api/calls`, { headers: { 'x-user': user } });
    const body = (await response.json()) as { source?: string };
    return { status: response.status, source: body.source, ms: performance.now() - started };
  };
  return {
    kana,
    get,
    peakInFlight: () => peakInFlight,
    close: async () => {
      await kana.close({ timeoutMs: 100 });
      server.closeAllConnections();
      server.close();
    },
  };
}

const checkCalls = (emulator: KanaEmulator) =>
  emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature')).length;

async function thirtyNewUsersWhileKanaHangs(emulator: KanaEmulator, checkTimeoutMs: number | undefined) {
  seed(emulator);
  // A delay far beyond any timeout is a hang; apply: false, so nothing happens once the client gives up.
  emulator.failNext({ delayMs: HOUR, apply: false }, { operation: 'canUseFeature', times: 10_000 });
  const app = await startApp(emulator, checkTimeoutMs === undefined ? {} : { checkTimeoutMs });
  const started = performance.now();
  const statuses: number[] = [];
  for (const user of users.slice(0, 30)) statuses.push((await app.get(user)).status);
  const ms = Math.round(performance.now() - started);
  const calls = checkCalls(emulator);
  await app.close();
  return {
    scenario: '30 new users in a row, Kana hangs',
    checkTimeoutMs: checkTimeoutMs ?? 'default',
    ms,
    calls,
    statuses: count(statuses),
  };
}

async function overBudgetUserInAnOutage(emulator: KanaEmulator, onKanaError: 'allow' | 'deny') {
  seed(emulator);
  const app = await startApp(emulator, { onKanaError, entitlementTtl: 100 });
  const before = await app.get('over');
  await new Promise((resolve) => setTimeout(resolve, 150)); // the answer expires
  await emulator.setOffline(true);
  const during = await app.get('over');
  await emulator.setOffline(false);
  await app.close();
  return {
    scenario: 'an over-budget user, Kana unreachable after the cached answer expired',
    onKanaError,
    whileKanaUp: before.status,
    duringOutage: { status: during.status, source: during.source ?? 'refused' },
  };
}

async function burstOfNewUsers(emulator: KanaEmulator) {
  seed(emulator);
  emulator.failNext({ delayMs: 200 }, { operation: 'canUseFeature', times: 10_000 });
  const app = await startApp(emulator, {});
  const burst = async () => {
    const started = performance.now();
    const results = await Promise.all(users.slice(0, BURST_USERS).map((user) => app.get(user)));
    const latencies = results.map((result) => result.ms).sort((a, b) => a - b);
    const at = (q: number) =>
      Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0);
    return {
      ms: Math.round(performance.now() - started),
      latencyMs: { p50: at(0.5), p99: at(0.99), max: Math.round(latencies.at(-1) ?? 0) },
      statuses: count(results.map((result) => result.status)),
    };
  };
  const cold = await burst();
  const calls = checkCalls(emulator);
  const peak = app.peakInFlight();
  // The same users again: every check is a cache hit, so this is what the burst costs without Kana.
  const warm = await burst();
  await app.close();
  return {
    scenario: `${BURST_USERS} new users at once, Kana answers checks in 200 ms`,
    checkCalls: calls,
    peakCheckCallsInFlight: peak,
    newUsers: cold,
    sameUsersCached: warm,
  };
}

function count(values: readonly (string | number)[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1;
  return counts;
}

const emulator = await startKanaEmulator();
try {
  for (const timeout of [500, undefined])
    console.log(JSON.stringify(await thirtyNewUsersWhileKanaHangs(emulator, timeout)));
  for (const policy of ['allow', 'deny'] as const)
    console.log(JSON.stringify(await overBudgetUserInAnOutage(emulator, policy)));
  console.log(JSON.stringify(await burstOfNewUsers(emulator)));
} finally {
  await emulator.close();
}
