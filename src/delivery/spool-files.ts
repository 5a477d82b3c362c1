// The spool's file operations: exclusive 0600 creation, no symbolic links followed, every write checked, lines read in chunks.

import { randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs';
import { basename, dirname } from 'node:path';
import { SpoolError } from '../config/errors.js';
import { MAX_LINE_BYTES } from './spool-format.js';

/** The filesystem calls the spool makes: node:fs, or a wrapper that injects faults in tests. */
export type SpoolFileSystem = Pick<
  typeof nodeFs,
  | 'openSync'
  | 'readSync'
  | 'writeSync'
  | 'fsyncSync'
  | 'ftruncateSync'
  | 'fstatSync'
  | 'lstatSync'
  | 'closeSync'
  | 'renameSync'
  | 'linkSync'
  | 'unlinkSync'
  | 'readdirSync'
>;

export const defaultFileSystem: SpoolFileSystem = nodeFs;

const { O_RDONLY, O_RDWR, O_WRONLY, O_CREAT, O_EXCL } = nodeFs.constants;
// Where the platform lacks them (Windows), 0: exclusive creation still refuses an existing link.
const O_NOFOLLOW = nodeFs.constants.O_NOFOLLOW ?? 0;
const O_NONBLOCK = nodeFs.constants.O_NONBLOCK ?? 0;

/** Every file the spool creates: readable and writable by its owner only (it holds user ids and usage). */
export const FILE_MODE = 0o600;

const CHUNK_BYTES = 64 * 1024;

/** `<path>.<16 random hex digits>.tmp`: no other process can guess it and plant a link there first. */
export function temporaryPath(path: string): string {
  return `${path}.${randomBytes(8).toString('hex')}.tmp`;
}

/** Matches the names temporaryPath() gives for `path`, so a crash's leftovers can be removed. */
export function isTemporaryOf(path: string, name: string): boolean {
  const base = basename(path);
  return name.startsWith(`${base}.`) && /^\.[0-9a-f]{16}\.tmp$/.test(name.slice(base.length));
}

/** Creates a new file, 0600, failing if anything (a link included) is already there. */
export function createExclusive(fs: SpoolFileSystem, path: string, write = true): number {
  const access = write ? O_RDWR : O_WRONLY;
  try {
    return fs.openSync(path, access | O_CREAT | O_EXCL | O_NOFOLLOW, FILE_MODE);
  } catch (error) {
    throw writeFailed(path, 'create', error);
  }
}

/**
 * Opens an existing spool file for reading (and writing, with `write`), or undefined when there is
 * none. A symbolic link, a FIFO or device, a file with other hard links, or one that another user
 * owns is refused: the spool only ever reads and writes files it created.
 */
export function openExisting(fs: SpoolFileSystem, path: string, write: boolean): number | undefined {
  let fd: number;
  try {
    fd = fs.openSync(path, (write ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP' || code === 'EMLINK') {
      throw new SpoolError(
        'KANA_SPOOL_UNSAFE',
        path,
        `kana-meter: ${path} is a symbolic link; the spool never follows one. Remove the link, or point spool.path at a file in a directory only this service can write to.`,
        error,
      );
    }
    throw new SpoolError(
      code === 'EACCES' || code === 'EPERM' ? 'KANA_SPOOL_UNSAFE' : 'KANA_SPOOL_WRITE_FAILED',
      path,
      `kana-meter: cannot open ${path} (${code ?? String(error)}). Check its owner and permissions, or point spool.path elsewhere.`,
      error,
    );
  }
  try {
    checkOwnFile(fs, fd, path);
    return fd;
  } catch (error) {
    fs.closeSync(fd);
    throw error;
  }
}

function checkOwnFile(fs: SpoolFileSystem, fd: number, path: string): void {
  const stat = fs.fstatSync(fd);
  const problem = !stat.isFile()
    ? 'is not a regular file'
    : stat.nlink > 1
      ? `has ${stat.nlink - 1} other hard link(s)`
      : process.getuid !== undefined && stat.uid !== process.getuid()
        ? `belongs to another user (uid ${stat.uid}, this process runs as uid ${process.getuid()})`
        : undefined;
  if (problem) {
    throw new SpoolError(
      'KANA_SPOOL_UNSAFE',
      path,
      `kana-meter: ${path} ${problem}; the spool only reads and writes files it created. It was left untouched: move it away, or point spool.path elsewhere.`,
    );
  }
}

/** Writes all of `data` at `position`, however many calls it takes; a call that writes nothing is an error. */
export function writeFully(fs: SpoolFileSystem, fd: number, path: string, data: Buffer, position: number): void {
  let written = 0;
  while (written < data.length) {
    let count: number;
    try {
      count = fs.writeSync(fd, data, written, data.length - written, position + written);
    } catch (error) {
      throw writeFailed(path, 'write', error);
    }
    if (!(count > 0)) {
      throw new SpoolError(
        'KANA_SPOOL_SHORT_WRITE',
        path,
        `kana-meter: ${path} took ${written} of ${data.length} bytes, then none (is the filesystem full?)`,
      );
    }
    written += count;
  }
}

export function syncFile(fs: SpoolFileSystem, fd: number, path: string): void {
  try {
    fs.fsyncSync(fd);
  } catch (error) {
    throw writeFailed(path, 'fsync', error);
  }
}

/** Cuts a file back to `size`: what a failed or torn append left after it goes. */
export function truncateFile(fs: SpoolFileSystem, fd: number, path: string, size: number): void {
  try {
    fs.ftruncateSync(fd, size);
  } catch (error) {
    throw writeFailed(path, 'truncate', error);
  }
}

/** Renames `from` over `to` (atomic: `to` is the old file or the new one, never a mix) and makes it durable. */
export function renameDurably(fs: SpoolFileSystem, from: string, to: string): void {
  try {
    fs.renameSync(from, to);
  } catch (error) {
    throw writeFailed(to, 'rename', error);
  }
  syncDirectory(fs, dirname(to));
}

/** Makes a rename durable: fsync the directory entry too (a no-op where the platform refuses). */
function syncDirectory(fs: SpoolFileSystem, directory: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(directory, O_RDONLY);
    fs.fsyncSync(fd);
  } catch {
    // Some platforms cannot fsync a directory; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export function closeQuietly(fs: SpoolFileSystem, fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    fs.closeSync(fd);
  } catch {
    // Nothing to do: the descriptor is gone either way.
  }
}

export function unlinkQuietly(fs: SpoolFileSystem, path: string): void {
  try {
    fs.unlinkSync(path);
  } catch {
    // Already gone.
  }
}

export function writeFailed(path: string, operation: string, error: unknown): SpoolError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? String(error);
  return new SpoolError('KANA_SPOOL_WRITE_FAILED', path, `kana-meter: could not ${operation} ${path} (${code})`, error);
}

/** Text accumulated and written in chunks at increasing positions of one file. */
export class ChunkedWriter {
  readonly #fs: SpoolFileSystem;
  readonly #fd: number;
  readonly #path: string;
  #parts: string[] = [];
  #bufferedBytes = 0;
  /** Bytes written to the file so far (where the next chunk goes). */
  size: number;

  constructor(fs: SpoolFileSystem, fd: number, path: string, position = 0) {
    this.#fs = fs;
    this.#fd = fd;
    this.#path = path;
    this.size = position;
  }

  write(text: string): void {
    this.#parts.push(text);
    this.#bufferedBytes += text.length;
    if (this.#bufferedBytes >= CHUNK_BYTES) this.flush();
  }

  flush(): void {
    if (this.#parts.length === 0) return;
    const data = Buffer.from(this.#parts.join(''), 'utf8');
    this.#parts = [];
    this.#bufferedBytes = 0;
    writeFully(this.#fs, this.#fd, this.#path, data, this.size);
    this.size += data.length;
  }
}

/** Where reading lines stopped. */
export interface LinesRead {
  /** Offset of the first line not consumed (the one refused, or the end). */
  next: number;
  /** Every complete line up to `end` was consumed. */
  done: boolean;
}

/**
 * Reads the complete lines of a file from `start` to `end` (the file's end when undefined), one
 * 64 KiB chunk at a time, and hands each to `onLine` with the offset just past it; stops before a
 * line `onLine` refuses, or once `maxBytes` were consumed. Bytes after the last newline (a torn
 * last append) are not a line. Memory: one chunk and one line, never the file.
 */
export function readLines(
  fs: SpoolFileSystem,
  fd: number,
  path: string,
  start: number,
  onLine: (line: string, lineEnd: number) => boolean,
  options: { end?: number; maxBytes?: number } = {},
): LinesRead {
  const end = options.end ?? Number.POSITIVE_INFINITY;
  const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  let carry: Buffer | undefined;
  /** Offset of the first byte of `carry` (or of the chunk when there is none): the current line's start. */
  let lineStart = start;
  let position = start;
  while (position < end) {
    let count: number;
    try {
      count = fs.readSync(fd, chunk, 0, Math.min(CHUNK_BYTES, end - position), position);
    } catch (error) {
      throw new SpoolError('KANA_SPOOL_WRITE_FAILED', path, `kana-meter: could not read ${path}`, error);
    }
    if (count === 0) break;
    const chunkStart = position;
    position += count;
    let from = 0;
    for (;;) {
      const newline = chunk.indexOf(10, from);
      if (newline === -1 || newline >= count) break;
      const piece = chunk.subarray(from, newline);
      const line = (carry ? Buffer.concat([carry, piece]) : piece).toString('utf8');
      carry = undefined;
      const lineEnd = chunkStart + newline + 1;
      if (!onLine(line, lineEnd)) return { next: lineStart, done: false };
      lineStart = lineEnd;
      from = newline + 1;
      if (lineStart - start >= maxBytes) return { next: lineStart, done: lineStart >= end };
    }
    if (from < count) {
      const rest = chunk.subarray(from, count);
      carry = carry ? Buffer.concat([carry, rest]) : Buffer.from(rest);
      if (carry.length > MAX_LINE_BYTES) {
        throw new SpoolError(
          'KANA_SPOOL_CORRUPT',
          path,
          `kana-meter: the spool ${path} is corrupt at byte ${lineStart}: a line longer than ${MAX_LINE_BYTES} bytes. It was left untouched, with the usage it holds: repair or move it away, then restart.`,
        );
      }
    }
  }
  return { next: lineStart, done: true };
}

/** The offset just past the file's last newline: what a torn last append must be cut back to. */
export function endOfLastLine(fs: SpoolFileSystem, fd: number, path: string, size: number): number {
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  let position = size;
  while (position > 0) {
    const length = Math.min(CHUNK_BYTES, position);
    position -= length;
    let count: number;
    try {
      count = fs.readSync(fd, chunk, 0, length, position);
    } catch (error) {
      throw new SpoolError('KANA_SPOOL_WRITE_FAILED', path, `kana-meter: could not read ${path}`, error);
    }
    const newline = chunk.subarray(0, count).lastIndexOf(10);
    if (newline !== -1) return position + newline + 1;
  }
  return 0;
}
