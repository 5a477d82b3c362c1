// npm run bench: autocannon against the same Express 5 app (bare, a no-op middleware, metered, enforced, over
// Redis: express-rate-limit + rate-limit-redis, kanaMeter + RedisStore; and metered with openTelemetry(), without
// an SDK and with one): interleaved rounds, medians, ratios.
// Env: BENCH_ROUNDS (default 5), BENCH_SECONDS per run (default 5), BENCH_CONNECTIONS (default 32),
// BENCH_VARIANTS (a comma-separated subset; bare always runs), REDIS_URL (else its own redis-server on a free port).

import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { type RedisServer, startRedisServer } from '../test/helpers/redis.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const ALL_VARIANTS = [
  'bare',
  'noop',
  'metered',
  'enforced',
  'rate-limit-redis',
  'enforced-redis',
  'metered-otel',
  'metered-otel-sdk',
] as const;
type Variant = (typeof ALL_VARIANTS)[number];
const REDIS_VARIANTS: readonly Variant[] = ['rate-limit-redis', 'enforced-redis'];
const KANA_VARIANTS: readonly Variant[] = ['metered', 'enforced', 'enforced-redis', 'metered-otel', 'metered-otel-sdk'];
const chosen = process.env.BENCH_VARIANTS?.split(',').map((name) => name.trim());
const unknown = chosen?.filter((name) => !(ALL_VARIANTS as readonly string[]).includes(name));
if (unknown?.length)
  throw new Error(`BENCH_VARIANTS: unknown ${unknown.join(', ')}; known: ${ALL_VARIANTS.join(', ')}`);
const VARIANTS: Variant[] = ALL_VARIANTS.filter((name) => name === 'bare' || !chosen || chosen.includes(name));
const USERS = Array.from({ length: 10 }, (_, i) => `u${i}`);

interface Run {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  cpuMicrosPerRequest: number;
  errors: number;
}

/** Forks a bench process and resolves with its first message: `listening`, with its address. */
function start(script: string, args: string[]): Promise<{ child: ChildProcess; ready: Record<string, unknown> }> {
  const child = fork(fileURLToPath(new URL(script, import.meta.url)), args, {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (ready: Record<string, unknown>) => resolve({ child, ready }));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

function ask<T>(child: ChildProcess, type: string, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const onMessage = (message: { type: string } & T) => {
      if (message.type !== reply) return;
      child.off('message', onMessage);
      resolve(message);
    };
    child.on('message', onMessage);
    child.send({ type });
  });
}

async function load(port: number, seconds: number) {
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: seconds,
    requests: USERS.map((user) => ({ method: 'GET', path: '/api/items/42', headers: { 'x-user': user } })),
  });
}

async function measure(child: ChildProcess, port: number): Promise<Run> {
  type Cpu = { cpu: NodeJS.CpuUsage };
  const before = await ask<Cpu>(child, 'cpu', 'cpu');
  const result = await load(port, SECONDS);
  const after = await ask<Cpu>(child, 'cpu', 'cpu');
  const cpuMicros = after.cpu.user - before.cpu.user + (after.cpu.system - before.cpu.system);
  return {
    requestsPerSecond: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuMicrosPerRequest: cpuMicros / result.requests.total,
    errors: result.errors + result.non2xx,
  };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
};

/**
 * On a machine with 2+ CPUs, pin the load generator (and Kana) to CPU 0 and the servers to CPU 1,
 * so a server gets a core of its own and the ratios compare server costs, not scheduling luck.
 */
function pin(pid: number | undefined, cpu: number): boolean {
  if (pid === undefined || cpus().length < 2) return false;
  try {
    execFileSync('taskset', ['-pc', String(cpu), String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false; // no taskset: run unpinned
  }
}
const pinned = pin(process.pid, 0);

const kana = await start('./kana-server.ts', []);
pin(kana.child.pid, 0);
const { url, apiKey } = kana.ready as { url: string; apiKey: string };
// Redis, like Kana, is the outside world: it shares CPU 0 with the load generator.
let redis: RedisServer | undefined;
if (VARIANTS.some((variant) => REDIS_VARIANTS.includes(variant))) {
  redis = await startRedisServer();
  if (redis.pid !== undefined) pin(redis.pid, 0);
}
const servers = new Map<Variant, { child: ChildProcess; port: number }>();
for (const variant of VARIANTS) {
  const { child, ready } = await start('./server.ts', [variant, url, apiKey, redis?.url ?? '']);
  pin(child.pid, 1);
  servers.set(variant, { child, port: ready.port as number });
}
const measured = [...servers.keys()];

console.log(`kana-meter benchmark: ${cpus().length} x ${cpus()[0]?.model}, Node ${process.version}`);
console.log(
  `${ROUNDS} interleaved rounds of ${SECONDS} s per variant, ${CONNECTIONS} connections, ${USERS.length} users`,
);
if (redis) {
  const version = String(await redis.command('INFO', 'server')).match(/redis_version:(\S+)/)?.[1];
  console.log(`Redis ${version} at ${redis.url}${redis.ownProcess ? ' (started by the bench)' : ' (REDIS_URL)'}`);
}
console.log(
  pinned
    ? `autocannon, Kana${redis?.ownProcess ? ' and Redis' : ''} pinned to CPU 0, the servers to CPU 1\n`
    : 'not pinned to CPUs\n',
);

for (const { port } of servers.values()) await load(port, 2);

const runs = new Map<Variant, Run[]>(measured.map((variant) => [variant, []]));
for (let round = 0; round < ROUNDS; round++) {
  // Rotate the order each round so no variant always runs first (or on a warmer machine).
  const order = measured.map((_, i) => measured[(i + round) % measured.length] as Variant);
  for (const variant of order) {
    const server = servers.get(variant) as { child: ChildProcess; port: number };
    const run = await measure(server.child, server.port);
    runs.get(variant)?.push(run);
    process.stdout.write(`round ${round + 1} ${variant.padEnd(16)} ${Math.round(run.requestsPerSecond)} req/s\n`);
  }
}

const bare = runs.get('bare') as Run[];
const bareRps = median(bare.map((run) => run.requestsPerSecond));
const bareCpu = median(bare.map((run) => run.cpuMicrosPerRequest));
console.log('\n| variant | req/s (median) | vs bare | p50 ms | p99 ms | server CPU µs/req | vs bare | errors |');
console.log('|---|---|---|---|---|---|---|---|');
for (const variant of measured) {
  const list = runs.get(variant) as Run[];
  const rps = median(list.map((run) => run.requestsPerSecond));
  const cpu = median(list.map((run) => run.cpuMicrosPerRequest));
  const errors = list.reduce((sum, run) => sum + run.errors, 0);
  console.log(
    `| ${variant} | ${Math.round(rps)} | ${(rps / bareRps).toFixed(3)}x | ${median(list.map((run) => run.p50))} | ${median(list.map((run) => run.p99))} | ${cpu.toFixed(1)} | ${(cpu / bareCpu).toFixed(3)}x | ${errors} |`,
  );
}

// Every 2xx a metered server sent must have reached Kana, in few calls.
const metered = measured.filter((name) => KANA_VARIANTS.includes(name));
let metered2xx = 0;
for (const variant of metered) {
  const server = servers.get(variant) as { child: ChildProcess; port: number };
  type Flushed = {
    served: number;
    stats: { delivered: number; failed: number; calls: number; checks: number; denied: number };
  };
  const { served, stats } = await ask<Flushed>(server.child, 'flush', 'flushed');
  metered2xx += served;
  console.log(
    `\n${variant}: ${served} responses 2xx, ${stats.delivered} usage events delivered, ${stats.failed} failed, ${stats.calls} usage calls, ${stats.checks} entitlement checks, ${stats.denied} denied`,
  );
}
if (metered.length > 0) {
  const usage = await ask<{ total: number; calls: number }>(kana.child, 'usage', 'usage');
  const seconds = (ROUNDS * SECONDS + 2) * metered.length;
  console.log(
    `Kana recorded ${usage.total} units for ${metered2xx} metered 2xx responses (${usage.total === metered2xx ? 'all delivered' : 'MISMATCH'}),`,
  );
  console.log(
    `in ${usage.calls} calls: ${(usage.calls / USERS.length / seconds).toFixed(2)} calls per (user, feature) per second of load (flushInterval 1 s).`,
  );
}

// The servers close first (RedisStore gives its leases back), then Redis goes.
await Promise.all(
  [...servers.values(), kana].map(({ child }) => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.send({ type: 'exit' });
    return exited;
  }),
);
await redis?.stop();
