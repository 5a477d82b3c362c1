// Many users: what delivery and the shared allowance cost when most (user, feature) keys have a request or two per
// flush. Requests in process at a fixed rate over BENCH_MANY_USERS users (5,000), Kana and Redis in their own processes;
// CPU per request vs bare, interleaved, with express-rate-limit over rate-limit-redis beside enforcement with RedisStore;
// and the usage calls and store commands per 1,000 requests (the figures batching and leases move, free of the host's noise).

import { startRedisServer } from '../test/helpers/redis.js';
import { sendRequest } from './in-process-request.js';
import { ask, median, pin, start } from './processes.js';
import { buildVariantApp, type Variant, type VariantApp } from './variant-app.js';

const USER_COUNT = Number(process.env.BENCH_MANY_USERS ?? 5000);
const RATE = Number(process.env.BENCH_MANY_RATE ?? 2000);
const SECONDS = Number(process.env.BENCH_MANY_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_MANY_ROUNDS ?? 3);
const VARIANTS: readonly Variant[] = ['bare', 'metered', 'enforced', 'enforced-redis', 'rate-limit-redis'];
const users = Array.from({ length: USER_COUNT }, (_, i) => `u${i}`);

/** Sends RATE requests a second for SECONDS, spread over the users in turn; returns CPU µs per request and the count. */
async function paced(app: VariantApp, from: number): Promise<{ cpuMicros: number; requests: number }> {
  const started = performance.now();
  const before = process.cpuUsage();
  let sent = 0;
  while (performance.now() - started < SECONDS * 1000) {
    const due = Math.floor(((performance.now() - started) / 1000) * RATE);
    const wave: Promise<void>[] = [];
    for (; sent < due; sent++) wave.push(sendRequest(app.app, users[(from + sent) % USER_COUNT] as string, false));
    await Promise.all(wave);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  const used = process.cpuUsage(before);
  return { cpuMicros: (used.user + used.system) / sent, requests: sent };
}

pin(process.pid, 1);
const kana = await start('./kana-server.ts', [String(USER_COUNT)]);
pin(kana.child.pid, 0);
const { url, apiKey } = kana.ready as { url: string; apiKey: string };
const redis = await startRedisServer();
if (redis.pid !== undefined) pin(redis.pid, 0);
const apps = new Map<Variant, VariantApp>();
for (const variant of VARIANTS) {
  apps.set(variant, await buildVariantApp(variant, { endpoint: url, apiKey, redisUrl: redis.url }));
}
const app = (variant: Variant) => apps.get(variant) as VariantApp;

// Warm up: every user once (enforcement's first check per user), then a second of load each.
for (const variant of VARIANTS) {
  for (let i = 0; i < USER_COUNT; i += 50) {
    await Promise.all(users.slice(i, i + 50).map((user) => sendRequest(app(variant).app, user, false)));
  }
  await app(variant).kana?.flush();
}

const cpu = new Map<Variant, number[]>(VARIANTS.map((variant) => [variant, []]));
const callsPer1000 = new Map<Variant, number[]>(VARIANTS.map((variant) => [variant, []]));
const storePer1000 = new Map<Variant, number[]>(VARIANTS.map((variant) => [variant, []]));
let offset = 0;
for (let round = 0; round < ROUNDS; round++) {
  for (const variant of VARIANTS) {
    const kanaMeter = app(variant).kana;
    const callsBefore = kanaMeter?.stats().calls ?? 0;
    const storeBefore = kanaMeter?.stats().storeCommands ?? 0;
    const { cpuMicros, requests } = await paced(app(variant), offset);
    offset += requests;
    // The calls of this round's usage: what is still waiting goes now, outside the measured time.
    await kanaMeter?.flush();
    cpu.get(variant)?.push(cpuMicros);
    callsPer1000.get(variant)?.push((((kanaMeter?.stats().calls ?? 0) - callsBefore) / requests) * 1000);
    storePer1000.get(variant)?.push((((kanaMeter?.stats().storeCommands ?? 0) - storeBefore) / requests) * 1000);
  }
}

const bare = cpu.get('bare') as number[];
console.log(
  `\nMany users: ${USER_COUNT} users sharing ${RATE} requests/s in process, Kana and Redis in their own processes; ${ROUNDS} interleaved rounds of ${SECONDS} s.`,
);
console.log(
  '| variant | CPU µs per request (median, range) | vs bare (paired) | usage calls per 1,000 requests | RedisStore commands per 1,000 requests |',
);
console.log('| --- | --- | --- | --- | --- |');
for (const variant of VARIANTS) {
  const values = cpu.get(variant) as number[];
  const ratios = values.map((value, i) => value / (bare[i] as number));
  const metered = app(variant).kana !== undefined;
  const calls = metered ? median(callsPer1000.get(variant) as number[]).toFixed(1) : '—';
  // rate-limit-redis sends one EVALSHA per request by design.
  const store = variant === 'enforced-redis' ? median(storePer1000.get(variant) as number[]).toFixed(1) : '—';
  console.log(
    `| ${variant} | ${median(values).toFixed(1)} (${Math.min(...values).toFixed(1)}–${Math.max(...values).toFixed(1)}) | ${median(ratios).toFixed(3)}× (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}) | ${calls} | ${store} |`,
  );
}

let served = 0;
for (const variant of VARIANTS) {
  if (app(variant).kana !== undefined) served += app(variant).served();
  await app(variant).kana?.close();
  await app(variant).close();
}
const usage = await ask<{ total: number }>(kana.child, 'usage', 'usage');
console.log(
  `Kana recorded ${usage.total} units for ${served} metered 2xx responses (${usage.total === served ? 'all delivered' : 'MISMATCH'}).`,
);
kana.child.send({ type: 'exit' });
await redis.stop();
if (usage.total !== served) process.exitCode = 1;
