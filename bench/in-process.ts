// The in-process bench: CPU time per request through Express's own router, no network, every variant in one process.
// Many short blocks of requests (8 by default, a fraction of a millisecond) in interleaved rounds, each round running
// every variant once in a shuffled order: the request path's cost is a low quantile of the blocks no GC interrupted
// (what a block costs when the shared host left it alone), and GC is charged by the bytes each request allocates.
// See docs/performance.md. Env: BENCH_INPROCESS_ROUNDS (default 12000), BENCH_INPROCESS_REQUESTS per block
// (default 8), BENCH_INPROCESS_CONCURRENCY (default 8), BENCH_INPROCESS_QUANTILE (default 0.05),
// BENCH_VARIANTS (default bare, noop, metered, enforced, rate-limit, floor-metered, floor-enforced),
// BENCH_INPROCESS_CSV (a file for every block), BENCH_INPROCESS_BARE (default 50: the figures are µs over bare where
// bare costs this many µs), BENCH_INPROCESS_BUDGET (e.g. `metered=2,enforced=4`: µs over bare, at that speed, each may
// cost; or over another variant of the run, e.g. `metered=floor-metered+2,enforced=rate-limit`; checked by --check),
// BENCH_PROFILE=<variant> (profile that variant alone instead: BENCH_PROFILE_REQUESTS of them, default 100000,
// to BENCH_PROFILE_FILE, default <tmpdir>/kana-meter-<variant>.cpuprofile).
// `--check`: exit 1 when the run was not steady (its two halves differ by more than 0.5 µs) or a budget is exceeded.

import { writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type RedisServer, startRedisServer } from '../test/helpers/redis.js';
import { type Block, type Figures, figures, gcPerByte } from './in-process-figures.js';
import { profile, reportProfile } from './in-process-profile.js';
import { sendRequests } from './in-process-request.js';
import { pin, start } from './processes.js';
import {
  ALL_VARIANTS,
  buildVariantApp,
  chosenVariants,
  GLOBAL_SDK_VARIANTS,
  KEYED_VARIANTS,
  REDIS_VARIANTS,
  type Variant,
  type VariantApp,
} from './variant-app.js';

const ROUNDS = Number(process.env.BENCH_INPROCESS_ROUNDS ?? 12_000);
const REQUESTS = Number(process.env.BENCH_INPROCESS_REQUESTS ?? 8);
/** The quantile of the blocks taken as the request path's cost (BENCH_INPROCESS_QUANTILE): see in-process-figures.ts. */
const AT = Number(process.env.BENCH_INPROCESS_QUANTILE ?? 0.05);
/** Two runs (here: the two halves of one) must agree this closely, in µs per request, to call the figure steady. */
const STEADY_MICROS = 0.5;
/**
 * The host's speed changes from run to run (bare Express took 55.6 and 60.3 µs in two runs back to back) and every
 * overhead with it, in proportion: the steady figure is the overhead at one speed, where bare costs this many µs
 * (BENCH_INPROCESS_BARE; 50 is this host's bare Express 5 at a quiet time, request path and GC).
 */
const REFERENCE_BARE = Number(process.env.BENCH_INPROCESS_BARE ?? 50);
const CHECK = process.argv.includes('--check');
const PROFILED = process.env.BENCH_PROFILE as Variant | undefined;

// One process: a variant that registers a global SDK would change the others; the HTTP bench measures it.
const IN_PROCESS = ALL_VARIANTS.filter((variant) => !GLOBAL_SDK_VARIANTS.includes(variant));
/** What runs by default: bare, the floor of any middleware, the variants the overhead targets name, and their floors. */
const DEFAULT_VARIANTS: readonly Variant[] = [
  'bare',
  'noop',
  'metered',
  'enforced',
  'rate-limit',
  'floor-metered',
  'floor-enforced',
];
const variants = PROFILED
  ? chosenVariants(PROFILED, IN_PROCESS).filter((variant) => variant === PROFILED)
  : process.env.BENCH_VARIANTS
    ? chosenVariants(process.env.BENCH_VARIANTS, IN_PROCESS)
    : [...DEFAULT_VARIANTS];

/** V8's gc(), exposed without a command-line flag: a full collection every 100 rounds, outside the blocks. */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** GC pauses as they happen (start and duration in ms, on performance.now()'s clock), to set apart from each block. */
const pauses: { start: number; duration: number }[] = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) pauses.push({ start: entry.startTime, duration: entry.duration });
}).observe({ entryTypes: ['gc'] });

/**
 * CPU µs this process has used, every thread (getrusage: exact to the µs; /proc's per-thread figure moves only at
 * the scheduler's ticks, and Node 20 has no per-thread reading).
 */
function cpuMicros(): number {
  const used = process.cpuUsage();
  return used.user + used.system;
}

/** One block of `count` requests: its CPU µs and heap bytes per request; its span, to find GC pauses in it later. */
async function measureBlock(app: VariantApp, variant: Variant, count: number) {
  const heap = getHeapStatistics().used_heap_size;
  const start = performance.now();
  const before = cpuMicros();
  await sendRequests(app.app, count, KEYED_VARIANTS.includes(variant));
  const perRequest = (cpuMicros() - before) / count;
  const end = performance.now();
  const bytes = (getHeapStatistics().used_heap_size - heap) / count;
  return { cpuMicros: perRequest, bytes, count, start, end };
}

/** The GC pause µs per request within each measured block. */
function withPauses(measured: Awaited<ReturnType<typeof measureBlock>>): Block {
  let paused = 0;
  for (const pause of pauses) if (pause.start >= measured.start && pause.start < measured.end) paused += pause.duration;
  return { cpuMicros: measured.cpuMicros, gcMicros: (paused * 1000) / measured.count, bytes: measured.bytes };
}

/** A small seeded generator (mulberry32): the same shuffles on every run. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// The whole process, every thread (GC helpers included), on CPU 1; Kana and Redis on CPU 0.
const pinned = pin(process.pid, 1);
const kana = await start('./kana-server.ts', []);
pin(kana.child.pid, 0);
const { url, apiKey } = kana.ready as { url: string; apiKey: string };
let redis: RedisServer | undefined;
if (variants.some((variant) => REDIS_VARIANTS.includes(variant))) {
  redis = await startRedisServer();
  if (redis.pid !== undefined) pin(redis.pid, 0);
}
const apps = new Map<Variant, VariantApp>();
for (const variant of variants) {
  apps.set(variant, await buildVariantApp(variant, { endpoint: url, apiKey, redisUrl: redis?.url }));
}
const app = (variant: Variant) => apps.get(variant) as VariantApp;

// Warm up: JIT, caches, the first Kana check per user, leases; in blocks, as measured.
for (let block = 0; block < 10; block++) {
  for (const variant of variants) await measureBlock(app(variant), variant, 2_000);
}

let failed = false;
if (PROFILED) {
  const requests = Number(process.env.BENCH_PROFILE_REQUESTS ?? 100_000);
  const file = process.env.BENCH_PROFILE_FILE ?? join(tmpdir(), `kana-meter-${PROFILED}.cpuprofile`);
  console.log(`\nProfiling ${PROFILED}: ${requests} requests in process`);
  const keyed = KEYED_VARIANTS.includes(PROFILED);
  reportProfile(await profile(() => sendRequests(app(PROFILED).app, requests, keyed)), file);
} else {
  failed = await measure();
}

/** The interleaved rounds, their table and verdict; true when `--check` fails. */
async function measure(): Promise<boolean> {
  const load = loadavg()[0] as number;
  const began = Date.now();
  console.log(
    `\nIn process: ${ROUNDS} interleaved rounds of ${REQUESTS} requests per variant, no network` +
      `${pinned ? ', pinned to CPU 1' : ''}; load average ${load.toFixed(1)} on ${cpus().length} CPUs`,
  );
  const measured = new Map<Variant, Awaited<ReturnType<typeof measureBlock>>[]>(
    variants.map((variant) => [variant, []]),
  );
  const shuffle = random(18);
  for (let round = 0; round < ROUNDS; round++) {
    const order = [...variants];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(shuffle() * (i + 1));
      [order[i], order[j]] = [order[j] as Variant, order[i] as Variant];
    }
    if (round % 100 === 0) gc();
    for (const variant of order) measured.get(variant)?.push(await measureBlock(app(variant), variant, REQUESTS));
  }
  // The last GC entries arrive on a later turn of the event loop.
  await new Promise((resolve) => setTimeout(resolve, 50));
  const costs = new Map<Variant, Block[]>([...measured].map(([variant, list]) => [variant, list.map(withPauses)]));
  if (process.env.BENCH_INPROCESS_CSV) {
    const lines = ['round,variant,cpu_us_per_request,gc_us_per_request,bytes_per_request'];
    for (const [variant, list] of costs) {
      for (const [round, cost] of list.entries())
        lines.push(`${round},${variant},${cost.cpuMicros},${cost.gcMicros},${cost.bytes}`);
    }
    writeFileSync(process.env.BENCH_INPROCESS_CSV, `${lines.join('\n')}\n`);
  }

  const bare = costs.get('bare') as Block[];
  const half = Math.floor(ROUNDS / 2);
  const whole = new Map<Variant, Figures>();
  const halves = new Map<Variant, [Figures, Figures]>();
  const rate = (from: number, to: number) => gcPerByte([...costs.values()].map((list) => list.slice(from, to)));
  const [perByte, firstPerByte, secondPerByte] = [rate(0, ROUNDS), rate(0, half), rate(half, ROUNDS)];
  for (const variant of variants) {
    const list = costs.get(variant) as Block[];
    whole.set(variant, figures(list, bare, AT, perByte));
    halves.set(variant, [
      figures(list.slice(0, half), bare.slice(0, half), AT, firstPerByte),
      figures(list.slice(half), bare.slice(half), AT, secondPerByte),
    ]);
  }
  const µs = (value: number) => `${value >= 0 ? '+' : '−'}${Math.abs(value).toFixed(2)}`;
  const bareFigures = whole.get('bare') as Figures;
  const [bareFirst, bareSecond] = halves.get('bare') as [Figures, Figures];
  /** The overhead at the reference speed: over bare, as a share of bare in the same rounds, times REFERENCE_BARE. */
  const steady = (f: Figures, bareOfIt: Figures) => (f.overMicros / bareOfIt.micros) * REFERENCE_BARE;
  console.log(
    `(${((Date.now() - began) / 1000).toFixed(0)} s; load average now ${loadavg()[0]?.toFixed(1)}; ` +
      `${pauses.length} GC pauses, ${(perByte * 1e6).toFixed(1)} µs per MB allocated; bare's request path ` +
      `${bareFigures.pathMicros.toFixed(2)} µs, halves ${(halves.get('bare') as Figures[]).map((half) => half.pathMicros.toFixed(2)).join(' and ')}: the host's speed)`,
  );
  console.log(
    '\n| variant | CPU µs/req (of which GC) | bytes/req | over bare, µs this run (quartiles of same-round differences) ' +
      `| ratio | over bare, µs where bare is ${REFERENCE_BARE} | first half | second half |`,
  );
  console.log('|---|---|---|---|---|---|---|---|');
  const unsteady: string[] = [];
  for (const variant of variants) {
    const f = whole.get(variant) as Figures;
    const [first, second] = halves.get(variant) as [Figures, Figures];
    const cost = `${f.micros.toFixed(2)} (${f.gcMicros.toFixed(2)}) | ${f.bytes.toFixed(0)}`;
    if (variant === 'bare') {
      console.log(`| bare | ${cost} | — | 1 | — | — | — |`);
      continue;
    }
    const [firstSteady, secondSteady] = [steady(first, bareFirst), steady(second, bareSecond)];
    const apart = Math.abs(firstSteady - secondSteady);
    if (apart > STEADY_MICROS) unsteady.push(`${variant} (${apart.toFixed(2)} µs apart)`);
    console.log(
      `| ${variant} | ${cost} | ${µs(f.overMicros)} (${µs(f.overLow)} to ${µs(f.overHigh)}) ` +
        `| ${(f.micros / bareFigures.micros).toFixed(3)}× | **${µs(steady(f, bareFigures))}** ` +
        `| ${µs(firstSteady)} | ${µs(secondSteady)} |`,
    );
  }
  console.log(
    unsteady.length === 0
      ? `\nSteady: the two halves of the run (two runs in one) agree within ${STEADY_MICROS} µs for every variant, where bare is ${REFERENCE_BARE} µs.`
      : `\nNOT steady: the two halves differ by more than ${STEADY_MICROS} µs for ${unsteady.join(', ')}; ` +
          'the host was too busy for these figures: run again, or with more BENCH_INPROCESS_ROUNDS.',
  );
  const over = overBudget(new Map([...whole].map(([variant, f]) => [variant, steady(f, bareFigures)])));
  for (const line of over) console.log(`Over budget: ${line}`);
  return CHECK && (unsteady.length > 0 || over.length > 0);
}

/**
 * The variants over their BENCH_INPROCESS_BUDGET, in µs at the reference speed: over bare (`metered=2`), or over
 * another variant of the same run (`metered=floor-metered+2`; `enforced=rate-limit` to be at most what it costs).
 */
function overBudget(overheads: Map<Variant, number>): string[] {
  const over: string[] = [];
  for (const entry of (process.env.BENCH_INPROCESS_BUDGET ?? '').split(',').filter(Boolean)) {
    const [variant, budget = ''] = entry.split('=') as [Variant, string?];
    const [, base, plus] = /^(?:([a-z-]+)\+?)?(\d+(?:\.\d+)?)?$/.exec(budget) ?? [];
    if (base === undefined && plus === undefined) {
      throw new Error(`BENCH_INPROCESS_BUDGET: ${entry} is not <variant>=<µs> or <variant>=<other variant>[+<µs>]`);
    }
    const measured = overheads.get(variant);
    const baseline = base === undefined ? 0 : overheads.get(base as Variant);
    if (measured === undefined) throw new Error(`BENCH_INPROCESS_BUDGET: ${variant} was not measured`);
    if (baseline === undefined) throw new Error(`BENCH_INPROCESS_BUDGET: ${base} was not measured`);
    const allowed = baseline + Number(plus ?? 0);
    if (measured > allowed) {
      over.push(
        `${variant} costs +${measured.toFixed(2)} µs over bare (where bare is ${REFERENCE_BARE}), ` +
          `budget ${budget}: +${allowed.toFixed(2)}`,
      );
    }
  }
  return over;
}

for (const each of apps.values()) await each.close();
kana.child.send({ type: 'exit' });
await redis?.stop();
if (failed) process.exitCode = 1;
