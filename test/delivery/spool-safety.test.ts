// The spool through kanaMeter(): files it cannot be turned against, one owner, bounded replay and take-back, checked writes.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCounters } from '../../src/config/stats.js';
import { DeliveryQueue } from '../../src/delivery/queue.js';
import type { SpoolFileSystem } from '../../src/delivery/spool-files.js';
import { acquireSpoolLock, type SpoolLock } from '../../src/delivery/spool-lock.js';
import { type KanaError, type KanaMeterOptions, kanaMeter, logCodes, type UndeliveredUsage } from '../../src/index.js';
import { type ClientSettings, KanaClient } from '../../src/kana/client.js';
import { parseOptions } from '../../src/options.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();
let directory: string;
let path: string;

beforeEach(async () => {
  await env.emulator.setOffline(false);
  env.emulator.reset();
  env.emulator.seed(basicSeed);
  directory = fs.mkdtempSync(join(tmpdir(), 'kana-spool-safety-'));
  path = join(directory, 'usage.spool');
});
afterEach(() => fs.rmSync(directory, { recursive: true, force: true }));

function spooled(overrides: Partial<KanaMeterOptions> = {}) {
  const { options, sink } = meterOptions(env.emulator, {
    routes: { 'GET /r': 'reports' },
    spool: { path },
    ...overrides,
  });
  const kana = env.track(kanaMeter(options));
  const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/r', (_req, res) => res.json({})));
  return { kana, sink, options, hit: (user: string) => request(app).get('/r').set('x-user', user).expect(200) };
}

const usersTotal = (users: string[]) => users.reduce((sum, user) => sum + env.emulator.usage(user, 'reports'), 0);

describe('a spool that cannot be turned against its host', () => {
  it('writes nothing through a symbolic link planted as its lock', () => {
    const victim = join(directory, 'victim');
    fs.writeFileSync(victim, '999999999'); // reads as the pid of a dead holder
    fs.symlinkSync(victim, `${path}.lock`);
    const { options } = meterOptions(env.emulator, { spool: { path } });
    expect(() => kanaMeter(options)).toThrow(expect.objectContaining({ code: 'KANA_SPOOL_UNSAFE' }));
    expect(fs.readFileSync(victim, 'utf8')).toBe('999999999');
  });

  it('writes nothing through a symbolic link planted at the temporary name 0.1 used', async () => {
    const victim = join(directory, 'victim');
    fs.writeFileSync(victim, 'precious');
    fs.symlinkSync(victim, `${path}.${process.pid}.tmp`);
    const { kana, hit } = spooled();
    await env.emulator.setOffline(true);
    await hit('u1');
    await kana.close({ timeoutMs: 2000 });
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious');
    expect(fs.readFileSync(path, 'utf8')).toContain('"u":"u1"');
  });

  it('creates its files readable by their owner only (0600), whatever the umask', async () => {
    const umask = process.umask(0);
    try {
      const { kana, hit } = spooled({ maxPendingKeys: 1 });
      await env.emulator.setOffline(true);
      await hit('u1');
      await hit('u2'); // spilled
      expect((fs.statSync(`${path}.lock`).mode & 0o777).toString(8)).toBe('600');
      await kana.close({ timeoutMs: 2000 });
    } finally {
      process.umask(umask);
    }
    for (const file of [path, `${path}.spill`]) expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('600');
  });
});

describe('one owner per spool', () => {
  it('a second kanaMeter() on the same spool in one process is refused until the first is closed', async () => {
    const first = spooled();
    const { options } = meterOptions(env.emulator, { spool: { path } });
    expect(() => kanaMeter(options)).toThrow(
      expect.objectContaining({
        code: 'KANA_SPOOL_LOCKED',
        message: expect.stringMatching(/in use by another kanaMeter\(\) in this process/),
      }),
    );
    await first.kana.close();
    env.track(kanaMeter(options));
  });

  it('an empty lock left by a crash is taken over (with a warning), not refused for good', () => {
    fs.writeFileSync(`${path}.lock`, '');
    const aMinuteAgo = new Date(Date.now() - 60_000);
    fs.utimesSync(`${path}.lock`, aMinuteAgo, aMinuteAgo);
    const { sink } = spooled();
    expect(sink.withCode(logCodes.spoolLockRecovered)).toEqual([
      expect.objectContaining({ path, reason: expect.stringMatching(/empty/) }),
    ]);
  });

  it('three taking one stale lock over: exactly one gets it, whichever step of the first the other two cut in at', () => {
    const lockPath = `${path}.lock`;
    const deadPid = spawnSync(process.execPath, ['-e', '0']).pid as number;
    for (let step = 1; ; step++) {
      fs.writeFileSync(lockPath, String(deadPid)); // left by a process that is gone
      const held: SpoolLock[] = [];
      const take = (fileSystem: SpoolFileSystem) => {
        try {
          held.push(acquireSpoolLock(fileSystem, lockPath, path));
        } catch (error) {
          expect(error).toMatchObject({ code: 'KANA_SPOOL_LOCKED' });
        }
      };
      // The first one's calls to the filesystem, counted: the second takes the lock (whole) just
      // before its step-th call, and the third just before the next.
      let calls = 0;
      const cutIn = new Proxy(fs, {
        get(target, name) {
          const real = Reflect.get(target, name);
          if (typeof real !== 'function') return real;
          return (...args: unknown[]) => {
            calls++;
            if (calls === step || calls === step + 1) take(fs);
            return real.apply(target, args);
          };
        },
      }) as SpoolFileSystem;
      take(cutIn);
      expect(held, `the others cut in at the first's calls ${step} and ${step + 1}`).toHaveLength(1);
      for (const lock of held) lock.release();
      fs.rmSync(lockPath, { force: true });
      if (calls < step) break; // past the first one's last call: every step was tried
    }
  });

  it('across processes, exactly one of four racing for a stale lock gets it, every time', async () => {
    const contender = fileURLToPath(new URL('../fixtures/spool-lock-contender.ts', import.meta.url));
    const children: ChildProcess[] = [];
    const replies: AsyncIterator<string>[] = [];
    for (let i = 0; i < 4; i++) {
      const child = spawn(process.execPath, ['--import', 'tsx', contender, path], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.push(child);
      replies.push(createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]());
    }
    const say = (line: string) => Promise.all(children.map((child) => child.stdin?.write(`${line}\n`)));
    const hear = () => Promise.all(replies.map(async (reply) => (await reply.next()).value as string));
    const deadPid = () => spawnSync(process.execPath, ['-e', '0']).pid as number;
    try {
      for (let round = 0; round < 5; round++) {
        fs.writeFileSync(`${path}.lock`, String(deadPid())); // left by a process that is gone
        await say('go');
        const answers = await hear();
        expect(
          answers.filter((answer) => answer === 'acquired'),
          answers.join(),
        ).toHaveLength(1);
        expect(answers.filter((answer) => answer === 'refused KANA_SPOOL_LOCKED')).toHaveLength(3);
        await say('release');
        expect(await hear()).toEqual(['released', 'released', 'released', 'released']);
        expect(fs.existsSync(`${path}.lock`)).toBe(false);
      }
    } finally {
      for (const child of children) child.stdin?.end();
      await Promise.all(children.map((child) => new Promise((resolve) => child.once('exit', resolve))));
    }
  }, 60_000);
});

describe('replay and take-back stay within maxPendingKeys', () => {
  const users = Array.from({ length: 1000 }, (_, i) => `user-${i}`);

  /** A 0.1 spill file (both versions read it): `perUser` records for each user, interleaved. */
  function writeSpill(perUser: number): void {
    const parts = ['{"kanaMeterSpool":1}\n'];
    for (let round = 0; round < perUser; round++) {
      for (const user of users) parts.push(`{"u":"${user}","f":"reports","d":1,"n":1,"t":1700000000000}\n`);
    }
    fs.writeFileSync(`${path}.spill`, parts.join(''), { mode: 0o600 });
  }

  it('200,000 spilled records, maxPendingKeys 100: at most 100 keys in memory at start, and all of it delivered', async () => {
    env.emulator.seed({ users: users.map((id) => ({ id })) });
    writeSpill(200);
    const { kana } = spooled({ maxPendingKeys: 100, concurrency: 16 });
    expect(kana.stats().pendingKeys).toBeLessThanOrEqual(100);
    await kana.flush();
    expect(usersTotal(users)).toBe(200_000);
    expect(kana.stats()).toMatchObject({ replayed: 200_000, delivered: 200_000, pending: 0 });
  }, 60_000);

  it('spilled usage is delivered once the queue has room, without new traffic or flush()', async () => {
    const { kana, hit } = spooled({ maxPendingKeys: 2, flushInterval: 20 });
    await env.emulator.setOffline(true);
    for (const user of ['u1', 'u2', 'u3', '124', 'u3', '124']) await hit(user);
    expect(kana.stats()).toMatchObject({ captured: 6, spilled: 4 });
    await env.emulator.setOffline(false);
    // Nothing else happens: the probe finds Kana back, and the timers take the spilled usage back.
    while (kana.stats().delivered < 6) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(usersTotal(['u1', 'u2', 'u3', '124'])).toBe(6);
  });
});

describe('every spool write is checked', () => {
  /** A queue on a spool whose filesystem fails the writes `fail` picks; Kana is the emulator. */
  function faultyQueue(fail: (path: string) => boolean, overrides: Partial<KanaMeterOptions> = {}) {
    const paths = new Map<number, string>();
    const spoolFileSystem: SpoolFileSystem = {
      ...fs,
      openSync: ((file: string, ...rest: unknown[]) => {
        const fd = (fs.openSync as (...args: unknown[]) => number)(file, ...rest);
        paths.set(fd, file);
        return fd;
      }) as SpoolFileSystem['openSync'],
      renameSync: (from, to) => {
        fs.renameSync(from, to);
        for (const [fd, file] of paths) if (file === from) paths.set(fd, String(to));
      },
      writeSync: ((fd: number, ...rest: unknown[]) => {
        if (fail(paths.get(fd) ?? ''))
          throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        return (fs.writeSync as (...args: unknown[]) => number)(fd, ...rest);
      }) as SpoolFileSystem['writeSync'],
    };
    const dropped: UndeliveredUsage[] = [];
    const failures: [UndeliveredUsage, KanaError][] = [];
    const { options, sink } = meterOptions(env.emulator, {
      spool: { path },
      onDrop: (usage) => void dropped.push(usage),
      onDeliveryFailure: (usage, error) => void failures.push([usage, error]),
      ...overrides,
    });
    const config = parseOptions(options);
    const counters = createCounters();
    const queue = new DeliveryQueue(new KanaClient(config.client as ClientSettings), config, counters, undefined, {
      spoolFileSystem,
    });
    return { queue, counters, sink, dropped, failures };
  }

  it('a spill append that fails is reported dropped (onDrop, stats, a log line), never counted as spilled', async () => {
    let full = false;
    const { queue, counters, sink, dropped } = faultyQueue((file) => full && file.endsWith('.spill'), {
      maxPendingKeys: 1,
    });
    queue.enqueue('u1', 'reports', 1);
    queue.enqueue('u2', 'reports', 1); // spilled
    full = true;
    queue.enqueue('u3', 'reports', 1); // the disk is full
    full = false;
    expect(counters).toMatchObject({ captured: 3, spilled: 1, dropped: 1, spoolErrors: 1 });
    expect(dropped.map((usage) => usage.userId)).toEqual(['u3']);
    expect(sink.withCode(logCodes.spoolFailed)).toEqual([
      expect.objectContaining({ err: expect.objectContaining({ code: 'KANA_SPOOL_WRITE_FAILED' }) }),
    ]);
    await queue.flush();
    await queue.close();
    expect(usersTotal(['u1', 'u2', 'u3'])).toBe(2);
  });

  it('a final snapshot that fails reports the usage undelivered, and does not claim it is kept', async () => {
    let full = false;
    const { queue, counters, sink, failures } = faultyQueue((file) => full && /\.spool\.[0-9a-f]+\.tmp$/.test(file));
    await env.emulator.setOffline(true);
    queue.enqueue('u1', 'reports', 3);
    full = true;
    await queue.close({ timeoutMs: 500 });
    expect(counters.spoolErrors).toBeGreaterThanOrEqual(1);
    expect(failures.map(([usage, error]) => [usage.userId, usage.delta, error.code])).toEqual([
      ['u1', 3, 'KANA_CLOSED'],
    ]);
    expect(sink.withCode(logCodes.spooledAtClose)).toEqual([]);
    expect(sink.withCode(logCodes.undeliveredAtClose)).toHaveLength(1);
  });
});
