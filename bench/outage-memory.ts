// Memory while Kana is down: N metered requests to an Express server in its own process, its memory measured after GC.
// Usage: node --import tsx bench/outage-memory.ts [requests] [distinctUsers] [maxPendingKeys] [spool]
// Prints one JSON line per scenario. With no arguments: the full-size scenarios (the README's numbers).
// BENCH_NO_KANA=1 runs the same server without kana-meter, for a baseline.

import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

interface Scenario {
  requests: number;
  distinctUsers: number;
  maxPendingKeys: number;
  spool: boolean;
}

interface Memory {
  heapUsed: number;
  heapTotal: number;
  rss: number;
  /** RSS right after the load, before V8 returned its free heap. */
  rssAtOnce: number;
}

const server = fileURLToPath(new URL('./outage-memory-server.ts', import.meta.url));
const mb = (bytes: number) => Number((bytes / 2 ** 20).toFixed(2));

async function measure({ requests, distinctUsers, maxPendingKeys, spool }: Scenario) {
  const child = fork(server, [String(maxPendingKeys), spool ? 'spool' : ''], {
    execArgv: ['--expose-gc', '--import', 'tsx'],
  });
  const ask = <T>(type: string) =>
    new Promise<T>((resolve) => {
      child.once('message', (message) => resolve(message as T));
      child.send({ type });
    });
  const { port } = await new Promise<{ port: number }>((resolve) => child.once('message', resolve as never));
  const url = `http://127.0.0.1:${port}`;
  // Warm up the server before the baseline.
  await autocannon({ url: `${url}/r`, amount: 2000, connections: 16, headers: { 'x-user': 'warm-up' } });
  const before = await ask<Memory>('memory');

  let sent = 0;
  await autocannon({
    url,
    amount: requests,
    connections: 16,
    // Each request is for the next user: user-0, user-1, ... wrapping at distinctUsers.
    requests: [
      {
        setupRequest: (request) => {
          const user = sent++ % distinctUsers;
          return { ...request, method: 'GET', path: '/r', headers: { 'x-user': `user-${user}` } };
        },
      },
    ],
  });
  const after = await ask<Memory>('memory');
  const stats = await ask<Record<string, number>>('stats');
  child.kill();
  return {
    requests,
    distinctUsers,
    maxPendingKeys,
    spool,
    heapUsedGrowthMb: mb(after.heapUsed - before.heapUsed),
    heapTotalGrowthMb: mb(after.heapTotal - before.heapTotal),
    rssGrowthMb: mb(after.rss - before.rss),
    rssGrowthRightAfterLoadMb: mb(after.rssAtOnce - before.rss),
    captured: stats.captured,
    pendingKeys: stats.pendingKeys,
    pending: stats.pending,
    dropped: stats.dropped,
    spilled: stats.spilled,
  };
}

const [requests, distinctUsers, maxPendingKeys, spool] = process.argv.slice(2);
const scenarios: Scenario[] = requests
  ? [
      {
        requests: Number(requests),
        distinctUsers: Number(distinctUsers ?? 1000),
        maxPendingKeys: Number(maxPendingKeys ?? 50_000),
        spool: spool === 'spool',
      },
    ]
  : [
      { requests: 200_000, distinctUsers: 1_000, maxPendingKeys: 50_000, spool: false },
      { requests: 200_000, distinctUsers: 200_000, maxPendingKeys: 50_000, spool: false },
      { requests: 200_000, distinctUsers: 200_000, maxPendingKeys: 50_000, spool: true },
    ];
for (const scenario of scenarios) console.log(JSON.stringify(await measure(scenario)));
