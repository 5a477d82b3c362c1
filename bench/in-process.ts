// The in-process bench: server CPU time per request through Express's own router, no network, every variant in one
// process, interleaved rounds. Steady on a noisy host (it counts this process's CPU time, not wall time), so it finds
// and guards regressions of a fraction of a microsecond that the HTTP bench's noise hides.
// Env: BENCH_INPROCESS_ROUNDS (default 16), BENCH_INPROCESS_REQUESTS per round (default 20000), BENCH_VARIANTS.

import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { type RedisServer, startRedisServer } from '../test/helpers/redis.js';
import { pin, start } from './processes.js';
import {
  ALL_VARIANTS,
  buildVariantApp,
  chosenVariants,
  GLOBAL_SDK_VARIANTS,
  KEYED_VARIANTS,
  REDIS_VARIANTS,
  ROUTE_PATH,
  USERS,
  type Variant,
  type VariantApp,
} from './variant-app.js';

const ROUNDS = Number(process.env.BENCH_INPROCESS_ROUNDS ?? 16);
const REQUESTS = Number(process.env.BENCH_INPROCESS_REQUESTS ?? 20_000);
/** Requests in flight at once, as a busy server has them. */
const CONCURRENCY = 32;

/** A socket that accepts every write at once: the response is serialised as for a client, and sent nowhere. */
class DiscardingSocket extends Writable {
  readonly remoteAddress = '127.0.0.1';
  override _write(_chunk: unknown, _encoding: BufferEncoding, callback: () => void): void {
    callback();
  }
  setTimeout(): this {
    return this;
  }
  setNoDelay(): void {}
}

let keys = 0;

/** One GET through `app`, with Node's own request and response objects; resolves on the response's 'finish'. */
function request(app: VariantApp['app'], user: string, keyed: boolean): Promise<void> {
  return new Promise((resolve) => {
    const socket = new DiscardingSocket() as unknown as Socket;
    const req = new IncomingMessage(socket);
    req.method = 'GET';
    req.url = ROUTE_PATH;
    req.headers = keyed
      ? { host: 'bench', 'x-user': user, 'idempotency-key': `k${++keys}` }
      : { host: 'bench', 'x-user': user };
    req.push(null);
    const res = new ServerResponse(req);
    res.assignSocket(socket);
    res.once('finish', () => {
      res.detachSocket(socket);
      resolve();
    });
    app(req as never, res as never);
  });
}

/** CPU microseconds per request over `count` requests, `CONCURRENCY` at a time. */
async function cpuPerRequest(app: VariantApp['app'], count: number, keyed: boolean): Promise<number> {
  const before = process.cpuUsage();
  for (let sent = 0; sent < count; sent += CONCURRENCY) {
    const wave: Promise<void>[] = [];
    for (let i = 0; i < CONCURRENCY; i++) wave.push(request(app, USERS[(sent + i) % USERS.length] as string, keyed));
    await Promise.all(wave);
    // Back to the event loop, as a server is between reads: Kana's and Redis's answers get in.
    await new Promise((resolve) => setImmediate(resolve));
  }
  const used = process.cpuUsage(before);
  return (used.user + used.system) / count;
}

// One process: a variant that registers a global SDK would change the others; the HTTP bench measures it.
const variants = chosenVariants(
  process.env.BENCH_VARIANTS,
  ALL_VARIANTS.filter((variant) => !GLOBAL_SDK_VARIANTS.includes(variant)),
);
pin(process.pid, 1);
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

console.log(
  `\nIn process: ${ROUNDS} interleaved rounds of ${REQUESTS} requests per variant, ${CONCURRENCY} at a time, no network`,
);
// Warm up: JIT, caches, the first Kana check per user, leases.
for (const [variant, app] of apps) await cpuPerRequest(app.app, 5_000, KEYED_VARIANTS.includes(variant));

const costs = new Map<Variant, number[]>(variants.map((variant) => [variant, []]));
for (let round = 0; round < ROUNDS; round++) {
  const order = variants.map((_, i) => variants[(i + round) % variants.length] as Variant);
  for (const variant of order) {
    const app = (apps.get(variant) as VariantApp).app;
    costs.get(variant)?.push(await cpuPerRequest(app, REQUESTS, KEYED_VARIANTS.includes(variant)));
  }
}

// The fastest round of each variant is the steadiest figure on a shared host: noise only ever adds CPU time.
const fastest = (list: number[]) => Math.min(...list);
const bare = costs.get('bare') as number[];
const half = Math.floor(ROUNDS / 2);
console.log(
  '\n| variant | CPU µs/req (fastest round) | over bare | over bare, first half of the rounds | second half |',
);
console.log('|---|---|---|---|---|');
for (const variant of variants) {
  const list = costs.get(variant) as number[];
  const over = (from: number, to: number) => (fastest(list.slice(from, to)) - fastest(bare.slice(from, to))).toFixed(2);
  console.log(
    `| ${variant} | ${fastest(list).toFixed(2)} | ${variant === 'bare' ? '—' : `+${over(0, ROUNDS)}`} | ${over(0, half)} | ${over(half, ROUNDS)} |`,
  );
}
console.log('(the two halves are two runs in one: they agree when the figure is steady)');

for (const app of apps.values()) await app.close();
kana.child.send({ type: 'exit' });
await redis?.stop();
