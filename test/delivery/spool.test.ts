// The spool files: format, crash leftovers, corrupt, foreign and unsafe files, modes, checked writes, bounded reads, the lock.

import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SpoolError } from '../../src/config/errors.js';
import { Spool, type SpoolOpenOptions, type SpoolRecord, type TakenBack } from '../../src/delivery/spool.js';
import type { SpoolFileSystem } from '../../src/delivery/spool-files.js';
import { deferred } from '../helpers/deferred.js';

const { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } =
  fs;

let directory: string;
let path: string;
const record = (userId: string, delta = 1): SpoolRecord => ({
  userId,
  featureId: 'api-calls',
  delta,
  events: delta,
  firstCapturedAt: 1_700_000_000_000,
});

/** What the queue does with spool records: merged per key in memory, at most `maxKeys` keys. */
function memory(maxKeys = Number.POSITIVE_INFINITY) {
  const held = new Map<string, SpoolRecord>();
  let replayed = 0;
  const take = (rec: SpoolRecord, earlierRun: boolean): boolean => {
    const seen = held.get(rec.userId);
    if (seen) {
      seen.delta += rec.delta;
      seen.events += rec.events;
    } else if (held.size >= maxKeys) {
      return false;
    } else {
      held.set(rec.userId, { ...rec });
    }
    if (earlierRun) replayed += rec.events;
    return true;
  };
  return {
    held,
    take,
    records: () => [...held.values()],
    replayed: () => replayed,
    total: () => [...held.values()].reduce((sum, rec) => sum + rec.delta, 0),
  };
}

function open(mem = memory(), extra: Partial<SpoolOpenOptions> = {}) {
  const { spool, opened } = Spool.open(path, { take: mem.take, held: mem.records, compactKeys: 1000, ...extra });
  return { spool, opened, mem };
}

/** Opens with room for everything, reads it all and closes: the total delta the spool held. */
function drainTotal(extra: Partial<SpoolOpenOptions> = {}): number {
  const mem = memory();
  const { spool } = open(mem, extra);
  expect(spool.hasSpilled).toBe(false);
  spool.snapshot([]);
  spool.close();
  return mem.total();
}

const sum = (taken: TakenBack[]) => taken.reduce((total, entry) => total + entry.record.delta, 0);

const lines = (file: string) => readFileSync(file, 'utf8').trim().split('\n');
const spillLines = () => lines(`${path}.spill`).slice(1);

/** node:fs with one call replaced. */
function faulty(overrides: Partial<SpoolFileSystem>): SpoolFileSystem {
  return { ...fs, ...overrides } as SpoolFileSystem;
}

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'kana-spool-'));
  path = join(directory, 'usage.spool');
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

describe('Spool: format and replay', () => {
  it('creates an empty spool with its headers, and locks it', () => {
    const { spool, opened } = open();
    expect(opened).toMatchObject({ records: 0, spilledBytes: 0, recoveredLock: undefined });
    expect(lines(path)).toHaveLength(1);
    expect(JSON.parse(lines(path)[0] as string)).toMatchObject({ kanaMeterSpool: 2 });
    expect(JSON.parse(readFileSync(`${path}.lock`, 'utf8'))).toMatchObject({ kanaMeterLock: 1, pid: process.pid });
    spool.close();
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it('gives back what was appended and snapshotted, on the next open, and counts it as replayed', () => {
    const first = open().spool;
    first.snapshot([record('u1', 3)]);
    first.append(record('u2'), false);
    first.append(record('spilled'), true);
    first.close();
    const { spool, mem, opened } = open();
    expect(mem.records()).toEqual([record('u1', 3), record('u2'), record('spilled')]);
    expect(opened.records).toBe(3);
    expect(mem.replayed()).toBe(5);
    // All of it is in one snapshot now, and the spill file was replaced by an empty one.
    expect(lines(path)).toHaveLength(4);
    expect(spillLines()).toEqual([]);
    spool.close();
  });

  it('reads a version 1 spool (kana-meter 0.1)', () => {
    writeFileSync(path, '{"kanaMeterSpool":1}\n{"u":"u1","f":"api-calls","d":2,"n":2,"t":1}\n', { mode: 0o600 });
    writeFileSync(`${path}.spill`, '{"kanaMeterSpool":1}\n{"u":"u2","f":"api-calls","d":1,"n":1,"t":1}\n', {
      mode: 0o600,
    });
    const { spool, mem } = open();
    expect(mem.records().map((rec) => [rec.userId, rec.delta])).toEqual([
      ['u1', 2],
      ['u2', 1],
    ]);
    spool.close();
  });

  it('ignores a torn last line, as a crash in the middle of an append leaves it', () => {
    writeFileSync(path, '{"kanaMeterSpool":1}\n{"u":"u1","f":"api-calls","d":2,"n":2,"t":1}\n{"u":"u2","f":"ap');
    const { spool, mem } = open();
    expect(mem.records()).toEqual([{ userId: 'u1', featureId: 'api-calls', delta: 2, events: 2, firstCapturedAt: 1 }]);
    spool.close();
  });

  it('cuts a torn spill tail off before appending after it, so the file stays readable', () => {
    const first = open(memory(1)).spool;
    first.append(record('kept-1'), true);
    first.append(record('kept-2'), true);
    first.close();
    fs.appendFileSync(`${path}.spill`, '{"u":"torn","f":"api');
    // One key fits (kept-1 is taken): the spill file stays, its torn tail cut off, and takes appends again.
    const { spool } = open(memory(1));
    spool.append(record('after'), true);
    spool.close();
    expect(spillLines().map((line) => JSON.parse(line).u)).toEqual(['kept-1', 'kept-2', 'after']);
    expect(drainTotal()).toBe(3);
  });

  it('refuses a corrupt spool with a clear error, and leaves it untouched', () => {
    const corrupt =
      '{"kanaMeterSpool":1}\n{"u":"u1","f":"api-calls","d":2,"n":2,"t":1}\nnot json\n{"u":"u2","f":"x","d":1,"n":1,"t":1}\n';
    writeFileSync(path, corrupt);
    expect(() => open()).toThrow(/spool .*usage\.spool is corrupt at line 3: "not json".*left untouched/);
    expect(readFileSync(path, 'utf8')).toBe(corrupt);
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it.each([
    ['a negative delta', '{"u":"u1","f":"f","d":-1,"n":1,"t":1}'],
    ['a numeric user id', '{"u":124,"f":"f","d":1,"n":1,"t":1}'],
    ['a missing feature', '{"u":"u1","d":1,"n":1,"t":1}'],
  ])('refuses a record with %s', (_name, line) => {
    writeFileSync(path, `{"kanaMeterSpool":1}\n${line}\n`);
    expect(() => open()).toThrow(/corrupt at line 2/);
  });

  it('refuses a line longer than 64 KiB without reading a whole file into one string', () => {
    writeFileSync(path, `{"kanaMeterSpool":1}\n${'x'.repeat(200_000)}\n`);
    expect(() => open()).toThrow(/corrupt at byte 21: a line longer than 65536 bytes/);
  });

  it.each([
    ['the snapshot', ''],
    ['the spill file', '.spill'],
  ])('refuses a foreign file as %s, and leaves it untouched', (_name, suffix) => {
    writeFileSync(`${path}${suffix}`, 'user,feature\nu1,api-calls\n');
    expect(() => open()).toThrow(
      expect.objectContaining({
        code: 'KANA_SPOOL_FOREIGN',
        message: expect.stringMatching(/is not a kana-meter spool .*left untouched/),
      }),
    );
    expect(readFileSync(`${path}${suffix}`, 'utf8')).toBe('user,feature\nu1,api-calls\n');
  });

  it('refuses a corrupt spill file too', () => {
    writeFileSync(`${path}.spill`, '{"kanaMeterSpool":1}\n{"u":"u1"}\n');
    expect(() => open()).toThrow(/usage\.spool\.spill is corrupt at line 2/);
  });

  it('refuses a directory that does not exist', () => {
    path = join(directory, 'missing', 'usage.spool');
    expect(() => open()).toThrow(/spool.path.*does not exist/);
  });

  it('keeps spilled records apart: snapshots do not touch them until a round takes them back', async () => {
    const { spool, mem } = open();
    spool.append(record('spilled-1'), true);
    spool.append(record('spilled-2'), true);
    spool.append(record('spilled-1', 3), true);
    expect(spool.hasSpilled).toBe(true);
    spool.snapshot([record('in-memory', 5)]);
    expect(spillLines()).toHaveLength(3);
    mem.held.set('in-memory', record('in-memory', 5));
    const taken = await spool.takeBack(10);
    // Every record of a key comes back merged; spilled by this run: not replayed.
    expect(taken.map(({ record: rec, replayedEvents }) => [rec.userId, rec.delta, replayedEvents])).toEqual([
      ['spilled-1', 4, 0],
      ['spilled-2', 1, 0],
    ]);
    expect(spool.hasSpilled).toBe(false);
    expect(spillLines()).toEqual([]);
    // The round's snapshot holds memory and what came back.
    expect(
      lines(path)
        .slice(1)
        .map((line) => JSON.parse(line).u),
    ).toEqual(['in-memory', 'spilled-1', 'spilled-2']);
    spool.close();
  });

  it('leaves no temporary file behind after a snapshot, and removes those a crash left', () => {
    writeFileSync(`${path}.0123456789abcdef.tmp`, 'left by a crash');
    writeFileSync(`${path}.spill.fedcba9876543210.tmp`, 'left by a crash');
    const { spool } = open();
    spool.snapshot([record('u1')]);
    spool.close();
    expect(readdirSync(directory).sort()).toEqual(['usage.spool', 'usage.spool.spill']);
  });
});

describe('Spool: files it cannot be turned against', () => {
  it('creates every file 0600, whatever the umask', () => {
    const umask = process.umask(0);
    try {
      const { spool } = open();
      spool.append(record('s'), true);
      spool.snapshot([record('u1')]);
      expect(statSync(`${path}.lock`).mode & 0o777).toBe(0o600);
      spool.close();
    } finally {
      process.umask(umask);
    }
    for (const file of [path, `${path}.spill`]) expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('never writes through a link planted at the old predictable temporary name', () => {
    const victim = join(directory, 'victim');
    writeFileSync(victim, 'precious');
    symlinkSync(victim, `${path}.${process.pid}.tmp`);
    const { spool } = open();
    spool.snapshot([record('u1', 7)]);
    spool.close();
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    expect(lines(path)[1]).toContain('"u":"u1"');
  });

  it.each([
    ['the lock', '.lock'],
    ['the snapshot', ''],
    ['the spill file', '.spill'],
  ])('refuses a symbolic link as %s, and writes nothing through it', (_name, suffix) => {
    const victim = join(directory, 'victim');
    writeFileSync(victim, '999999999');
    symlinkSync(victim, `${path}${suffix}`);
    expect(() => open()).toThrow(
      expect.objectContaining({ code: 'KANA_SPOOL_UNSAFE', message: expect.stringContaining('symbolic link') }),
    );
    expect(readFileSync(victim, 'utf8')).toBe('999999999');
    expect(lstatSync(`${path}${suffix}`).isSymbolicLink()).toBe(true);
  });

  it('refuses a spool file with another hard link, and a FIFO', () => {
    const victim = join(directory, 'victim');
    writeFileSync(victim, '{"kanaMeterSpool":1}\n');
    fs.linkSync(victim, `${path}.spill`);
    expect(() => open()).toThrow(/usage\.spool\.spill has 1 other hard link/);
    rmSync(`${path}.spill`);
    spawnSync('mkfifo', [path]);
    expect(() => open()).toThrow(/usage\.spool is not a regular file/);
  });
});

describe('Spool: every write checked', () => {
  it('completes short writes: a filesystem that takes 7 bytes per call loses nothing', () => {
    const sevenAtATime = faulty({
      writeSync: ((fd: number, buffer: Buffer, offset: number, length: number, position: number) =>
        fs.writeSync(fd, buffer, offset, Math.min(7, length), position)) as SpoolFileSystem['writeSync'],
    });
    const { spool } = open(memory(), { fs: sevenAtATime });
    spool.snapshot([record('u1', 3), record('u2', 4)]);
    spool.append(record('u3', 5), false);
    spool.append(record('s1', 6), true);
    spool.close();
    expect(drainTotal()).toBe(18);
  });

  it.each([
    ['returns 0 (no progress)', () => 0, 'KANA_SPOOL_SHORT_WRITE'],
    [
      'fails with ENOSPC',
      () => {
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      },
      'KANA_SPOOL_WRITE_FAILED',
    ],
  ])('an append whose write %s throws %s and leaves whole lines only', (_name, fail, code) => {
    let budget = Number.POSITIVE_INFINITY;
    const nearlyFull = faulty({
      writeSync: ((fd: number, buffer: Buffer, offset: number, length: number, position: number) => {
        if (budget <= 0) return fail();
        const count = Math.min(length, budget);
        budget -= count;
        return fs.writeSync(fd, buffer, offset, count, position);
      }) as SpoolFileSystem['writeSync'],
    });
    const { spool } = open(memory(), { fs: nearlyFull });
    spool.append(record('s1'), true);
    budget = 10; // the next record gets 10 of its bytes on disk, then the disk is full
    expect(() => spool.append(record('s2'), true)).toThrow(expect.objectContaining({ code }));
    budget = Number.POSITIVE_INFINITY;
    spool.append(record('s3'), true); // after the torn bytes were cut off
    spool.close();
    expect(spillLines().map((line) => JSON.parse(line).u)).toEqual(['s1', 's3']);
    expect(drainTotal()).toBe(2);
  });

  it('a snapshot that fails leaves the previous one whole', () => {
    let fail = false;
    const flaky = faulty({
      fsyncSync: ((fd: number) => {
        if (fail) throw Object.assign(new Error('EIO'), { code: 'EIO' });
        fs.fsyncSync(fd);
      }) as SpoolFileSystem['fsyncSync'],
    });
    const { spool } = open(memory(), { fs: flaky });
    spool.snapshot([record('u1', 2)]);
    fail = true;
    expect(() => spool.snapshot([record('u1', 2), record('u2', 9)])).toThrow(
      expect.objectContaining({ code: 'KANA_SPOOL_WRITE_FAILED', message: expect.stringContaining('EIO') }),
    );
    fail = false;
    spool.close();
    expect(readdirSync(directory).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    expect(drainTotal()).toBe(2);
  });
});

describe('Spool: bounded reads', () => {
  /** A spill file of `count` records over `keys` users, as a long outage leaves it. */
  function writeSpill(count: number, keys: number): void {
    const parts = ['{"kanaMeterSpool":2,"epoch":3}\n'];
    for (let i = 0; i < count; i++) parts.push(`{"u":"user-${i % keys}","f":"api-calls","d":1,"n":1,"t":${i}}\n`);
    writeFileSync(`${path}.spill`, parts.join(''), { mode: 0o600 });
  }

  it('takes at most maxPendingKeys keys at open; the rest comes back in rounds, every key merged, each record once', async () => {
    writeSpill(20_000, 500);
    const mem = memory(100);
    const { spool, opened } = open(mem);
    expect(mem.held.size).toBe(100);
    expect(opened.spilledBytes).toBeGreaterThan(0);
    let total = mem.total();
    let replayed = mem.replayed();
    let rounds = 0;
    while (spool.hasSpilled) {
      mem.held.clear(); // the queue delivered what it held, and has room for 100 keys again
      const taken = await spool.takeBack(100);
      expect(taken.length).toBeLessThanOrEqual(100);
      total += sum(taken);
      replayed += taken.reduce((events, entry) => events + entry.replayedEvents, 0);
      rounds++;
    }
    spool.close();
    expect(total).toBe(20_000);
    expect(replayed).toBe(20_000);
    expect(rounds).toBe(5); // 500 keys, 100 a round: one call per key, however spread out its records
    expect(spillLines()).toEqual([]);
  });

  it('compacts a spill file past the size limit in the background: merged per key, nothing lost', async () => {
    writeSpill(20_000, 50);
    const sizeBefore = statSync(`${path}.spill`).size;
    const compacted = deferred<{ before: number; after: number }>();
    const { spool, mem } = open(memory(10), {
      compactBytes: 64 * 1024,
      compactKeys: 100,
      onCompacted: compacted.resolve,
    });
    // Open returns at once: the rewrite runs in steps, between turns of the event loop.
    expect(statSync(`${path}.spill`).size).toBe(sizeBefore);
    spool.append(record('while-compacting', 4), true);
    expect((await compacted.promise).before).toBeGreaterThan(sizeBefore);
    spool.close();
    expect(statSync(`${path}.spill`).size).toBeLessThan(sizeBefore / 50);
    // 10 keys' first records in memory (and the snapshot); the rest of the file merged: one line per key.
    expect(mem.held.size).toBe(10);
    expect(spillLines()).toHaveLength(51);
    expect(drainTotal()).toBe(20_000 + 4);
  });

  it('a take-back round replaces a compaction under way, and the files stay consistent', async () => {
    writeSpill(20_000, 50);
    const compacted: unknown[] = [];
    const { spool, mem } = open(memory(10), {
      compactBytes: 64 * 1024,
      compactKeys: 100,
      onCompacted: (sizes) => compacted.push(sizes),
    });
    const taken = await spool.takeBack(10);
    expect(taken).toHaveLength(10);
    spool.close();
    expect(compacted).toEqual([]);
    expect(readdirSync(directory).filter((name) => name.endsWith('.tmp'))).toEqual([]);
    // What memory took at open, and the round, are in the snapshot; the rest in the spill file; each once.
    expect(drainTotal()).toBe(20_000);
    expect(mem.total() + sum(taken)).toBeLessThan(20_000);
  });

  it('a snapshot larger than maxPendingKeys (it shrank) moves the rest to the spill file, without double counting', () => {
    const first = open().spool;
    first.snapshot(Array.from({ length: 50 }, (_, i) => record(`user-${i}`, 2)));
    first.append(record('spilled', 5), true);
    first.close();
    const mem = memory(10);
    const { spool } = open(mem);
    expect(mem.held.size).toBe(10);
    spool.close();
    expect(existsSync(`${path}.spill.next`)).toBe(false);
    expect(drainTotal()).toBe(50 * 2 + 5);
  });
});

describe('Spool: crashes between two renames', () => {
  /** node:fs whose rename onto `target` fails once, as a crash right before it would leave things. */
  function crashBeforeRenameTo(target: string) {
    let armed = true;
    return faulty({
      renameSync: ((from: string, to: string) => {
        if (armed && to === target) {
          armed = false;
          throw Object.assign(new Error('simulated crash'), { code: 'EIO' });
        }
        fs.renameSync(from, to);
      }) as SpoolFileSystem['renameSync'],
    });
  }

  it('between the snapshot that took all spilled usage and the new spill file: nothing replays twice', () => {
    const { spool, mem } = open();
    spool.append(record('s1', 2), true);
    spool.append(record('s2', 3), true);
    spool.close();
    // Next start: the snapshot takes both, then the empty spill file's rename "crashes".
    expect(() => open(memory(), { fs: crashBeforeRenameTo(`${path}.spill`) })).toThrow(/could not rename .*\(EIO\)/);
    expect(spillLines()).toHaveLength(2); // still there: the snapshot's header says they are taken
    expect(drainTotal()).toBe(5);
    expect(mem.total()).toBe(0);
  });

  it('between a staged spill file and the snapshot that names it: the staged file is dropped', () => {
    const first = open().spool;
    first.snapshot(Array.from({ length: 20 }, (_, i) => record(`user-${i}`)));
    first.close();
    expect(() => open(memory(5), { fs: crashBeforeRenameTo(path) })).toThrow(/could not rename .*\(EIO\)/);
    expect(drainTotal()).toBe(20);
  });

  it('between the snapshot that names a staged spill file and its rename: the next open finishes it', () => {
    const first = open().spool;
    first.snapshot(Array.from({ length: 20 }, (_, i) => record(`user-${i}`)));
    first.close();
    expect(() => open(memory(5), { fs: crashBeforeRenameTo(`${path}.spill`) })).toThrow(/could not rename .*\(EIO\)/);
    expect(existsSync(`${path}.spill.next`)).toBe(true);
    expect(drainTotal()).toBe(20);
    expect(existsSync(`${path}.spill.next`)).toBe(false);
  });
});

describe('Spool: the lock', () => {
  const lockPath = () => `${path}.lock`;
  const holder = (fields: Record<string, unknown>) =>
    `${JSON.stringify({ kanaMeterLock: 1, host: hostname(), token: 'x', createdAt: 1, ...fields })}\n`;
  const deadPid = () => spawnSync(process.execPath, ['-e', '0']).pid as number;
  const onLinux = existsSync('/proc/self/stat');

  it('one owner per spool within a process: a second Spool is refused until the first closes', () => {
    const first = open().spool;
    expect(() => open()).toThrow(
      expect.objectContaining({
        code: 'KANA_SPOOL_LOCKED',
        message: expect.stringMatching(
          /in use by another kanaMeter\(\) in this process.*close\(\) the other one first/,
        ),
      }),
    );
    first.close();
    open().spool.close();
  });

  it.each([
    ['a dead process (0.1 format)', () => String(deadPid()), /process \d+, is gone/],
    ['a dead process', () => holder({ pid: deadPid() }), /process \d+, is gone/],
    ['this process, which does not hold it (a reused pid)', () => holder({ pid: process.pid }), /names this process/],
    ['a boot before the last one', () => holder({ pid: 1, bootId: 'another-boot' }), /ran before the last reboot/],
  ])('takes over a lock left by %s', (_name, content, reason) => {
    writeFileSync(lockPath(), content());
    const { spool, opened } = open();
    expect(opened.recoveredLock).toMatch(reason);
    expect(JSON.parse(readFileSync(lockPath(), 'utf8'))).toMatchObject({ pid: process.pid });
    spool.close();
  });

  it.runIf(onLinux)('takes over a lock whose pid now belongs to another process (pid 1 is alive)', () => {
    writeFileSync(lockPath(), holder({ pid: 1, startTicks: 123_456_789 }));
    const { spool, opened } = open();
    expect(opened.recoveredLock).toMatch(/pid 1 now belongs to another process/);
    spool.close();
  });

  it.runIf(onLinux)('takes over a 0.1 lock whose live process started after the lock was written', () => {
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
    try {
      writeFileSync(lockPath(), String(sleeper.pid));
      const anHourAgo = new Date(Date.now() - 3_600_000);
      fs.utimesSync(lockPath(), anHourAgo, anHourAgo);
      const { spool, opened } = open();
      expect(opened.recoveredLock).toMatch(/started after the lock was written/);
      spool.close();
    } finally {
      sleeper.kill();
    }
  });

  it('an empty lock: taken over once older than a few seconds, refused with advice before', () => {
    writeFileSync(lockPath(), '');
    expect(() => open()).toThrow(/lock .*usage\.spool\.lock is empty and was written less than 5 s ago.*Retry/);
    const aMinuteAgo = new Date(Date.now() - 60_000);
    fs.utimesSync(lockPath(), aMinuteAgo, aMinuteAgo);
    const { spool, opened } = open();
    expect(opened.recoveredLock).toMatch(/empty/);
    spool.close();
  });

  it.each([
    ['a live process it cannot prove gone (0.1 format, pid 1)', () => '1', /in use by process 1\b/],
    ['a process on another host', () => holder({ pid: 4242, host: 'elsewhere' }), /process 4242 on host elsewhere/],
    ['something that is not a kana-meter lock', () => 'hello', /is not a kana-meter lock; it was left untouched/],
  ])('refuses a lock held by %s, naming the lock file and what to do', (_name, content, message) => {
    writeFileSync(lockPath(), content());
    const error = (() => {
      try {
        open();
      } catch (caught) {
        return caught as SpoolError;
      }
    })();
    expect(error).toBeInstanceOf(SpoolError);
    expect(error?.code).toBe('KANA_SPOOL_LOCKED');
    expect(error?.message).toMatch(message);
    expect(error?.message).toContain(lockPath());
    expect(readFileSync(lockPath(), 'utf8')).toBe(content());
  });

  it('an unreadable lock gets a clear error naming it', () => {
    writeFileSync(lockPath(), holder({ pid: 4242 }));
    const unreadable = faulty({
      openSync: ((file: string, ...rest: unknown[]) => {
        if (file === lockPath()) throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
        return (fs.openSync as (...args: unknown[]) => number)(file, ...rest);
      }) as SpoolFileSystem['openSync'],
    });
    expect(() => open(memory(), { fs: unreadable })).toThrow(
      /cannot read the spool's lock .*usage\.spool\.lock \(EACCES\).*If none does, delete/,
    );
  });
});
