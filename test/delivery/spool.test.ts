// The spool file: format, crash leftovers, corrupt and foreign files, the lock.

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Spool, type SpoolRecord } from '../../src/delivery/spool.js';

let directory: string;
let path: string;
const record = (userId: string, delta = 1): SpoolRecord => ({
  userId,
  featureId: 'api-calls',
  delta,
  events: delta,
  firstCapturedAt: 1_700_000_000_000,
});

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'kana-spool-'));
  path = join(directory, 'usage.spool');
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

describe('Spool', () => {
  it('creates an empty spool with its header, and locks it', () => {
    const { spool, records } = Spool.open(path);
    expect(records).toEqual([]);
    expect(readFileSync(path, 'utf8')).toBe('{"kanaMeterSpool":1}\n');
    expect(readFileSync(`${path}.lock`, 'utf8')).toBe(String(process.pid));
    spool.close();
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it('gives back what was appended and snapshotted, on the next open', () => {
    const first = Spool.open(path).spool;
    first.snapshot([record('u1', 3)]);
    first.append(record('u2'), false);
    first.append(record('spilled'), true);
    first.close();
    const { spool, records } = Spool.open(path);
    expect(records).toEqual([record('u1', 3), record('u2'), record('spilled')]);
    // All of it is in one snapshot now, and the spill file is empty.
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(4);
    expect(readFileSync(`${path}.spill`, 'utf8')).toBe('{"kanaMeterSpool":1}\n');
    spool.close();
  });

  it('ignores a torn last line, as a crash in the middle of an append leaves it', () => {
    writeFileSync(path, '{"kanaMeterSpool":1}\n{"u":"u1","f":"api-calls","d":2,"n":2,"t":1}\n{"u":"u2","f":"ap');
    const { spool, records } = Spool.open(path);
    expect(records).toEqual([{ userId: 'u1', featureId: 'api-calls', delta: 2, events: 2, firstCapturedAt: 1 }]);
    spool.close();
  });

  it('refuses a corrupt spool with a clear error, and leaves it untouched', () => {
    const corrupt =
      '{"kanaMeterSpool":1}\n{"u":"u1","f":"api-calls","d":2,"n":2,"t":1}\nnot json\n{"u":"u2","f":"x","d":1,"n":1,"t":1}\n';
    writeFileSync(path, corrupt);
    expect(() => Spool.open(path)).toThrow(/spool .*usage\.spool is corrupt at line 3: "not json".*left untouched/);
    expect(readFileSync(path, 'utf8')).toBe(corrupt);
    expect(existsSync(`${path}.lock`)).toBe(false);
  });

  it.each([
    ['a negative delta', '{"u":"u1","f":"f","d":-1,"n":1,"t":1}'],
    ['a numeric user id', '{"u":124,"f":"f","d":1,"n":1,"t":1}'],
    ['a missing feature', '{"u":"u1","d":1,"n":1,"t":1}'],
  ])('refuses a record with %s', (_name, line) => {
    writeFileSync(path, `{"kanaMeterSpool":1}\n${line}\n`);
    expect(() => Spool.open(path)).toThrow(/corrupt at line 2/);
  });

  it('refuses a foreign file, and leaves it untouched', () => {
    writeFileSync(path, 'user,feature\nu1,api-calls\n');
    expect(() => Spool.open(path)).toThrow(/is not a kana-meter spool .*left untouched/);
    expect(readFileSync(path, 'utf8')).toBe('user,feature\nu1,api-calls\n');
  });

  it('refuses a spool locked by a live process, and takes over a dead one', () => {
    writeFileSync(`${path}.lock`, '1'); // pid 1 is alive
    expect(() => Spool.open(path)).toThrow(/in use by process 1/);
    writeFileSync(`${path}.lock`, '999999999');
    const { spool } = Spool.open(path);
    expect(readFileSync(`${path}.lock`, 'utf8')).toBe(String(process.pid));
    spool.close();
  });

  it('refuses a directory that does not exist', () => {
    expect(() => Spool.open(join(directory, 'missing', 'usage.spool'))).toThrow(/spool.path.*does not exist/);
  });

  it('keeps spilled records apart: snapshots do not touch them until they are cleared', () => {
    const { spool } = Spool.open(path);
    spool.append(record('spilled-1'), true);
    spool.append(record('spilled-2'), true);
    expect(spool.spilledCount).toBe(2);
    spool.snapshot([record('in-memory', 5)]);
    expect(spool.spilledCount).toBe(2);
    expect(spool.readSpilled().map((r) => r.userId)).toEqual(['spilled-1', 'spilled-2']);
    spool.clearSpilled();
    expect(spool.spilledCount).toBe(0);
    expect(spool.readSpilled()).toEqual([]);
    expect(readFileSync(path, 'utf8')).toBe(
      '{"kanaMeterSpool":1}\n{"u":"in-memory","f":"api-calls","d":5,"n":5,"t":1700000000000}\n',
    );
    spool.close();
  });

  it('refuses a corrupt spill file too', () => {
    writeFileSync(`${path}.spill`, '{"kanaMeterSpool":1}\n{"u":"u1"}\n');
    expect(() => Spool.open(path)).toThrow(/usage\.spool\.spill is corrupt at line 2/);
  });

  it('leaves no temporary file behind after a snapshot', () => {
    const { spool } = Spool.open(path);
    spool.snapshot([record('u1')]);
    spool.close();
    expect(existsSync(`${path}.${process.pid}.tmp`)).toBe(false);
  });
});
