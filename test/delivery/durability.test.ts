// Usage is not lost: Kana outages under load, shutdown, and the spool across real process restarts.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
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
    // Retries run out on the calls made while Kana is down: the queue says so once.
    while (sink.withCode(logCodes.kanaUnavailable).length === 0) await sleep(10);
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
    const [header, ...records] = readFileSync(path, 'utf8').trim().split('\n');
    expect(JSON.parse(header as string)).toMatchObject({ kanaMeterSpool: 2 });
    expect(records).toEqual([]);
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
  interface App {
    child: ChildProcess;
    port: number;
    /** Resolves with the first stdout line that starts with `prefix`. */
    line(prefix: string): Promise<string>;
    stats(): Promise<{ captured: number; kanaAvailable: boolean }>;
    kill(signal: NodeJS.Signals): Promise<number | null>;
  }

  function startApp(path: string, options: { writeAhead?: boolean; env?: Record<string, string> } = {}): Promise<App> {
    const mode = options.writeAhead ? 'write-ahead' : '';
    const [command, args] = node('serve', env.emulator.url, env.emulator.apiKey, path, mode);
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...options.env },
    });
    const lines: string[] = [];
    const waiting: { prefix: string; resolve: (line: string) => void }[] = [];
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (text) => {
      lines.push(text);
      for (const wait of waiting.filter((w) => text.startsWith(w.prefix))) wait.resolve(text);
    });
    const line = (prefix: string) =>
      new Promise<string>((resolve) => {
        const seen = lines.find((text) => text.startsWith(prefix));
        if (seen !== undefined) resolve(seen);
        else waiting.push({ prefix, resolve });
      });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      void exited.then((code) => reject(new Error(`the app exited with ${code} before listening`)));
      void line('{"port"').then((text) => {
        const port = JSON.parse(text).port as number;
        resolve({
          child,
          port,
          line,
          stats: async () =>
            (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as Awaited<ReturnType<App['stats']>>,
          kill: (signal) => {
            child.kill(signal);
            return exited;
          },
        });
      });
    });
  }

  const hit = (port: number, user: string) => fetch(`http://127.0.0.1:${port}/r`, { headers: { 'x-user': user } });

  async function sendLoad(app: App, n: number): Promise<void> {
    for (let i = 0; i < n; i++) expect((await hit(app.port, users[i % 4] as string)).status).toBe(200);
    // A client can read a response a moment before the server's 'finish' captures it: wait for that.
    while ((await app.stats()).captured < n) await new Promise((resolve) => setImmediate(resolve));
  }

  async function drain(path: string): Promise<{ replayed: number; delivered: number }> {
    const [command, args] = node('drain', env.emulator.url, env.emulator.apiKey, path);
    const { stdout } = await promisify(execFile)(command, args);
    return JSON.parse(stdout);
  }

  /** The total delta the snapshot file holds now. */
  function snapshotTotal(path: string): number {
    return readFileSync(path, 'utf8')
      .split('\n')
      .slice(1)
      .filter((line) => line.endsWith('}'))
      .reduce((sum, line) => sum + JSON.parse(line).d, 0);
  }

  it('Kana down, N requests, SIGTERM: exits in time; Kana up, next start: Kana has exactly N', async () => {
    const path = join(directory, 'usage.spool');
    await env.emulator.setOffline(true);
    const app = await startApp(path);
    await sendLoad(app, 120);
    const signalled = Date.now();
    expect(await app.kill('SIGTERM')).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(3000 + 2000); // close({ timeoutMs: 3000 }) plus process exit

    await env.emulator.setOffline(false);
    expect(await drain(path)).toMatchObject({ replayed: 120, delivered: 120 });
    expect(totalUsage()).toBe(120);
  });

  it('with writeAhead, usage survives SIGKILL', async () => {
    const path = join(directory, 'usage.spool');
    await env.emulator.setOffline(true);
    const app = await startApp(path, { writeAhead: true });
    await sendLoad(app, 60);
    await app.kill('SIGKILL');

    await env.emulator.setOffline(false);
    expect(await drain(path)).toMatchObject({ replayed: 60, delivered: 60 });
    expect(totalUsage()).toBe(60);
  });

  describe('SIGKILL at chosen points (a crash hook on the filesystem calls stops the process there)', () => {
    it('mid-snapshot: the snapshot before it is whole, and Kana gets exactly what it held', async () => {
      const path = join(directory, 'usage.spool');
      await env.emulator.setOffline(true);
      const app = await startApp(path, { env: { KANA_TEST_CRASH_AT: 'snapshot-write:1', KANA_TEST_ARM: 'sigterm' } });
      await sendLoad(app, 40);
      // Kana is down: the outage's snapshots hold all 40 once a probe has failed after the last one.
      while (snapshotTotal(path) < 40) await new Promise((resolve) => setTimeout(resolve, 20));
      // SIGTERM: close() writes its own snapshot, and the process dies halfway through writing it.
      app.child.kill('SIGTERM');
      await app.line('CRASH_POINT snapshot-write');
      await app.kill('SIGKILL');

      await env.emulator.setOffline(false);
      expect(await drain(path)).toMatchObject({ replayed: 40, delivered: 40 });
      expect(totalUsage()).toBe(40);
    });

    it('between the snapshot that took spilled usage back and renaming the rest into place: nothing twice', async () => {
      const path = join(directory, 'usage.spool');
      await env.emulator.setOffline(true);
      const app = await startApp(path, {
        env: { KANA_TEST_CRASH_AT: 'spill-rotate:1', KANA_TEST_MAX_PENDING_KEYS: '1' },
      });
      // One key in memory (u1); u2, u3, 124 spill, one record per request.
      for (const user of users) for (let i = 0; i < 3; i++) expect((await hit(app.port, user)).status).toBe(200);
      while ((await app.stats()).captured < 12) await new Promise((resolve) => setImmediate(resolve));
      // Kana back: u1 is delivered, then a round takes u2 back (the rest is staged as the next spill
      // file) and commits with a snapshot; the process dies before the staged file is renamed.
      await env.emulator.setOffline(false);
      await app.line('CRASH_POINT spill-rotate');
      await app.kill('SIGKILL');
      expect(totalUsage()).toBe(3);

      // The next start finishes the rename: u2 from the snapshot, u3 and 124 from the spill file, once each.
      expect(await drain(path)).toMatchObject({ replayed: 9, delivered: 9 });
      expect(users.map((user) => env.emulator.usage(user, 'reports'))).toEqual([3, 3, 3, 3]);
    });

    it('mid-append to the spill file: only the event being written is lost, and the file stays readable', async () => {
      const path = join(directory, 'usage.spool');
      await env.emulator.setOffline(true);
      const app = await startApp(path, {
        writeAhead: true,
        env: { KANA_TEST_CRASH_AT: 'spill-append:3', KANA_TEST_MAX_PENDING_KEYS: '1' },
      });
      const crashed = app.line('CRASH_POINT spill-append').then(() => 'crashed' as const);
      // u1 stays in memory (written ahead); u2 and u3 spill. The third spill append (u2) is torn.
      for (const user of ['u1', 'u1', 'u2', 'u3', 'u2', 'u3']) {
        const sent = hit(app.port, user).then(
          () => 'answered' as const,
          () => 'lost' as const,
        );
        if ((await Promise.race([sent, crashed])) === 'crashed') break;
      }
      await app.kill('SIGKILL');

      await env.emulator.setOffline(false);
      expect(await drain(path)).toMatchObject({ replayed: 4, delivered: 4 });
      expect(users.map((user) => env.emulator.usage(user, 'reports'))).toEqual([2, 1, 1, 0]);
    });
  });

  it('a filesystem that fills up (RLIMIT_FSIZE): every event is delivered or reported dropped, none is lost unseen', async () => {
    const path = join(directory, 'usage.spool');
    await env.emulator.setOffline(true);
    const [command, args] = node('serve', env.emulator.url, env.emulator.apiKey, path, '');
    // dash's `ulimit -f` counts 512-byte blocks: no spool file grows past 2 KiB.
    const limited = ['sh', ['-c', 'ulimit -f 4 && exec "$0" "$@"', command, ...args]] as const;
    const child = spawn(limited[0], limited[1], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, KANA_TEST_MAX_PENDING_KEYS: '1' },
    });
    const output = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
    const { port } = JSON.parse((await output.next()).value as string);
    // One key in memory; 60 more users spill about 60 bytes each, past the 2 KiB limit.
    env.emulator.seed({ users: Array.from({ length: 60 }, (_, i) => ({ id: `user-${i}` })) });
    expect((await hit(port, 'u1')).status).toBe(200);
    for (let i = 0; i < 60; i++) expect((await hit(port, `user-${i}`)).status).toBe(200);
    child.kill('SIGTERM');
    const first = JSON.parse((await output.next()).value as string);
    expect(first.captured).toBe(61);
    expect(first.spoolErrors).toBeGreaterThan(0);
    expect(first.dropped).toBeGreaterThan(0);
    expect(first.spilled + first.dropped).toBe(60);

    await env.emulator.setOffline(false);
    const second = await drain(path);
    // What reached the disk is delivered; the rest was reported dropped; the sum is what was captured.
    expect(second.delivered).toBe(first.spilled + 1);
    expect(second.delivered + first.dropped).toBe(61);
  });
});
