// Memory with Kana down is O(distinct keys), bounded by maxPendingKeys: a smaller run of bench/outage-memory.ts.

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../../bench/outage-memory.ts', import.meta.url));

async function measure(...args: string[]) {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script, ...args], {
    timeout: 120_000,
    env: { ...process.env, BENCH_SETTLE_MS: '0' },
  });
  return JSON.parse(stdout);
}

describe('memory while Kana is down (20,000 requests; the 200,000-request runs are in docs/delivery.md)', () => {
  it('many requests from few users: one entry per key, not per request', async () => {
    const result = await measure('20000', '10', '50000');
    expect(result).toMatchObject({ captured: 22_000, pending: 22_000, pendingKeys: 11, dropped: 0 });
    expect(result.heapUsedGrowthMb).toBeLessThan(20);
  }, 120_000);

  it('more distinct users than maxPendingKeys, no spool: the bound holds and the rest is dropped, counted', async () => {
    const result = await measure('20000', '20000', '5000');
    expect(result).toMatchObject({ captured: 22_000, pendingKeys: 5000, spilled: 0 });
    expect(result.pending + result.dropped).toBe(result.captured);
    expect(result.dropped).toBeGreaterThan(15_000);
    expect(result.heapUsedGrowthMb).toBeLessThan(20);
  }, 120_000);

  it('more distinct users than maxPendingKeys, with a spool: the rest is spilled, nothing dropped', async () => {
    const result = await measure('20000', '20000', '5000', 'spool');
    expect(result).toMatchObject({ captured: 22_000, pendingKeys: 5000, dropped: 0 });
    expect(result.pending + result.spilled).toBe(result.captured);
    expect(result.heapUsedGrowthMb).toBeLessThan(20);
  }, 120_000);
});

describe('starting on a large spill file (bench/spool-replay-memory.ts; the 540 MB runs are in docs/performance.md)', () => {
  const replay = fileURLToPath(new URL('../../bench/spool-replay-memory.ts', import.meta.url));

  it('a 70 MB spill file, past the compaction threshold: memory bounded by maxPendingKeys, not by the file', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', replay, '70', '200000', '100'],
      { timeout: 120_000 },
    );
    const result = JSON.parse(stdout);
    expect(result.fileMb).toBeGreaterThan(64);
    expect(result.pendingKeys).toBeLessThanOrEqual(100);
    // 0.1 read the file whole: a 70 MB string, then its lines (hundreds of MB of heap).
    expect(result.heapUsedGrowthMb).toBeLessThan(20);
  }, 120_000);
});
