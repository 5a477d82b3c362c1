// Runs the example API against Kana: the embedded emulator by default, the real Kana with KANA_API_KEY.
// `--instances 2`: two processes of the API sharing one allowance through Redis (RedisStore).

import { type ChildProcess, fork } from 'node:child_process';
import { createServer, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type KanaMeterStats, kanaMeter } from 'kana-meter';
import { type KanaEmulator, startKanaEmulator } from 'kana-meter/emulator';
import { RedisStore } from 'kana-meter/redis';
import { createClient } from 'redis';
import { createApp } from './app.js';
import { exampleRedis, NO_REDIS } from './redis.js';

const DEMO_USER = 'demo-user';
/** A second user on the same plan, left alone by the demo: the "Try it" curl has searches left. */
const TRY_USER = 'you';
/** The demo user's monthly searches: small, so the demo runs into the limit. */
const SEARCH_ALLOWANCE = 5;
const once = process.argv.includes('--once');
const DEFAULT_PORT = 3000;
/** How many ports after 3000 are tried when it is taken (a frontend dev server, say), before any free port. */
const NEXT_PORTS_TRIED = 20;
/** PORT, when it is set: a port in use is then an error, not a reason to take another. */
const givenPort = parsePort(process.env.PORT);

function parsePort(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!(port <= 65535)) exitWith(`PORT must be a port number (0 for any free one), got ${JSON.stringify(value)}.`);
  return port;
}
const instanceArgument = process.argv.indexOf('--instances');
const instances = instanceArgument === -1 ? 1 : Number(process.argv[instanceArgument + 1]);

async function connectToKana(): Promise<{ apiKey: string; endpoint?: string; emulator?: KanaEmulator }> {
  if (process.env.KANA_API_KEY) {
    console.log(
      `Using Kana at ${process.env.KANA_ENDPOINT ?? 'https://api.usekana.com/graphql'} (KANA_API_KEY is set).`,
    );
    return { apiKey: process.env.KANA_API_KEY, endpoint: process.env.KANA_ENDPOINT };
  }
  const emulator = await startKanaEmulator({
    seed: {
      users: [
        { id: DEMO_USER, name: 'Demo User' },
        { id: TRY_USER, name: 'You' },
      ],
      features: [
        { id: 'api-calls', name: 'API Calls', type: 'CONSUMABLE', unitLabel: 'call', unitLabelPlural: 'calls' },
        { id: 'reports', name: 'Reports', type: 'CONSUMABLE' },
        { id: 'exports', name: 'Exported rows', type: 'CONSUMABLE', unitLabel: 'row', unitLabelPlural: 'rows' },
      ],
      packages: [
        {
          id: 'starter-plan',
          name: 'Starter',
          features: [
            { id: 'api-calls', limit: SEARCH_ALLOWANCE, resetPeriod: 'MONTH' },
            { id: 'reports', limit: 100, resetPeriod: 'MONTH' },
            { id: 'exports', limit: 10_000, resetPeriod: 'MONTH' },
          ],
        },
      ],
      subscriptions: [
        { userId: DEMO_USER, packageId: 'starter-plan' },
        { userId: TRY_USER, packageId: 'starter-plan' },
      ],
    },
  });
  console.log(`No KANA_API_KEY: started the local Kana emulator at ${emulator.url}`);
  console.log(
    `Seeded users "${DEMO_USER}" and "${TRY_USER}" on plan "starter-plan": ${SEARCH_ALLOWANCE} api-calls a month (enforced), reports, exports.`,
  );
  console.log(`Emulator dashboard (usage by user and feature): ${emulator.dashboardUrl}`);
  return { apiKey: emulator.apiKey, endpoint: emulator.url, emulator };
}

async function runDemo(baseUrl: string): Promise<void> {
  const headers = { authorization: `Bearer ${DEMO_USER}`, 'content-type': 'application/json' };
  const send = (method: string, path: string, body?: unknown) =>
    fetch(baseUrl + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const calls: [string, string, unknown?][] = [
    ['POST', '/api/search', { q: 'usage billing' }],
    ['POST', '/api/search', { q: 'express middleware' }],
    ['GET', '/api/reports/q3'],
    ['GET', '/api/reports/missing'],
    ['POST', '/api/export', { rows: 250 }],
  ];
  console.log('\nDemo requests:');
  for (const [method, path, body] of calls) {
    const response = await send(method, path, body);
    console.log(`  ${method.padEnd(4)} ${path.padEnd(22)} -> ${response.status}${remainingOf(response)}`);
  }

  // A background export job: billed with kana.record() when it finishes, not when the 202 is sent.
  const job = (await (await send('POST', '/api/export-jobs', { rows: 1200 })).json()) as { id: string };
  let status = 'running';
  while (status === 'running') {
    await new Promise((resolve) => setTimeout(resolve, 20));
    status = ((await (await send('GET', `/api/export-jobs/${job.id}`)).json()) as { status: string }).status;
  }
  console.log(
    `  POST ${'/api/export-jobs'.padEnd(22)} -> 202, then job ${job.id} ${status}: 1200 rows billed by kana.record()`,
  );

  // Searches are enforced: keep searching until the plan says no.
  console.log(`\nSearching until the allowance of ${SEARCH_ALLOWANCE} searches is used up:`);
  for (let i = 0; i < SEARCH_ALLOWANCE; i++) {
    const response = await send('POST', '/api/search', { q: `query ${i + 1}` });
    console.log(`  POST /api/search          -> ${response.status}${remainingOf(response)}`);
    if (response.status === 429) {
      console.log(`     Retry-After: ${response.headers.get('retry-after')} s`);
      console.log(`     ${JSON.stringify(await response.json(), null, 2).replaceAll('\n', '\n     ')}`);
      break;
    }
    await response.body?.cancel();
  }
}

/** The RateLimit header's remaining units, when the response has one. */
function remainingOf(response: Response): string {
  const remaining = /;r=(\d+)/.exec(response.headers.get('ratelimit') ?? '')?.[1];
  return remaining === undefined ? '' : `   (${remaining} left)`;
}

/** Listens on 127.0.0.1:`port`, or rejects with the error (EADDRINUSE when the port is taken). */
function listenOn(app: RequestListener, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer(app);
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/**
 * PORT, or 3000 and, when something else holds it, the next free port, said in one line. A PORT
 * that is taken ends the example with one line saying how to choose another.
 */
async function listen(app: RequestListener): Promise<Server> {
  if (once) return listenOn(app, 0);
  if (givenPort !== undefined) {
    try {
      return await listenOn(app, givenPort);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
      exitWith(
        `Port ${givenPort} (PORT) is in use: choose another, e.g. PORT=${givenPort + 1} npm run example, or PORT=0 for any free one.`,
      );
    }
  }
  for (let port = DEFAULT_PORT; ; port = port - DEFAULT_PORT < NEXT_PORTS_TRIED ? port + 1 : 0) {
    try {
      const server = await listenOn(app, port);
      const { port: bound } = server.address() as AddressInfo;
      if (bound !== DEFAULT_PORT)
        console.log(`Port ${DEFAULT_PORT} is in use: listening on ${bound} instead (PORT chooses one).`);
      return server;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw error;
    }
  }
}

/** Stops accepting, and resolves once the requests in flight have finished (cut off after 5 s). */
async function closeServer(server: Server): Promise<void> {
  const cutOff = setTimeout(() => server.closeAllConnections(), 5000).unref();
  await new Promise((done) => server.close(done));
  clearTimeout(cutOff);
}

function exitWith(message: string): never {
  console.error(message);
  process.exit(1);
}

async function main(): Promise<void> {
  const kanaConnection = await connectToKana();
  const kana = kanaMeter({
    apiKey: kanaConnection.apiKey,
    endpoint: kanaConnection.endpoint,
    userId: (req) => req.user?.kanaId,
    // Searches are checked against the plan before the handler runs; reports and exports are only billed.
    routes: { 'POST /api/search': { feature: 'api-calls', enforce: true } },
  });
  const server = await listen(createApp(kana));
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  console.log(`Example API listening on ${baseUrl}`);

  await runDemo(baseUrl);
  await kana.flush();
  const { captured, delivered, failed, allowed, denied, checks } = kana.stats();
  console.log(`\nkana-meter: ${captured} usage events captured, ${delivered} delivered, ${failed} failed.`);
  console.log(`Enforcement: ${allowed} allowed, ${denied} refused, ${checks} entitlement check(s) sent to Kana.`);
  if (kanaConnection.emulator) {
    console.log(`Usage recorded by Kana for "${DEMO_USER}":`);
    for (const feature of ['api-calls', 'reports', 'exports']) {
      console.log(`  ${feature.padEnd(10)} ${kanaConnection.emulator.usage(DEMO_USER, feature)}`);
    }
  }

  const shutdown = async () => {
    await closeServer(server);
    await kana.close({ timeoutMs: 5000 });
    await kanaConnection.emulator?.close();
  };
  if (once) {
    await shutdown();
    return;
  }
  // "demo-user" has used up the plan above; with the emulator, "you" has every search left.
  const tryUser = kanaConnection.emulator ? TRY_USER : DEMO_USER;
  console.log(`\nTry it: curl -X POST ${baseUrl}/api/search -H 'authorization: Bearer ${tryUser}'`);
  if (kanaConnection.emulator) console.log(`Then see it billed: ${kanaConnection.emulator.dashboardUrl}`);
  console.log('Press Ctrl-C to stop (usage still waiting is flushed first).');
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void shutdown().then(() => process.exit(0)));
  }
}

/** One instance of several (a child process): the same API, its state shared through Redis. */
async function runInstance(): Promise<void> {
  const redis = createClient({ url: process.env.REDIS_URL });
  await redis.connect();
  const kana = kanaMeter({
    apiKey: process.env.KANA_API_KEY,
    endpoint: process.env.KANA_ENDPOINT,
    userId: (req) => req.user?.kanaId,
    routes: { 'POST /api/search': { feature: 'api-calls', enforce: true } },
    // Kana's answers, the leases on each allowance and idempotency keys, shared by every instance.
    store: new RedisStore({ sendCommand: (...args: string[]) => redis.sendCommand(args) }),
  });
  const server = createApp(kana).listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
    process.send?.({ type: 'ready', port: (server.address() as AddressInfo).port });
  });
  const shutdown = async () => {
    await closeServer(server);
    await kana.close({ timeoutMs: 5000 });
    redis.destroy();
    process.exit(0);
  };
  process.on('message', async (message: { type: string }) => {
    if (message.type === 'flush') {
      await kana.flush();
      process.send?.({ type: 'flushed', stats: kana.stats() });
    } else if (message.type === 'close') {
      await shutdown();
    }
  });
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void shutdown());
}

/** `--instances N`: N processes of the API against one Redis; searches alternate between them. */
async function runInstances(count: number): Promise<void> {
  const redis = await exampleRedis();
  if (!redis) {
    console.error(NO_REDIS);
    process.exit(1);
  }
  const kanaConnection = await connectToKana();
  const children: { child: ChildProcess; url: string }[] = [];
  for (let i = 0; i < count; i++) {
    const child = fork(process.argv[1] as string, ['--instance'], {
      execArgv: process.execArgv,
      env: {
        ...process.env,
        KANA_API_KEY: kanaConnection.apiKey,
        KANA_ENDPOINT: kanaConnection.endpoint ?? '',
        REDIS_URL: redis.url,
        PORT: String(givenPort === undefined || once ? 0 : givenPort + i),
      },
    });
    const ready = await new Promise<{ port: number }>((resolve) => child.once('message', resolve));
    children.push({ child, url: `http://127.0.0.1:${ready.port}` });
  }
  console.log(`${count} instances of the example API, one Redis (${redis.url}):`);
  for (const [i, { url }] of children.entries()) console.log(`  instance ${i + 1}: ${url}`);

  console.log(`\nSearching until the allowance of ${SEARCH_ALLOWANCE} searches is used up, instances taking turns:`);
  const headers = { authorization: `Bearer ${DEMO_USER}`, 'content-type': 'application/json' };
  for (let i = 0; i < SEARCH_ALLOWANCE + count; i++) {
    const instance = i % count;
    const response = await fetch(`${(children[instance] as { url: string }).url}/api/search`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ q: `query ${i + 1}` }),
    });
    await response.body?.cancel();
    console.log(`  POST /api/search on instance ${instance + 1} -> ${response.status}`);
  }
  const ask = (child: ChildProcess) =>
    new Promise<KanaMeterStats>((resolve) => {
      child.once('message', (message: { stats: KanaMeterStats }) => resolve(message.stats));
      child.send({ type: 'flush' });
    });
  const stats = await Promise.all(children.map(({ child }) => ask(child)));
  const sum = (field: 'allowed' | 'denied' | 'checks' | 'sharedAnswers') =>
    stats.reduce((total, one) => total + one[field], 0);
  console.log(
    `\nTogether: ${sum('allowed')} allowed, ${sum('denied')} refused; ${sum('checks')} entitlement check(s) sent to Kana, ${sum('sharedAnswers')} answer(s) taken from Redis.`,
  );
  if (kanaConnection.emulator) {
    console.log(`Kana recorded ${kanaConnection.emulator.usage(DEMO_USER, 'api-calls')} searches for "${DEMO_USER}".`);
  }

  const shutdown = async () => {
    await Promise.all(
      children.map(({ child }) => {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.send({ type: 'close' });
        return exited;
      }),
    );
    await kanaConnection.emulator?.close();
    redis.stop();
  };
  if (once) {
    await shutdown();
    return;
  }
  const tryUser = kanaConnection.emulator ? TRY_USER : DEMO_USER;
  console.log(`\nTry it: curl -X POST ${children[0]?.url}/api/search -H 'authorization: Bearer ${tryUser}'`);
  if (kanaConnection.emulator) console.log(`Then see it billed: ${kanaConnection.emulator.dashboardUrl}`);
  console.log('Press Ctrl-C to stop.');
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void shutdown().then(() => process.exit(0)));
  }
}

const run = process.argv.includes('--instance') ? runInstance : instances >= 2 ? () => runInstances(instances) : main;
run().catch((error) => {
  console.error(error);
  process.exit(1);
});
