// npm run bench: autocannon against the same Express 5 app (bare, a no-op middleware, metered, enforced,
// express-rate-limit, and over Redis: express-rate-limit + rate-limit-redis, kanaMeter + RedisStore; enforced with
// idempotencyKey on, requests without a key and each with a new one; the floors of counting each request):
// each variant's server loaded at the same time as a bare Express server's, both on one core, so that both see the
// same host; in interleaved rounds, paired ratios to bare with their ranges, peak RSS; then the in-process CPU cost
// (in-process.ts) and many users (many-users.ts).
// Env: BENCH_ROUNDS (default 10), BENCH_SECONDS per run (default 3), BENCH_CONNECTIONS per server (default 32),
// BENCH_VARIANTS (a comma-separated subset; bare always runs), REDIS_URL (else its own redis-server on a free port),
// BENCH_RATE (requests/s: a fixed rate below saturation instead of as fast as the server answers; then compare the
// CPU/req column, what the variant costs at that load, rather than throughput).

import type { ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';
import autocannon from 'autocannon';
import { type RedisServer, startRedisServer } from '../test/helpers/redis.js';
import { ask, median, pin, start } from './processes.js';
import {
  chosenVariants,
  KANA_VARIANTS,
  KEYED_VARIANTS,
  REDIS_VARIANTS,
  ROUTE_PATH,
  USERS,
  type Variant,
} from './variant-app.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 10);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const RATE = process.env.BENCH_RATE ? Number(process.env.BENCH_RATE) : undefined;
if (RATE !== undefined && !(RATE > 0))
  throw new Error(`BENCH_RATE: expected requests per second (> 0), got ${process.env.BENCH_RATE}`);
const VARIANTS = chosenVariants(process.env.BENCH_VARIANTS);

interface Run {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  cpuMicrosPerRequest: number;
  /** The server's peak resident set at the end of this run, in MB. */
  peakRssMb: number;
  errors: number;
}

let keys = 0;

async function load(port: number, seconds: number, keyed = false) {
  return autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: seconds,
    ...(RATE !== undefined && { overallRate: RATE }),
    requests: USERS.map((user) => ({
      method: 'GET',
      path: ROUTE_PATH,
      headers: { 'x-user': user },
      ...(keyed && {
        setupRequest: (request: autocannon.Request) => ({
          ...request,
          headers: { ...request.headers, 'idempotency-key': `k${++keys}` },
        }),
      }),
    })),
  });
}

type Server = { child: ChildProcess; port: number };
type Pair = Awaited<ReturnType<typeof measurePair>>;
type Cpu = { cpu: NodeJS.CpuUsage; maxRssKb: number };

const cpuMicros = (before: Cpu, after: Cpu) =>
  after.cpu.user - before.cpu.user + (after.cpu.system - before.cpu.system);

function toRun(result: autocannon.Result, before: Cpu, after: Cpu): Run {
  return {
    requestsPerSecond: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuMicrosPerRequest: cpuMicros(before, after) / result.requests.total,
    peakRssMb: after.maxRssKb / 1024,
    errors: result.errors + result.non2xx,
  };
}

/**
 * Loads `server` and the bare partner at the same time, both on CPU 1: whatever the shared host does during the
 * run, it does to both. Which load starts first alternates (`partnerFirst`): in an A/A run (bare beside bare) the
 * server started second served 2 to 3% more. Also returns the share of CPU 1 the two servers used: near 1 when
 * they, not the load generator, set the pace.
 */
async function measurePair(server: Server, partner: Server, keyed: boolean, partnerFirst: boolean) {
  const ask2 = () => Promise.all([ask<Cpu>(partner.child, 'cpu', 'cpu'), ask<Cpu>(server.child, 'cpu', 'cpu')]);
  const [partnerBefore, before] = await ask2();
  const started = performance.now();
  // autocannon starts when called; either way the list ends up [partner's, server's].
  const loads = partnerFirst
    ? [load(partner.port, SECONDS), load(server.port, SECONDS, keyed)]
    : [load(server.port, SECONDS, keyed), load(partner.port, SECONDS)].reverse();
  const [partnerResult, result] = await Promise.all(loads as [Promise<autocannon.Result>, Promise<autocannon.Result>]);
  const wallMicros = (performance.now() - started) * 1000;
  const [partnerAfter, after] = await ask2();
  return {
    partner: toRun(partnerResult, partnerBefore, partnerAfter),
    run: toRun(result, before, after),
    busy: (cpuMicros(partnerBefore, partnerAfter) + cpuMicros(before, after)) / wallMicros,
  };
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
const startServer = async (variant: Variant): Promise<Server> => {
  const { child, ready } = await start('./server.ts', [variant, url, apiKey, redis?.url ?? '']);
  pin(child.pid, 1);
  return { child, port: ready.port as number };
};
// Each variant has a bare partner of its own, so both servers of a pair have the same history: with one partner
// loaded in every pair, it stayed warm while each variant idled between its runs, and a second bare server beside
// it measured 0.885x. 'bare' runs beside its own partner too: the pairing's own error (A/A), in every run.
const servers = new Map<Variant, Server>();
const partners = new Map<Variant, Server>();
for (const variant of VARIANTS) {
  servers.set(variant, await startServer(variant));
  partners.set(variant, await startServer('bare'));
}
const measured = [...servers.keys()];
/**
 * Head to head, for the targets that say "ahead of": kana-meter's variant and its peer loaded at the same time, each
 * in a server of its own (two variants each beside its own bare server carry both pairings' errors).
 */
const DUELS: [ours: Variant, peer: Variant][] = [
  ['enforced', 'rate-limit'],
  ['enforced-redis', 'rate-limit-redis'],
];
const duels: { ours: Variant; peer: Variant; servers: [Server, Server]; pairs: Pair[] }[] = [];
for (const [ours, peer] of DUELS) {
  if (!VARIANTS.includes(ours) || !VARIANTS.includes(peer)) continue;
  duels.push({ ours, peer, servers: [await startServer(ours), await startServer(peer)], pairs: [] });
}

console.log(`kana-meter benchmark: ${cpus().length} x ${cpus()[0]?.model}, Node ${process.version}`);
console.log(
  `${ROUNDS} interleaved rounds of ${SECONDS} s per variant, each at the same time as bare Express, ${CONNECTIONS} connections each, ${USERS.length} users${RATE === undefined ? '' : `, at ${RATE} requests/s each`}`,
);
if (redis) {
  const version = String(await redis.command('INFO', 'server')).match(/redis_version:(\S+)/)?.[1];
  console.log(`Redis ${version} at ${redis.url}${redis.ownProcess ? ' (started by the bench)' : ' (REDIS_URL)'}`);
}
console.log(
  pinned
    ? `autocannon, Kana${redis?.ownProcess ? ' and Redis' : ''} pinned to CPU 0, the servers to CPU 1 (two at a time)\n`
    : 'not pinned to CPUs\n',
);

const duelServers = duels.flatMap((duel) => duel.servers);
for (const { port } of [...servers.values(), ...partners.values(), ...duelServers]) await load(port, 2);
const pairs = new Map<Variant, Pair[]>(measured.map((variant) => [variant, []]));
for (let round = 0; round < ROUNDS; round++) {
  // Rotate the order each round so no variant always runs first (or on a warmer machine).
  const order = measured.map((_, i) => measured[(i + round) % measured.length] as Variant);
  for (const variant of order) {
    const [server, partner] = [servers.get(variant) as Server, partners.get(variant) as Server];
    const pair = await measurePair(server, partner, KEYED_VARIANTS.includes(variant), round % 2 === 0);
    pairs.get(variant)?.push(pair);
    process.stdout.write(
      `round ${round + 1} ${variant.padEnd(16)} ${Math.round(pair.run.requestsPerSecond)} req/s, bare beside it ${Math.round(pair.partner.requestsPerSecond)}\n`,
    );
  }
  for (const duel of duels) {
    const [ours, peer] = duel.servers;
    const pair = await measurePair(ours, peer, false, round % 2 === 0);
    duel.pairs.push(pair);
    process.stdout.write(
      `round ${round + 1} ${duel.ours} ${Math.round(pair.run.requestsPerSecond)} req/s, ${duel.peer} beside it ${Math.round(pair.partner.requestsPerSecond)}\n`,
    );
  }
}

/** Each pair's ratio of the variant to the bare server loaded with it, as "median (min–max)". */
const paired = (list: Pair[], value: (run: Run) => number) => {
  const ratios = list.map((pair) => value(pair.run) / value(pair.partner));
  return `${median(ratios).toFixed(3)}x (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`;
};
const busy = [...pairs.values()].flat().map((pair) => pair.busy);
console.log(
  `\nCPU 1 busy ${(100 * median(busy)).toFixed(0)}% of each run (median; lowest ${(100 * Math.min(...busy)).toFixed(0)}%)` +
    (RATE === undefined && median(busy) < 0.9 ? ': the load generator, not the servers, set the pace' : ''),
);
console.log(
  '\n| variant | req/s (median) | vs bare beside it (range) | p50 ms | p99 ms | server CPU µs/req | vs bare beside it (range) | peak RSS vs bare | errors |',
);
console.log('|---|---|---|---|---|---|---|---|---|');
for (const variant of measured) {
  const list = pairs.get(variant) as Pair[];
  const runs = list.map((pair) => pair.run);
  const rps = median(runs.map((run) => run.requestsPerSecond));
  const cpu = median(runs.map((run) => run.cpuMicrosPerRequest));
  const rss = Math.max(...runs.map((run) => run.peakRssMb)) - Math.max(...list.map((pair) => pair.partner.peakRssMb));
  const errors = list.reduce((sum, pair) => sum + pair.run.errors + pair.partner.errors, 0);
  const name = variant === 'bare' ? "bare (a second one: the pairing's own error)" : variant;
  console.log(
    `| ${name} | ${Math.round(rps)} | ${paired(list, (run) => run.requestsPerSecond)} | ${median(runs.map((run) => run.p50))} | ${median(runs.map((run) => run.p99))} | ${cpu.toFixed(1)} | ${paired(list, (run) => run.cpuMicrosPerRequest)} | ${rss >= 0 ? '+' : ''}${rss.toFixed(1)} MB | ${errors} |`,
  );
}

if (duels.length > 0) {
  console.log('\n| head to head, loaded at the same time | req/s vs the peer (range) | CPU/req vs the peer (range) |');
  console.log('|---|---|---|');
  for (const duel of duels) {
    const list = duel.pairs;
    console.log(
      `| ${duel.ours} beside ${duel.peer} | ${paired(list, (run) => run.requestsPerSecond)} | ${paired(list, (run) => run.cpuMicrosPerRequest)} |`,
    );
  }
}

// Every 2xx a metered server sent must have reached Kana, in few calls.
const metered: [string, Variant, Server][] = [
  ...measured.map((variant): [string, Variant, Server] => [variant, variant, servers.get(variant) as Server]),
  ...duels.map((duel): [string, Variant, Server] => [`${duel.ours} (head to head)`, duel.ours, duel.servers[0]]),
].filter(([, variant]) => KANA_VARIANTS.includes(variant));
let metered2xx = 0;
for (const [name, variant, server] of metered) {
  type Flushed = {
    served: number;
    stats: {
      delivered: number;
      failed: number;
      calls: number;
      checks: number;
      denied: number;
      storeCommands: number;
    };
  };
  const { served, stats } = await ask<Flushed>(server.child, 'flush', 'flushed');
  metered2xx += served;
  // What sharing the allowance costs Redis: a count, free of the host's noise.
  const redisCommands = REDIS_VARIANTS.includes(variant)
    ? `, ${stats.storeCommands} store commands (${((1000 * stats.storeCommands) / served).toFixed(1)} per 1,000 responses)`
    : '';
  console.log(
    `\n${name}: ${served} responses 2xx, ${stats.delivered} usage events delivered, ${stats.failed} failed, ${stats.calls} usage calls, ${stats.checks} entitlement checks, ${stats.denied} denied${redisCommands}`,
  );
}
if (metered.length > 0) {
  const usage = await ask<{ total: number; calls: number }>(kana.child, 'usage', 'usage');
  const seconds = (ROUNDS * SECONDS + 2) * metered.length;
  console.log(
    `Kana recorded ${usage.total} units for ${metered2xx} metered 2xx responses (${usage.total === metered2xx ? 'all delivered' : 'MISMATCH'}),`,
  );
  console.log(
    `in ${usage.calls} usage events: ${(usage.calls / USERS.length / seconds).toFixed(2)} per (user, feature) per second of load (flushInterval 1 s; a call carries up to 20).`,
  );
}

// The servers close first (RedisStore gives its leases back), then Redis goes.
await Promise.all(
  [...servers.values(), ...partners.values(), ...duelServers, kana].map(({ child }) => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.send({ type: 'exit' });
    return exited;
  }),
);
await redis?.stop();
