// The spool: a file of usage Kana has not confirmed, replayed on the next start; every write leaves it readable.

import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  statSync,
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
  /** Spilled: written because the queue was full, so it is not in memory. */
  s?: 1;
}

const HEADER = '{"kanaMeterSpool":1}\n';

/**
 * Format: a header line, then one JSON record per line. Snapshots are written to a temporary file,
 * fsync'd and renamed over the spool; appends go to the end. A crash mid-append leaves at most a
 * torn last line, which loading ignores. A lock file keeps two processes off one spool.
 */
export class Spool {
  readonly path: string;
  readonly #lockPath: string;
  #fd: number | undefined;
  /** Bytes at the start of the file whose records are all in memory (or delivered). */
  #inMemoryUpTo = 0;
  /** Spilled records after #inMemoryUpTo, not in memory. */
  #spilled = 0;

  private constructor(path: string) {
    this.path = path;
    this.#lockPath = `${path}.lock`;
  }

  /** Locks and reads the spool (creating it if absent). Throws a clear error on a foreign or corrupt file. */
  static open(path: string): { spool: Spool; records: SpoolRecord[] } {
    const absolute = resolve(path);
    if (!existsSync(dirname(absolute))) {
      throw new TypeError(`kana-meter: option \`spool.path\`: the directory ${dirname(absolute)} does not exist.`);
    }
    const spool = new Spool(absolute);
    spool.#lock();
    try {
      const records = existsSync(absolute) ? parseSpool(absolute, readFileSync(absolute, 'utf8')) : [];
      if (!existsSync(absolute) || statSync(absolute).size === 0) {
        spool.snapshot([]);
      } else {
        spool.#fd = openSync(absolute, 'a');
        spool.#inMemoryUpTo = statSync(absolute).size;
      }
      return { spool, records };
    } catch (error) {
      spool.close();
      throw error;
    }
  }

  /** Spilled records in the file that are not in memory. */
  get spilledCount(): number {
    return this.#spilled;
  }

  /** Appends records. `spilled`: they are kept only here, not in memory. */
  append(records: readonly SpoolRecord[], spilled = false): void {
    let text = '';
    for (const record of records) text += `${JSON.stringify(toWire(record, spilled))}\n`;
    this.#append(text);
    if (spilled) this.#spilled += records.length;
  }

  /** Replaces the file with `records` (what memory holds) plus the spilled records not yet taken back. */
  snapshot(records: readonly SpoolRecord[]): void {
    const spilled = this.#readSpilledLines();
    let text = HEADER;
    for (const record of records) text += `${JSON.stringify(toWire(record, false))}\n`;
    const inMemoryUpTo = Buffer.byteLength(text);
    const temporary = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(temporary, 'w');
    try {
      writeSync(fd, text + spilled.join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, this.path);
    syncDirectory(dirname(this.path));
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = openSync(this.path, 'a');
    this.#inMemoryUpTo = inMemoryUpTo;
    this.#spilled = spilled.length;
  }

  /** Takes the spilled records back into memory: from now on they count as in memory. */
  takeSpilled(): SpoolRecord[] {
    const lines = this.#readSpilledLines();
    this.#inMemoryUpTo = statSync(this.path).size;
    this.#spilled = 0;
    return lines.map((line) => fromWire(JSON.parse(line) as WireRecord));
  }

  /** Flushes to disk, closes the file and releases the lock. Idempotent. */
  close(): void {
    if (this.#fd !== undefined) {
      fsyncSync(this.#fd);
      closeSync(this.#fd);
      this.#fd = undefined;
    }
    try {
      if (readFileSync(this.#lockPath, 'utf8') === String(process.pid)) unlinkSync(this.#lockPath);
    } catch {
      // Already released.
    }
  }

  #append(text: string): void {
    if (this.#fd === undefined) throw new Error('kana-meter: the spool is closed');
    writeSync(this.#fd, text);
  }

  /** Spilled lines after the in-memory part of the file. */
  #readSpilledLines(): string[] {
    if (this.#spilled === 0) return [];
    const size = statSync(this.path).size;
    const buffer = Buffer.alloc(size - this.#inMemoryUpTo);
    const fd = openSync(this.path, 'r');
    try {
      readSync(fd, buffer, 0, buffer.length, this.#inMemoryUpTo);
    } finally {
      closeSync(fd);
    }
    return buffer
      .toString('utf8')
      .split('\n')
      .filter((line) => (parseWire(line)?.s ?? 0) === 1)
      .map((line) => `${line}\n`);
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

function parseSpool(path: string, text: string): SpoolRecord[] {
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

function parseWire(line: string): WireRecord | undefined {
  try {
    return JSON.parse(line) as WireRecord;
  } catch {
    return undefined;
  }
}

function parseRecord(line: string): SpoolRecord | undefined {
  const wire = parseWire(line);
  const valid =
    wire !== undefined &&
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
  return valid ? fromWire(wire as WireRecord) : undefined;
}

function toWire(record: SpoolRecord, spilled: boolean): WireRecord {
  const wire: WireRecord = {
    u: record.userId,
    f: record.featureId,
    d: record.delta,
    n: record.events,
    t: record.firstCapturedAt,
  };
  if (spilled) wire.s = 1;
  return wire;
}

function fromWire(wire: WireRecord): SpoolRecord {
  return { userId: wire.u, featureId: wire.f, delta: wire.d, events: wire.n, firstCapturedAt: wire.t };
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
