// The audit trail's file: appends batches of lines asynchronously, rotates by size (only the current file is written), survives a full disk.

import { constants, promises as fs, type promises as fsp } from 'node:fs';

/** Size at which the current file is rotated: 64 MiB. */
export const DEFAULT_AUDIT_MAX_BYTES = 64 * 1024 * 1024;
/** Rotated files kept beside the current one (`path.1` newest … `path.4` oldest). */
export const DEFAULT_AUDIT_MAX_FILES = 4;

export interface AuditFileOptions {
  readonly path: string;
  readonly maxBytes: number;
  readonly maxFiles: number;
}

/**
 * One open file at a time, appended to with one write in flight. When a write would take the file
 * past `maxBytes`, it is renamed to `path.1` (older ones shift up to `path.<maxFiles>`, the last is
 * removed) and a new file is started. A write that fails (a full disk, an unwritable path) rejects;
 * the next one opens the file again. A write torn by a full disk is finished by a line break first,
 * so the torn line stays alone on its line (readers skip it and say so).
 */
export class AuditFile {
  readonly #options: AuditFileOptions;
  #handle: fsp.FileHandle | undefined;
  #size = 0;
  /** The last write stopped inside a line. */
  #torn = false;

  constructor(options: AuditFileOptions) {
    this.#options = options;
  }

  get path(): string {
    return this.#options.path;
  }

  /** Appends `text` (whole lines, each ending in \n). Rejects with the filesystem's error. */
  async append(text: string): Promise<void> {
    let data = Buffer.from(this.#torn ? `\n${text}` : text);
    if (this.#handle !== undefined && this.#size > 0 && this.#size + data.length > this.#options.maxBytes) {
      await this.#rotate();
      // A torn line ends the old file: the new one starts clean.
      data = Buffer.from(text);
    }
    const handle = await this.#open();
    let offset = 0;
    try {
      while (offset < data.length) {
        const { bytesWritten } = await handle.write(data, offset, data.length - offset);
        if (bytesWritten === 0) throw Object.assign(new Error('the filesystem accepted no bytes'), { code: 'EIO' });
        offset += bytesWritten;
        this.#size += bytesWritten;
      }
      this.#torn = false;
    } catch (error) {
      // Part of the text reached the file: it ends inside a line.
      if (offset > 0) this.#torn = true;
      // Opened again on the next write: the disk may have room by then, or the file a new owner.
      await this.#closeHandle();
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.#closeHandle();
  }

  async #open(): Promise<fsp.FileHandle> {
    if (this.#handle !== undefined) return this.#handle;
    // O_NOFOLLOW: a symbolic link planted at the path is not followed.
    const handle = await fs.open(
      this.#options.path,
      constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      this.#size = (await handle.stat()).size;
    } catch (error) {
      await handle.close().catch(() => {});
      throw error;
    }
    this.#handle = handle;
    return handle;
  }

  async #closeHandle(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await handle?.close().catch(() => {});
  }

  async #rotate(): Promise<void> {
    await this.#closeHandle();
    const { path, maxFiles } = this.#options;
    await fs.rm(`${path}.${maxFiles}`, { force: true });
    for (let i = maxFiles - 1; i >= 1; i--) await renameIfPresent(`${path}.${i}`, `${path}.${i + 1}`);
    await renameIfPresent(path, `${path}.1`);
    this.#size = 0;
    this.#torn = false;
  }
}

async function renameIfPresent(from: string, to: string): Promise<void> {
  try {
    await fs.rename(from, to);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
