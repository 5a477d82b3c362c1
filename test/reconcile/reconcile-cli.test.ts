// `kana-meter reconcile` in a child process, against a trail written through the HTTP stack and the emulator's ledger.

import { appendFileSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { kanaMeter, meter } from '../../src/index.js';
import { basicSeed, meterOptions } from '../helpers/app.js';
import { runTypeScript } from '../helpers/child-process.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();
let directory: string;
let path: string;

beforeEach(async () => {
  await env.emulator.setOffline(false);
  env.emulator.reset();
  env.emulator.seed(basicSeed);
  directory = mkdtempSync(join(tmpdir(), 'kana-reconcile-'));
  path = join(directory, 'usage.audit.jsonl');
});

/** 30 requests over u1..u3 (every 7th answered 500: u1 9 billed, u2 8, u3 9), a record(), through a trail that rotates at 2 KiB. */
async function writeTrail(): Promise<void> {
  const { options } = meterOptions(env.emulator, { audit: { path, maxBytes: 2048, maxFiles: 20 }, flushInterval: 10 });
  const kana = env.trackTest(kanaMeter(options));
  const app = express();
  app.use(kana);
  app.get('/r/:n', meter('reports'), (req, res) => {
    res.status(Number(req.params.n) % 7 === 0 ? 500 : 200).send('ok');
  });
  for (let n = 1; n <= 30; n++) {
    await request(app)
      .get(`/r/${n}`)
      .set('x-user', `u${(n % 3) + 1}`);
    if (n % 5 === 0) await kana.flush();
  }
  kana.record('u1', 'exports', 3);
  await kana.close();
}

function reconcile(args: string[], kanaEnv: Record<string, string | undefined> = {}) {
  return runTypeScript('src/reconcile/cli.ts', {
    args: ['reconcile', ...args],
    env: { KANA_API_KEY: env.emulator.apiKey, KANA_ENDPOINT: env.emulator.url, ...kanaEnv },
  }).exited;
}

interface Row {
  userId: string;
  featureId: string;
  audited: number;
  kana: number;
  drift: number;
  inFlight: number;
}

// Each run starts Node with tsx: a few seconds apiece on a busy host.
describe('kana-meter reconcile', { timeout: 90_000 }, () => {
  it('exits 0 when the trail (rotated files included) agrees with Kana; 1 with a drift of 1 after Kana loses a unit', async () => {
    await writeTrail();
    expect(readdirSync(directory).length).toBeGreaterThan(2);

    const agreed = await reconcile(['--audit', path, '--json']);
    expect(agreed.code).toBe(0);
    const { rows } = JSON.parse(agreed.stdout) as { rows: Row[] };
    expect(rows).toEqual([
      expect.objectContaining({ userId: 'u1', featureId: 'exports', audited: 3, kana: 3, drift: 0 }),
      expect.objectContaining({ userId: 'u1', featureId: 'reports', audited: 9, kana: 9, drift: 0 }),
      expect.objectContaining({ userId: 'u2', featureId: 'reports', audited: 8, kana: 8, drift: 0 }),
      expect.objectContaining({ userId: 'u3', featureId: 'reports', audited: 9, kana: 9, drift: 0 }),
    ]);

    env.emulator.adjustUsage('u2', 'reports', -1);
    const drifted = await reconcile(['--audit', directory, '--json']);
    expect(drifted.code).toBe(1);
    const after = (JSON.parse(drifted.stdout) as { rows: Row[] }).rows;
    expect(after.find((row) => row.userId === 'u2')).toMatchObject({ audited: 8, kana: 7, drift: 1 });
    expect(after.filter((row) => row.drift !== 0)).toHaveLength(1);

    // The table, and --tolerance.
    const text = await reconcile([directory]);
    expect(text.code).toBe(1);
    expect(text.stdout).toMatch(/u2\s+reports\s+8\s+7\s+\+1\s+0/);
    expect(text.stdout).toContain('1 of 4 row(s) drift.');
    expect((await reconcile([directory, '--tolerance', '1'])).code).toBe(0);
  });

  it('a torn last line (a crash mid-write) is skipped and reported, never counted', async () => {
    await writeTrail();
    appendFileSync(path, '{"type":"usage","at":"2026-01-01T00:00:00.000Z","userId":"u1","featureId":"rep');
    const json = await reconcile([path, '--json']);
    expect(json.code).toBe(0);
    const result = JSON.parse(json.stdout) as { rows: Row[]; skipped: { file: string; line: number }[] };
    expect(result.skipped).toEqual([{ file: path, line: expect.any(Number) }]);
    expect(result.rows.find((row) => row.userId === 'u1' && row.featureId === 'reports')).toMatchObject({
      audited: 9,
      drift: 0,
    });
    const text = await reconcile([path]);
    expect(text.stdout).toMatch(/skipped .*usage\.audit\.jsonl:\d+: not a whole audit line/);
  });

  it('usage captured and not delivered yet is shown in flight, not as drift', async () => {
    await writeTrail();
    // Captured, then the process stopped with it in the spool: a usage line and a spooled outcome, no delivery.
    const at = new Date().toISOString();
    appendFileSync(
      path,
      `${JSON.stringify({ type: 'usage', at, requestId: 'r-x', userId: 'u3', featureId: 'reports', delta: 2 })}\n${JSON.stringify({ type: 'delivery', at, outcome: 'spooled', userId: 'u3', featureId: 'reports', delta: 2, events: 1 })}\n`,
    );
    const result = await reconcile([path, '--json']);
    expect(result.code).toBe(0);
    const u3 = (JSON.parse(result.stdout) as { rows: Row[] }).rows.find((row) => row.userId === 'u3');
    expect(u3).toMatchObject({ audited: 9, kana: 9, drift: 0, inFlight: 2 });
    expect((await reconcile([path])).stdout).toContain('2 unit(s) still in flight');
  });

  it('exits 2 with one clear line: no key, no trail, Kana unreachable', async () => {
    await writeTrail();
    const noKey = await reconcile([path], { KANA_API_KEY: undefined });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr.trim().split('\n')).toEqual([expect.stringContaining('KANA_API_KEY is not set')]);

    const noTrail = await reconcile([join(directory, 'nothing.jsonl')]);
    expect(noTrail.code).toBe(2);
    expect(noTrail.stderr).toMatch(/cannot read .*nothing\.jsonl: ENOENT/);

    await env.emulator.setOffline(true);
    const down = await reconcile([path]);
    expect(down.code).toBe(2);
    expect(down.stderr.trim().split('\n')).toEqual([expect.stringMatching(/could not ask Kana \(KANA_UNREACHABLE\)/)]);
    expect(down.stderr).not.toContain(env.emulator.apiKey);

    const help = await reconcile(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--tolerance');
  });
});
