// The spool: files of usage Kana has not confirmed, replayed on the next start; every write leaves them readable.

import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, resolve } from 'node:path';

/** One line of the spool: usage for a (user, feature) key. */
export interface SpoolRecord {
  userId: string;
  featureId: string;
  delta: number;
  events: number;
  firstCapturedAt: number;
}

interface WireRecord {
  u: string;
  f: string;
  d: number;
  n: number;
  t: number;
}

const HEADER = '{"kanaMeterSpool":1}\n';

/**
 * Two files, same format (a header line, then one JSON record per line):
 * - `path`: a snapshot of the usage held in memory, rewritten atomically (temporary file, fsync,
 *   rename), plus the events appended after it in write-ahead mode;
 * - `path.spill`: usage that did not fit in memory (`maxPendingKeys`), appended, and emptied once
 *   it is back in memory and in a snapshot.
 * A crash mid-append leaves at most a torn last line, which loading ignores. A lock file keeps
 * two processes off one spool.
 */
export class Spool {
  readonly path: string;
  readonly #spillPath: string;
  readonly #lockPath: string;
  #fd: number | undefined;
  #spillFd: number | undefined;
  #spilled = 0;

  private constructor(path: string) {
    this.path = path;
    this.#spillPath = `${path}.spill`;
    this.#lockPath = `${path}.lock`;
  }

  /**
   * Locks and reads the spool, creating it if absent. Throws a clear error on a foreign or corrupt
   * file, and leaves it untouched.
   */
  static open(path: string): { spool: Spool; records: SpoolRecord[] } {
    const absolute = resolve(path);
    if (!existsSync(dirname(absolute))) {
      throw new TypeError(`kana-meter: option \`spool.path\`: the directory ${dirname(absolute)} does not exist.`);
    }
    const spool = new Spool(absolute);
    spool.#lock();
    try {
      const records = [...readSpoolFile(absolute), ...readSpoolFile(spool.#spillPath)];
      // Everything read is now in memory: one snapshot holds it all, and the spill file starts empty.
      spool.snapshot(records);
      replaceFile(spool.#spillPath, HEADER);
      spool.#spillFd = openSync(spool.#spillPath, 'a');
      return { spool, records };
    } catch (error) {
      spool.close();
      throw error;
    }
  }

  /** Records in the spill file, not in memory. */
  get spilledCount(): number {
    return this.#spilled;
  }

  /** Appends one record: to the snapshot's file (write-ahead), or to the spill file (`spilled`). */
  append(record: SpoolRecord, spilled: boolean): void {
    const fd = spilled ? this.#spillFd : this.#fd;
    if (fd === undefined) throw new Error('kana-meter: the spool is closed');
    writeSync(fd, `${JSON.stringify(toWire(record))}\n`);
    if (spilled) this.#spilled++;
  }

  /** Replaces the snapshot with `records`, what memory holds now. */
  snapshot(records: readonly SpoolRecord[]): void {
    let text = HEADER;
    for (const record of records) text += `${JSON.stringify(toWire(record))}\n`;
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
    replaceFile(this.path, text);
    this.#fd = openSync(this.path, 'a');
  }

  /** Reads the spilled records. Call clearSpilled() once a snapshot holds them. */
  readSpilled(): SpoolRecord[] {
    return readSpoolFile(this.#spillPath);
  }

  clearSpilled(): void {
    if (this.#spillFd !== undefined) closeSync(this.#spillFd);
    this.#spillFd = undefined;
    replaceFile(this.#spillPath, HEADER);
    this.#spillFd = openSync(this.#spillPath, 'a');
    this.#spilled = 0;
  }

  /** Flushes to disk, closes the files and releases the lock. Idempotent. */
  close(): void {
    for (const fd of [this.#fd, this.#spillFd]) {
      if (fd === undefined) continue;
      fsyncSync(fd);
      closeSync(fd);
    }
    this.#fd = undefined;
    this.#spillFd = undefined;
    try {
      if (readFileSync(this.#lockPath, 'utf8') === String(process.pid)) unlinkSync(this.#lockPath);
    } catch {
      // Already released.
    }
  }

  #lock(): void {
    try {
      writeFileSync(this.#lockPath, String(process.pid), { flag: 'wx' });
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number(readFileSync(this.#lockPath, 'utf8'));
    if (Number.isInteger(holder) && holder !== process.pid && isAlive(holder)) {
      throw new Error(
        `kana-meter: the spool ${this.path} is in use by process ${holder}; give each process its own spool.path.`,
      );
    }
    // A lock left by a process that died: take it over.
    writeFileSync(this.#lockPath, String(process.pid));
  }
}

function readSpoolFile(path: string): SpoolRecord[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  if (text === '') return [];
  const lines = text.split('\n');
  // A crash in the middle of an append leaves a last line without its newline: it never counted.
  lines.pop();
  if (lines[0] !== HEADER.trimEnd()) {
    throw new Error(
      `kana-meter: ${path} is not a kana-meter spool (its first line is not ${HEADER.trimEnd()}). It was left untouched: point spool.path at another file, or move this one away.`,
    );
  }
  return lines.slice(1).map((line, index) => {
    const record = parseRecord(line);
    if (!record) {
      throw new Error(
        `kana-meter: the spool ${path} is corrupt at line ${index + 2}: ${JSON.stringify(line.slice(0, 80))}. It was left untouched, with the usage it holds: repair or move it away, then restart.`,
      );
    }
    return record;
  });
}

function parseRecord(line: string): SpoolRecord | undefined {
  let wire: WireRecord;
  try {
    wire = JSON.parse(line) as WireRecord;
  } catch {
    return undefined;
  }
  const valid =
    typeof wire === 'object' &&
    wire !== null &&
    typeof wire.u === 'string' &&
    wire.u !== '' &&
    typeof wire.f === 'string' &&
    wire.f !== '' &&
    Number.isSafeInteger(wire.d) &&
    wire.d >= 1 &&
    Number.isSafeInteger(wire.n) &&
    wire.n >= 0 &&
    Number.isFinite(wire.t);
  return valid
    ? { userId: wire.u, featureId: wire.f, delta: wire.d, events: wire.n, firstCapturedAt: wire.t }
    : undefined;
}

function toWire(record: SpoolRecord): WireRecord {
  return { u: record.userId, f: record.featureId, d: record.delta, n: record.events, t: record.firstCapturedAt };
}

/** Writes a whole file atomically: a temporary file, fsync'd, renamed over it, the directory fsync'd. */
function replaceFile(path: string, text: string): void {
  const temporary = `${path}.${process.pid}.tmp`;
  const fd = openSync(temporary, 'w');
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  syncDirectory(dirname(path));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Makes a rename durable: fsync the directory entry too (a no-op where the platform refuses). */
function syncDirectory(directory: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(directory, 'r');
    fsyncSync(fd);
  } catch {
    // Some platforms cannot fsync a directory; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
