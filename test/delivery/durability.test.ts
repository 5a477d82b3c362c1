// Usage is not lost: Kana outages under load, shutdown, and the spool across real process restarts.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { kanaMeter, logCodes } from '../../src/index.js';
import { basicSeed, expressVersions, meteredApp, meterOptions, sleep } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const spoolApp = fileURLToPath(new URL('../fixtures/spool-app.ts', import.meta.url));
// Node itself runs the app (tsx as a loader, not a wrapper process), so signals reach it directly.
const node = (...args: string[]) => [process.execPath, ['--import', 'tsx', spoolApp, ...args]] as const;
const users = ['u1', 'u2', 'u3', '124'];

let directory: string;

const env = useEmulator();

beforeEach(async () => {
  await env.emulator.setOffline(false);
  env.emulator.reset();
  env.emulator.seed(basicSeed);
  directory = mkdtempSync(join(tmpdir(), 'kana-durability-'));
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

function totalUsage(): number {
  return users.reduce((sum, user) => sum + env.emulator.usage(user, 'reports'), 0);
}

describe('a Kana outage in the middle of the load', () => {
  it('delivers exactly N once Kana is back, with one warning and one info line', async () => {
    const { options, sink } = meterOptions(env.emulator, {
      routes: { 'GET /r': 'reports' },
      flushInterval: 50,
      retry: { retries: 2, minTimeout: 20, maxTimeout: 300 },
    });
    const kana = kanaMeter(options);
    env.track(kana);
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    const hit = (i: number) =>
      request(app)
        .get('/r')
        .set('x-user', users[i % users.length] as string)
        .expect(200);

    let sent = 0;
    for (; sent < 100; sent++) await hit(sent);
    await sleep(120); // some calls are in flight or delivered
    await env.emulator.setOffline(true);
    for (; sent < 300; sent++) await hit(sent);
    await sleep(1500);
    const during = kana.stats();
    await env.emulator.setOffline(false);
    for (; sent < 400; sent++) await hit(sent);
    await kana.flush();

    expect(during.kanaAvailable).toBe(false);
    expect(totalUsage()).toBe(400);
    expect(kana.stats()).toMatchObject({ captured: 400, delivered: 400, failed: 0, pending: 0, kanaAvailable: true });
    expect(sink.withCode(logCodes.kanaUnavailable)).toHaveLength(1);
    expect(sink.withCode(logCodes.kanaAvailable)).toHaveLength(1);
    expect(sink.lines().filter((line) => line.level >= 50)).toEqual([]);
  });

  it('does not hammer Kana while it is away: probes back off', async () => {
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /r': 'reports' },
      flushInterval: 20,
      retry: { retries: 1, minTimeout: 50, maxTimeout: 400, randomize: false },
    });
    const kana = kanaMeter(options);
    env.track(kana);
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await env.emulator.setOffline(true);
    for (let i = 0; i < 50; i++)
      await request(app)
        .get('/r')
        .set('x-user', users[i % 4] as string);
    await sleep(2000);
    // 4 keys: each tries twice (p-retry), then one probe at a time: 100 ms, 200 ms, then every 400 ms.
    expect(kana.stats().calls).toBeLessThanOrEqual(4 * 2 + 7);
    await env.emulator.setOffline(false);
    await kana.flush();
    expect(totalUsage()).toBe(50);
  });
});

describe('maxPendingKeys', () => {
  it('without a spool, drops usage for new keys beyond the bound: counted, logged once, passed to onDrop', async () => {
    const dropped: string[] = [];
    const { options, sink } = meterOptions(env.emulator, {
      userId: (req) => req.get('x-user'),
      routes: { 'GET /r': 'reports' },
      maxPendingKeys: 3,
      onDrop: (usage) => void dropped.push(usage.userId),
    });
    const kana = kanaMeter(options);
    env.track(kana);
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    for (const user of ['a', 'b', 'c', 'd', 'e', 'a']) await request(app).get('/r').set('x-user', user);
    expect(kana.stats()).toMatchObject({ captured: 6, dropped: 2, pendingKeys: 3, pending: 4 });
    expect(dropped).toEqual(['d', 'e']);
    expect(sink.withCode(logCodes.queueFull)).toHaveLength(1);
  });

  it('with a spool, spills usage for new keys to the file and delivers it all on flush', async () => {
    const { options } = meterOptions(env.emulator, {
      routes: { 'GET /r': 'reports' },
      maxPendingKeys: 2,
      spool: { path: join(directory, 'usage.spool') },
    });
    const kana = kanaMeter(options);
    env.track(kana);
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    for (let i = 0; i < 12; i++)
      await request(app)
        .get('/r')
        .set('x-user', users[i % 4] as string);
    expect(kana.stats()).toMatchObject({ captured: 12, spilled: 6, dropped: 0, pendingKeys: 2 });
    await kana.flush();
    expect(users.map((user) => env.emulator.usage(user, 'reports'))).toEqual([3, 3, 3, 3]);
    expect(kana.stats()).toMatchObject({ delivered: 12, pending: 0 });
  });
});

describe('the spool', () => {
  it('keeps what close() could not deliver, and the next start sends it', async () => {
    const path = join(directory, 'usage.spool');
    const first = meterOptions(env.emulator, { routes: { 'GET /r': 'reports' }, spool: { path } });
    const kana = kanaMeter(first.options);
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
    await env.emulator.setOffline(true);
    for (let i = 0; i < 20; i++)
      await request(app)
        .get('/r')
        .set('x-user', users[i % 4] as string);
    const started = Date.now();
    await kana.close({ timeoutMs: 5000 });
    expect(Date.now() - started).toBeLessThan(5000); // Kana is down and the spool keeps it: no need to wait
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(1 + 4);
    expect(first.sink.withCode(logCodes.spooledAtClose)).toHaveLength(1);
    expect(kana.stats().failed).toBe(0);

    await env.emulator.setOffline(false);
    const second = meterOptions(env.emulator, { spool: { path } });
    const restarted = kanaMeter(second.options);
    env.track(restarted);
    expect(restarted.stats()).toMatchObject({ replayed: 20, pending: 20 });
    await restarted.flush();
    expect(totalUsage()).toBe(20);
    await restarted.close();
    expect(readFileSync(path, 'utf8')).toBe('{"kanaMeterSpool":1}\n');
  });

  it('refuses to start on a corrupt spool, naming it, and leaves the file as it was', async () => {
    const path = join(directory, 'usage.spool');
    const { options } = meterOptions(env.emulator, { spool: { path } });
    await kanaMeter(options).close();
    const text = `${readFileSync(path, 'utf8')}{"u":"u1"}\n`;
    writeFileSync(path, text);
    expect(() => kanaMeter(options)).toThrow(/corrupt at line 2/);
    expect(readFileSync(path, 'utf8')).toBe(text);
  });
});

describe('across real process restarts', () => {
  function startApp(path: string, writeAhead = false): Promise<{ child: ChildProcess; port: number }> {
    const [command, args] = node('serve', env.emulator.url, env.emulator.apiKey, path, writeAhead ? 'write-ahead' : '');
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    return new Promise((resolve, reject) => {
      child.stdout?.once('data', (data: Buffer) => resolve({ child, port: JSON.parse(String(data)).port }));
      child.once('error', reject);
    });
  }

  async function sendLoad(port: number, n: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      const response = await fetch(`http://127.0.0.1:${port}/r`, { headers: { 'x-user': users[i % 4] as string } });
      expect(response.status).toBe(200);
    }
  }

  async function drain(path: string): Promise<{ replayed: number; delivered: number }> {
    const [command, args] = node('drain', env.emulator.url, env.emulator.apiKey, path);
    const { stdout } = await promisify(execFile)(command, args);
    return JSON.parse(stdout);
  }

  it('Kana down, N requests, SIGTERM: exits in time; Kana up, next start: Kana has exactly N', async () => {
    const path = join(directory, 'usage.spool');
    await env.emulator.setOffline(true);
    const { child, port } = await startApp(path);
    await sendLoad(port, 120);
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const signalled = Date.now();
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(3000 + 2000); // close({ timeoutMs: 3000 }) plus process exit

    await env.emulator.setOffline(false);
    expect(await drain(path)).toMatchObject({ replayed: 120, delivered: 120 });
    expect(totalUsage()).toBe(120);
  });

  it('with writeAhead, usage survives SIGKILL', async () => {
    const path = join(directory, 'usage.spool');
    await env.emulator.setOffline(true);
    const { child, port } = await startApp(path, true);
    await sendLoad(port, 60);
    // The client can read a response a moment before the server's 'finish' event captures it:
    // a kill inside that window loses that one event. Let the last 'finish' run.
    await sleep(50);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;

    await env.emulator.setOffline(false);
    expect(await drain(path)).toMatchObject({ replayed: 60, delivered: 60 });
    expect(totalUsage()).toBe(60);
  });
});
