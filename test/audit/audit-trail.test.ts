// The audit trail through the HTTP stack against the emulator: one usage line per billed request, delivery outcomes, rotation, failures that never reach a request.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { kanaMeter, logCodes, meter } from '../../src/index.js';
import { basicSeed, meterOptions, sleep } from '../helpers/app.js';
import { root } from '../helpers/child-process.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();
let directory: string;

beforeEach(async () => {
  await env.emulator.setOffline(false);
  env.emulator.reset();
  env.emulator.seed(basicSeed);
  directory = mkdtempSync(join(tmpdir(), 'kana-audit-'));
});

interface Line {
  type: string;
  [field: string]: unknown;
}

function readLines(path: string): Line[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Line);
}

function sumBy(lines: Line[], key: string): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const line of lines) sums[line[key] as string] = (sums[line[key] as string] ?? 0) + (line.delta as number);
  return sums;
}

/** An app billing `reports` per GET /r/:n; every 7th n is answered 500 (not billed). */
function auditedApp(path: string, overrides = {}) {
  const { options, sink } = meterOptions(env.emulator, {
    audit: { path },
    flushInterval: 10,
    retry: { retries: 1, minTimeout: 5, maxTimeout: 10 },
    routes: { 'GET /mapped': 'api-calls' },
    ...overrides,
  });
  const kana = env.trackTest(kanaMeter(options));
  const app = express();
  app.use(kana);
  app.get('/r/:n', meter('reports'), (req, res) => {
    res.status(Number(req.params.n) % 7 === 0 ? 500 : 200).send('ok');
  });
  app.get('/mapped', (_req, res) => res.send('ok'));
  return { kana, app, sink };
}

describe('audit trail', () => {
  it('90 requests over 3 users, some answered 500, Kana down in the middle: usage lines sum to Kana, one per billed request', async () => {
    const path = join(directory, 'usage.audit.jsonl');
    const { kana, app } = auditedApp(path);
    const users = ['u1', 'u2', 'u3'];
    let billed = 0;
    const send = async (n: number) => {
      const response = await request(app)
        .get(`/r/${n}`)
        .set('x-user', users[n % 3] as string)
        .set('x-request-id', `req-${n}`);
      if (response.status === 200) billed++;
    };
    for (let n = 1; n <= 30; n++) await send(n);
    await env.emulator.setOffline(true);
    for (let n = 31; n <= 60; n++) await send(n);
    // Delivery meets the outage: retries run out, the queue waits for Kana.
    while (kana.stats().kanaAvailable) await sleep(10);
    await env.emulator.setOffline(false);
    for (let n = 61; n <= 90; n++) await send(n);
    await kana.flush();

    const lines = readLines(path);
    const usage = lines.filter((line) => line.type === 'usage');
    expect(billed).toBe(90 - 12);
    expect(usage).toHaveLength(billed);
    // One line per billed request, each with its request id; no line for the 500s.
    expect(new Set(usage.map((line) => line.requestId)).size).toBe(billed);
    expect(usage.some((line) => line.requestId === 'req-7')).toBe(false);
    expect(usage[0]).toMatchObject({
      type: 'usage',
      requestId: 'req-1',
      userId: 'u2',
      featureId: 'reports',
      delta: 1,
      method: 'GET',
      route: 'meter("reports")',
      status: 200,
      source: 'http',
      instance: expect.any(String),
    });
    expect(new Date(usage[0]?.at as string).toISOString()).toBe(usage[0]?.at);
    const audited = sumBy(usage, 'userId');
    for (const user of users) expect(audited[user]).toBe(env.emulator.usage(user, 'reports'));
    // The delivery lines say which call carried the usage: delivered deltas sum to the same totals.
    const delivered = lines.filter((line) => line.type === 'delivery' && line.outcome === 'delivered');
    expect(sumBy(delivered, 'userId')).toEqual(audited);
    expect(delivered.every((line) => typeof line.batchId === 'string')).toBe(true);
    expect(delivered.reduce((events, line) => events + (line.events as number), 0)).toBe(billed);
  });

  it('names the route map key, the X-Request-Id or a generated id, and record() lines', async () => {
    const path = join(directory, 'usage.audit.jsonl');
    const { kana, app } = auditedApp(path);
    await request(app).get('/mapped').set('x-user', 'u1').expect(200);
    kana.record('u3', 'exports', 4);
    await kana.flush();
    const usage = readLines(path).filter((line) => line.type === 'usage');
    expect(usage).toEqual([
      expect.objectContaining({
        route: 'GET /mapped',
        method: 'GET',
        status: 200,
        userId: 'u1',
        featureId: 'api-calls',
      }),
      expect.objectContaining({ source: 'record', userId: 'u3', featureId: 'exports', delta: 4 }),
    ]);
    expect(usage[0]?.requestId).toMatch(/#r1$/);
    // Never the key.
    expect(readFileSync(path, 'utf8')).not.toContain(env.emulator.apiKey);
  });

  it('rotates by size: only the current file is written, maxFiles rotated files kept, every line whole', async () => {
    const path = join(directory, 'usage.audit.jsonl');
    const { kana } = auditedApp(path, { audit: { path, maxBytes: 2048, maxFiles: 2 } });
    for (let round = 0; round < 30; round++) {
      for (let i = 0; i < 3; i++) kana.record('u1', 'reports');
      await kana.flush();
    }
    expect(existsSync(`${path}.1`)).toBe(true);
    expect(existsSync(`${path}.2`)).toBe(true);
    expect(existsSync(`${path}.3`)).toBe(false);
    for (const file of [path, `${path}.1`, `${path}.2`]) {
      expect(statSync(file).size).toBeLessThanOrEqual(2048);
      expect(readLines(file).length).toBeGreaterThan(0);
    }
    // The newest lines are in the current file.
    const current = readLines(path);
    expect(current.at(-1)?.type).toBe('delivery');
    expect(kana.stats().auditErrors).toBe(0);
  });

  it('an unwritable path: requests and delivery go on, logged once with a stable code, counted in auditErrors', async () => {
    const path = join(directory, 'missing-directory', 'usage.audit.jsonl');
    const { kana, app, sink } = auditedApp(path);
    for (let n = 1; n <= 6; n++) await request(app).get(`/r/${n}`).set('x-user', 'u1').expect(200);
    await kana.flush();
    for (let n = 8; n <= 9; n++) await request(app).get(`/r/${n}`).set('x-user', 'u1').expect(200);
    await kana.flush();
    expect(env.emulator.usage('u1', 'reports')).toBe(8);
    const stats = kana.stats();
    expect(stats.delivered).toBe(8);
    expect(stats.auditErrors).toBeGreaterThanOrEqual(8);
    const logged = sink.withCode(logCodes.auditFailed);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ path, err: { code: 'ENOENT' } });
  });

  it('a full disk (RLIMIT_FSIZE): the process lives on, every event is delivered, lost lines are counted and logged once', async () => {
    const path = join(directory, 'usage.audit.jsonl');
    const fixture = join(root, 'test/fixtures/audit-record.ts');
    // dash's `ulimit -f` counts 512-byte blocks: the trail cannot grow past 2 KiB.
    const child = spawn(
      'sh',
      [
        '-c',
        'ulimit -f 4 && exec "$0" "$@"',
        process.execPath,
        '--import',
        'tsx',
        fixture,
        env.emulator.url,
        env.emulator.apiKey,
        path,
        '60',
      ],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    const stats = JSON.parse(stdout.trim().split('\n').at(-1) as string);
    expect(stats).toMatchObject({ captured: 60, delivered: 60, failed: 0 });
    expect(stats.auditErrors).toBeGreaterThan(0);
    const failures = stderr
      .split('\n')
      .filter((line) => line.includes(logCodes.auditFailed))
      .map((line) => JSON.parse(line));
    expect(failures).toHaveLength(1);
    expect(statSync(path).size).toBeLessThanOrEqual(2048);
    expect(['u1', 'u2', 'u3'].map((user) => env.emulator.usage(user, 'reports'))).toEqual([20, 20, 20]);
    // What reached the disk is whole lines, except at most one torn line, alone on its line.
    const text = readFileSync(path, 'utf8')
      .split('\n')
      .filter((line) => line !== '');
    const unreadable = text.filter((line) => {
      try {
        JSON.parse(line);
        return false;
      } catch {
        return true;
      }
    });
    expect(unreadable.length).toBeLessThanOrEqual(1);
  });
});
