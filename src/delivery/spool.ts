// The spool: files of usage Kana has not confirmed, replayed on the next start, read in bounded steps, crash-safe at every write.

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { SpoolError } from '../config/errors.js';
import {
  ChunkedWriter,
  closeQuietly,
  createExclusive,
  defaultFileSystem,
  endOfLastLine,
  isTemporaryOf,
  type LinesRead,
  openExisting,
  readLines,
  renameDurably,
  type SpoolFileSystem,
  syncFile,
  temporaryPath,
  truncateFile,
  unlinkQuietly,
  writeFully,
} from './spool-files.js';
import {
  mergeRecord,
  parseRecord,
  parseSnapshotHeader,
  parseSpillHeader,
  recordLine,
  type SnapshotHeader,
  type SpoolRecord,
  snapshotHeaderLine,
  spillHeaderLine,
} from './spool-format.js';
import { acquireSpoolLock, type SpoolLock } from './spool-lock.js';

export type { SpoolRecord } from './spool-format.js';

/** Takes a record into memory; false when it does not fit (`maxPendingKeys`). `earlierRun`: left by a previous process. */
export type TakeRecord = (record: SpoolRecord, earlierRun: boolean) => boolean;

export interface SpoolOpenOptions {
  /** Receives what the files hold at open, record by record, until it refuses one. */
  take: TakeRecord;
  /** What memory holds: every snapshot the spool writes on its own (at open, at the end of a round) holds it. */
  held: () => Iterable<SpoolRecord>;
  /** Write-ahead mode: each captured event is appended to the snapshot (the queue reads this back). @default false */
  writeAhead?: boolean;
  /** Takes into memory what a take-back round brought back (room was kept for it: see reservedKeys). */
  bringBack?: (taken: TakenBack[]) => void;
  /** Most spill bytes read at open (the rest comes back in rounds). @default all that fits */
  maxSpillBytes?: number;
  /** Most keys merged at once when leftover spill records are rewritten. */
  compactKeys: number;
  /** A spill file larger than this is compacted (then at twice its compacted size). @default 64 MiB */
  compactBytes?: number;
  /** The filesystem (tests inject faults here). @default node:fs */
  fs?: SpoolFileSystem;
  /** Told when a compaction ended: the spill file's path, and its size before and after, in bytes. */
  onCompacted?: (compaction: { path: string; before: number; after: number }) => void;
  /** Told of a failure: in the background (a compaction, a rename after a round is sealed), or of a take-back round (takeBackSpilled); the files stay as they were. */
  onError?: (error: unknown, during: 'background' | 'take-back') => void;
}

/** What opening found, for the log. */
export interface SpoolOpened {
  /** Why a stale lock was taken over, if one was. */
  recoveredLock: string | undefined;
  /** Records taken into memory. */
  records: number;
  /** Spill bytes left on disk, to be taken back as the queue drains. */
  spilledBytes: number;
}

/** Usage a round took back, merged per key, and how many of its events were left by an earlier run. */
export interface TakenBack {
  record: SpoolRecord;
  replayedEvents: number;
}

/**
 * A pass over the spill file's records not taken back: the first `capacity` keys come back to
 * memory (all their records, merged), the others are rewritten, merged per key, into the spill
 * file of the next epoch. With capacity 0, a compaction.
 */
interface Round {
  capacity: number;
  taken: Map<string, TakenBack>;
  leftovers: SpillWriter;
  position: number;
  /** Where the leftovers left by an earlier run end in the new file, once they are all written. */
  earlierEnd: number | undefined;
  timer: NodeJS.Immediate | undefined;
  /** Told once how the round ended: what it took back, or why it failed. */
  end: (taken: TakenBack[] | Error) => void;
}

/** The files the last run left, opened and checked, before their records are read. */
interface FilesLeft {
  /** The snapshot and its header; undefined when there is none. */
  readonly snapshotFd: number | undefined;
  readonly snapshot: (SnapshotHeader & { start: number }) | undefined;
  /** The spill file (undefined when there is none, or once the spool has taken it over) and its header. */
  spillFd: number | undefined;
  readonly spill: { epoch: number; start: number } | undefined;
  readonly spillSize: number;
  /** Where the spill records the snapshot does not hold start. */
  readonly spillFrom: number;
}

export const DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024;

/** Spill bytes one round step reads: a few milliseconds of work between two turns of the event loop. */
const ROUND_STEP_BYTES = 1024 * 1024;

/**
 * Three files beside `path`, each a header line and then one JSON record per line:
 * - `path`, the snapshot: what memory held when it was written (a temporary file, fsync'd, renamed
 *   over it), plus the events appended after it in write-ahead mode. Its header names the spill
 *   file it goes with (epoch E) and the spill records it already holds (those before byte X);
 * - `path.spill`: usage that did not fit in memory (`maxPendingKeys`), appended. It comes back in
 *   rounds: a pass takes the records of as many keys as fit back into memory and writes the rest,
 *   merged per key, into `path.spill.next` (epoch E + 1); a snapshot holding what was taken back
 *   and naming E + 1 seals the round; then `.next` is renamed over `path.spill`. A crash before
 *   the snapshot finds the old pair, after it the new one (an open finishes the rename): nothing
 *   is replayed twice, nothing lost.
 * Every file is created exclusively, 0600, never through a link; every write is checked; a failed
 * append is cut back so the file stays whole lines. `path.lock` keeps every other owner off it.
 */
export class Spool {
  readonly path: string;
  readonly writeAhead: boolean;
  readonly #spillPath: string;
  readonly #nextPath: string;
  readonly #fs: SpoolFileSystem;
  readonly #held: () => Iterable<SpoolRecord>;
  readonly #compactKeys: number;
  readonly #compactBytes: number;
  readonly #onCompacted: SpoolOpenOptions['onCompacted'];
  readonly #onError: SpoolOpenOptions['onError'];
  #lock: SpoolLock | undefined;
  /** The snapshot's descriptor (write-ahead appends go there) and its size. */
  #snapshotFd: number | undefined;
  #snapshotSize = 0;
  /** The spill file's descriptor, epoch, size (whole lines), and where its header ends. */
  #spillFd: number | undefined;
  #spillEpoch = 0;
  #spillSize = 0;
  #spillStart = 0;
  /** Spill records before this offset are in memory (taken back at open), as the snapshot says. */
  #spillTaken = 0;
  /** Spill records before this offset were left by an earlier run (counted as replayed when taken). */
  #earlierRunEnd = 0;
  #compactAt: number;
  #round: Round | undefined;
  readonly #bringBack: SpoolOpenOptions['bringBack'];
  /** What the snapshot holds beside memory, so that it is rewritten only when it differs. */
  readonly #freshness = { holdsUsage: false, stale: false, behind: false };
  /** A take-back round the queue is waiting for, and the keys it keeps free in memory meanwhile. */
  #takingBack: Promise<boolean> | undefined;
  #reservedKeys = 0;
  #roundsTakenBack = 0;

  private constructor(path: string, options: SpoolOpenOptions) {
    this.path = path;
    this.writeAhead = options.writeAhead === true;
    this.#bringBack = options.bringBack;
    this.#spillPath = `${path}.spill`;
    this.#nextPath = `${path}.spill.next`;
    this.#fs = options.fs ?? defaultFileSystem;
    this.#held = options.held;
    this.#compactKeys = options.compactKeys;
    this.#compactBytes = options.compactBytes ?? DEFAULT_COMPACT_BYTES;
    this.#compactAt = this.#compactBytes;
    this.#onCompacted = options.onCompacted;
    this.#onError = options.onError;
  }

  /**
   * Locks the spool and reads it into memory through `take`, as much as fits (and at most
   * `maxSpillBytes` of the spill file); the rest stays on disk. Throws a SpoolError on a foreign,
   * corrupt or unsafe file, and leaves it untouched.
   */
  static open(path: string, options: SpoolOpenOptions): { spool: Spool; opened: SpoolOpened } {
    const absolute = resolve(path);
    if (!existsSync(dirname(absolute))) {
      throw new TypeError(`kana-meter: option \`spool.path\`: the directory ${dirname(absolute)} does not exist.`);
    }
    const spool = new Spool(absolute, options);
    spool.#lock = acquireSpoolLock(spool.#fs, `${absolute}.lock`, absolute);
    try {
      spool.#removeTemporaryFiles();
      const records = spool.#load(options);
      spool.#freshness.holdsUsage = records > 0;
      return {
        spool,
        opened: { recoveredLock: spool.#lock.recovered, records, spilledBytes: spool.spilledBytes },
      };
    } catch (error) {
      spool.close();
      throw error;
    }
  }

  /** Spilled bytes on disk not taken back into memory yet. */
  get spilledBytes(): number {
    return this.#spillSize - this.#spillTaken;
  }

  get hasSpilled(): boolean {
    return this.#spillFd !== undefined && this.#spillTaken < this.#spillSize;
  }

  /**
   * Appends one record: to the snapshot (write-ahead), or to the spill file (`spilled`). Throws a
   * SpoolError when it is not all on disk; what a failed write left is cut off first.
   */
  append(record: SpoolRecord, spilled: boolean): void {
    if (spilled) {
      this.#append(record, true);
      return;
    }
    try {
      this.#append(record, false);
    } catch (error) {
      this.#freshness.behind = true; // the next snapshot writes it
      throw error;
    }
    this.#freshness.holdsUsage = true;
  }

  #append(record: SpoolRecord, spilled: boolean): void {
    const fd = spilled ? this.#spillFd : this.#snapshotFd;
    const path = spilled ? this.#spillPath : this.path;
    if (fd === undefined) {
      throw new SpoolError(
        'KANA_SPOOL_WRITE_FAILED',
        path,
        `kana-meter: ${path} takes no appends: it is closed, or a failed write could not be cut back (it is read again at the next start)`,
      );
    }
    const size = spilled ? this.#spillSize : this.#snapshotSize;
    const data = Buffer.from(recordLine(record), 'utf8');
    try {
      writeFully(this.#fs, fd, path, data, size);
    } catch (error) {
      // Whole lines only: a torn one would make every later line unreadable.
      try {
        truncateFile(this.#fs, fd, path, size);
      } catch {
        this.#abandon(spilled);
      }
      throw error;
    }
    if (spilled) this.#spillSize += data.length;
    else this.#snapshotSize += data.length;
  }

  /**
   * Replaces the snapshot with `records`, what memory holds now. Right after open, a spill file
   * entirely taken back is replaced by an empty one; a large one starts compacting.
   */
  snapshot(records: Iterable<SpoolRecord>): void {
    this.#writeSnapshot(records, { spill: this.#spillEpoch, taken: this.#spillTaken });
    if (this.#spillTaken === this.#spillSize && this.#spillSize > this.#spillStart) this.#replaceWithEmptySpill();
    else this.#compactIfLarge();
    this.#freshness.stale = false;
    this.#freshness.behind = false;
  }

  /** Memory holds usage the snapshot lacks (only write-ahead keeps it current event by event). */
  markBehind(): void {
    this.#freshness.behind = true;
  }

  /** Usage was delivered: a snapshot that holds usage may now hold usage the sink has. */
  delivered(): void {
    if (this.#freshness.holdsUsage) this.#freshness.stale = true;
  }

  /** The snapshot holds usage that was delivered since it was written. */
  get stale(): boolean {
    return this.#freshness.stale;
  }

  /** Rewrites the snapshot as what memory holds now (`held`), when it differs. Throws as snapshot() does. */
  refresh(): void {
    if (this.#freshness.behind || this.#freshness.stale) this.snapshot(this.#held());
  }

  /** The take-back round under way (see takeBackSpilled), if any. */
  get takingBack(): Promise<boolean> | undefined {
    return this.#takingBack;
  }

  /** Keys memory keeps free for the take-back round under way: new keys spill meanwhile, so memory stays within maxPendingKeys. */
  get reservedKeys(): number {
    return this.#reservedKeys;
  }

  /** Take-back rounds that brought spilled usage back into memory, so far. */
  get roundsTakenBack(): number {
    return this.#roundsTakenBack;
  }

  /**
   * Takes spilled usage back into memory, `capacity` keys at most: a round (see takeBack) whose
   * records go to `bringBack` once a snapshot holds them. One at a time: while a round is under
   * way, this returns it. Never rejects: a failure goes to `onError`. True when something came back.
   */
  takeBackSpilled(capacity: number): Promise<boolean> {
    this.#takingBack ??= this.#runTakeBack(capacity).finally(() => {
      this.#takingBack = undefined;
    });
    return this.#takingBack;
  }

  async #runTakeBack(capacity: number): Promise<boolean> {
    if (capacity <= 0 || !this.hasSpilled) return false;
    this.#reservedKeys = capacity;
    let taken: TakenBack[];
    try {
      taken = await this.takeBack(capacity);
    } catch (error) {
      this.#onError?.(error, 'take-back');
      return false;
    } finally {
      this.#reservedKeys = 0;
    }
    if (taken.length === 0) return false;
    this.#roundsTakenBack++;
    this.#freshness.holdsUsage = true;
    this.#bringBack?.(taken);
    return true;
  }

  /**
   * Takes spilled usage back: a round over the spill file (in steps, between turns of the event
   * loop) brings back every record of the first `capacity` keys it meets, merged, and rewrites
   * the rest. Resolves with what it took once a snapshot holds it (the caller puts it in memory at
   * once); with nothing if the round was cancelled (by close()). A compaction under way gives way.
   */
  takeBack(capacity: number): Promise<TakenBack[]> {
    this.#cancelRound();
    return new Promise((resolve, reject) => {
      const started = this.#startRound(capacity, (taken) => (taken instanceof Error ? reject(taken) : resolve(taken)));
      if (!started) resolve([]);
    });
  }

  /** Flushes to disk, closes the files and releases the lock (even when a flush fails: then it throws). Idempotent. */
  close(): void {
    this.#cancelRound();
    let failure: unknown;
    for (const [fd, path] of [
      [this.#snapshotFd, this.path],
      [this.#spillFd, this.#spillPath],
    ] as const) {
      if (fd === undefined) continue;
      try {
        syncFile(this.#fs, fd, path);
      } catch (error) {
        failure ??= error;
      }
      closeQuietly(this.#fs, fd);
    }
    this.#snapshotFd = undefined;
    this.#spillFd = undefined;
    this.#lock?.release();
    this.#lock = undefined;
    if (failure !== undefined) throw failure;
  }

  /** Writes the snapshot; returns how many records it holds. */
  #writeSnapshot(records: Iterable<SpoolRecord>, header: SnapshotHeader): number {
    const { fd, size, count } = this.#writeFile(this.path, snapshotHeaderLine(header), records);
    closeQuietly(this.#fs, this.#snapshotFd);
    this.#snapshotFd = fd;
    this.#snapshotSize = size;
    // Whoever rewrote it (a snapshot, a round's seal, a compaction): usage delivered from now on
    // must make it stale, or a crash would replay that usage at the next start.
    this.#freshness.holdsUsage = count > 0;
    return count;
  }

  #startRound(capacity: number, end: Round['end']): boolean {
    if (this.#spillFd === undefined || !this.hasSpilled) return false;
    const leftovers = new SpillWriter(
      this.#fs,
      temporaryPath(this.#spillPath),
      this.#spillEpoch + 1,
      this.#compactKeys,
    );
    const round: Round = {
      capacity,
      taken: new Map(),
      leftovers,
      position: this.#spillTaken,
      earlierEnd: this.#earlierRunEnd <= this.#spillTaken ? leftovers.mark() : undefined,
      timer: undefined,
      end,
    };
    this.#round = round;
    this.#scheduleStep(round);
    return true;
  }

  #scheduleStep(round: Round): void {
    round.timer = setImmediate(() => {
      try {
        this.#step(round);
      } catch (error) {
        this.#cancelRound();
        round.end(error instanceof Error ? error : new Error(String(error)));
      }
    });
    round.timer.unref();
  }

  /** Reads the next ROUND_STEP_BYTES of the round; at the end of the file (appends included), seals it. */
  #step(round: Round): void {
    const fd = this.#spillFd;
    if (this.#round !== round || fd === undefined) return;
    // Records left by an earlier run first, apart: they count as replayed when taken back.
    const end = round.earlierEnd === undefined ? this.#earlierRunEnd : this.#spillSize;
    const read = readLines(
      this.#fs,
      fd,
      this.#spillPath,
      round.position,
      (line, lineEnd) => {
        const record = this.#parse(line, this.#spillPath, { lineEnd });
        const key = `${record.userId}\u0000${record.featureId}`;
        const taken = round.taken.get(key);
        const replayedEvents = lineEnd <= this.#earlierRunEnd ? record.events : 0;
        if (taken) {
          mergeRecord(taken.record, record);
          taken.replayedEvents += replayedEvents;
        } else if (round.taken.size < round.capacity) {
          round.taken.set(key, { record, replayedEvents });
        } else {
          round.leftovers.add(record);
        }
        return true;
      },
      { end, maxBytes: ROUND_STEP_BYTES },
    );
    round.position = read.next;
    if (round.earlierEnd === undefined && round.position >= this.#earlierRunEnd) {
      round.earlierEnd = round.leftovers.mark();
    }
    if (round.position < this.#spillSize) this.#scheduleStep(round);
    else this.#seal(round, fd);
  }

  /**
   * Ends a round: the leftovers are staged as path.spill.next, a snapshot of memory plus what was
   * taken back names their epoch (the seal), then they are renamed into place.
   */
  #seal(round: Round, oldFd: number): void {
    this.#round = undefined;
    const before = this.#spillSize;
    const epoch = this.#spillEpoch + 1;
    const written = round.leftovers.finish(this.#nextPath);
    const taken = [...round.taken.values()];
    try {
      this.#writeSnapshot([...this.#held(), ...taken.map((entry) => entry.record)], {
        spill: epoch,
        taken: written.start,
      });
    } catch (error) {
      closeQuietly(this.#fs, written.fd);
      unlinkQuietly(this.#fs, this.#nextPath);
      throw error;
    }
    closeQuietly(this.#fs, oldFd);
    this.#useSpill(written.fd, epoch, written.start, written.size);
    this.#earlierRunEnd = round.earlierEnd ?? written.size;
    // Sealed: a failure from here on is finished by the next open.
    try {
      renameDurably(this.#fs, this.#nextPath, this.#spillPath);
    } catch (error) {
      this.#onError?.(error, 'background');
    }
    if (round.capacity === 0) {
      this.#compactAt = Math.max(this.#compactBytes, 2 * written.size);
      this.#onCompacted?.({ path: this.#spillPath, before, after: written.size });
    }
    round.end(taken);
  }

  #cancelRound(): void {
    const round = this.#round;
    if (!round) return;
    this.#round = undefined;
    if (round.timer) clearImmediate(round.timer);
    round.leftovers.abort();
    round.end([]);
  }

  /**
   * A spill file past the threshold is compacted: a round that takes nothing back, rewriting
   * every record merged per key (`compactKeys` keys at a time). The threshold then doubles, so a
   * file of distinct keys is not rewritten again and again.
   */
  #compactIfLarge(): void {
    if (this.#round || this.#spillSize < this.#compactAt) return;
    this.#compactAt = Math.max(this.#compactBytes, 2 * this.#spillSize);
    this.#startRound(0, (result) => {
      if (result instanceof Error) this.#onError?.(result, 'background');
    });
  }

  /** Reads the files left by the last run; returns the records taken into memory. */
  #load(options: SpoolOpenOptions): number {
    const files = this.#openFilesLeft();
    try {
      const fromSnapshot = this.#takeSnapshot(files, options.take);
      if (fromSnapshot.overflow) {
        this.#restageSpill(files, fromSnapshot.overflow, options.held);
        return fromSnapshot.taken;
      }
      const taken = fromSnapshot.taken + this.#takeSpill(files, options);
      this.#earlierRunEnd = this.#spillSize;
      this.snapshot(options.held());
      // A new spool: its empty spill file.
      if (this.#spillFd === undefined) this.#replaceWithEmptySpill();
      return taken;
    } finally {
      closeQuietly(this.#fs, files.snapshotFd);
      closeQuietly(this.#fs, files.spillFd);
    }
  }

  /**
   * Opens the snapshot and the spill file the last run left (finishing a rename a crash cut short),
   * reads their headers and checks that they belong together. An empty spill file counts as none.
   */
  #openFilesLeft(): FilesLeft {
    const fs = this.#fs;
    const snapshotFd = openExisting(fs, this.path, false);
    let spillFd: number | undefined;
    try {
      const snapshot = snapshotFd === undefined ? undefined : this.#readHeader(snapshotFd, this.path);
      const snapshotEpoch = snapshot?.spill ?? 0;
      this.#finishStagedSpill(snapshotEpoch);
      spillFd = openExisting(fs, this.#spillPath, true);
      let spill = spillFd === undefined ? undefined : this.#readHeader(spillFd, this.#spillPath);
      if (spill?.start === 0) {
        closeQuietly(fs, spillFd);
        spillFd = undefined;
        spill = undefined;
      }
      if (spill) this.#checkEpochs(spill.epoch, snapshotEpoch);
      this.#spillEpoch = spill?.epoch ?? snapshotEpoch;
      const spillSize = spillFd === undefined ? 0 : fs.fstatSync(spillFd).size;
      // The spill records the snapshot does not hold already (it names how far it took them, in its epoch).
      const spillFrom = spill
        ? Math.min(spillSize, Math.max(spill.start, spill.epoch === snapshotEpoch ? (snapshot?.taken ?? 0) : 0))
        : 0;
      return { snapshotFd, snapshot, spillFd, spill, spillSize, spillFrom };
    } catch (error) {
      closeQuietly(fs, snapshotFd);
      closeQuietly(fs, spillFd);
      throw error;
    }
  }

  /** A spill file older than the snapshot's is not its pair: one was replaced by hand. */
  #checkEpochs(spillEpoch: number, snapshotEpoch: number): void {
    if (spillEpoch >= snapshotEpoch) return;
    throw new SpoolError(
      'KANA_SPOOL_CORRUPT',
      this.#spillPath,
      `kana-meter: ${this.#spillPath} (epoch ${spillEpoch}) is older than the snapshot ${this.path}, which names epoch ${snapshotEpoch}: one of them was replaced by hand. Both were left untouched: restore the matching pair, or move them away.`,
    );
  }

  /**
   * Takes the snapshot's records into memory: all of them fit, unless maxPendingKeys shrank since
   * it was written; those that do not are merged into `overflow`, the next spill file.
   */
  #takeSnapshot(files: FilesLeft, take: TakeRecord): { taken: number; overflow: SpillWriter | undefined } {
    const { snapshotFd, snapshot } = files;
    const found: { taken: number; overflow: SpillWriter | undefined } = { taken: 0, overflow: undefined };
    if (snapshotFd === undefined || !snapshot) return found;
    let number = 1;
    try {
      readLines(this.#fs, snapshotFd, this.path, snapshot.start, (line, lineEnd) => {
        const record = this.#parse(line, this.path, { line: ++number, lineEnd });
        if (take(record, true)) found.taken++;
        else {
          found.overflow ??= new SpillWriter(
            this.#fs,
            temporaryPath(this.#spillPath),
            this.#spillEpoch + 1,
            this.#compactKeys,
          );
          found.overflow.add(record);
        }
        return true;
      });
    } catch (error) {
      found.overflow?.abort();
      throw error;
    }
    return found;
  }

  /**
   * Memory is full: the spill file's records join the snapshot's overflow in a new spill file,
   * staged as path.spill.next; the snapshot that no longer holds them names its epoch, and only
   * then is it renamed into place (an open after a crash between finishes it).
   */
  #restageSpill(files: FilesLeft, staged: SpillWriter, held: () => Iterable<SpoolRecord>): void {
    try {
      if (files.spillFd !== undefined) {
        this.#readSpill(files, files.spillFd, (record) => {
          staged.add(record);
          return true;
        });
      }
    } catch (error) {
      staged.abort();
      throw error;
    }
    const written = staged.finish(this.#nextPath);
    this.#useSpill(written.fd, this.#spillEpoch + 1, written.start, written.size);
    this.#earlierRunEnd = written.size;
    this.#writeSnapshot(held(), { spill: this.#spillEpoch, taken: written.start });
    renameDurably(this.#fs, this.#nextPath, this.#spillPath);
  }

  /**
   * Takes the spill file's records into memory from where the snapshot left off, as many as fit
   * (and at most maxSpillBytes); the rest stays on disk. The spool keeps the file, for appends.
   */
  #takeSpill(files: FilesLeft, options: SpoolOpenOptions): number {
    const { spillFd, spill, spillSize } = files;
    if (spillFd === undefined || !spill) return 0;
    let taken = 0;
    const take = (record: SpoolRecord) => {
      if (!options.take(record, true)) return false;
      taken++;
      return true;
    };
    const read = this.#readSpill(files, spillFd, take, options.maxSpillBytes);
    // A torn last append (a crash mid-write) is cut off before anything is appended after it.
    const end = read.done ? read.next : endOfLastLine(this.#fs, spillFd, this.#spillPath, spillSize);
    if (end !== spillSize) truncateFile(this.#fs, spillFd, this.#spillPath, end);
    this.#useSpill(spillFd, spill.epoch, spill.start, end);
    this.#spillTaken = read.next;
    files.spillFd = undefined; // the spool's now
    return taken;
  }

  /** Reads the spill file's records from where the snapshot left off; a bad line is reported by its number when read from the start. */
  #readSpill(files: FilesLeft, fd: number, onRecord: (record: SpoolRecord) => boolean, maxBytes?: number): LinesRead {
    let number = files.spillFrom === files.spill?.start ? 1 : undefined;
    const onLine = (line: string, lineEnd: number) => {
      if (number !== undefined) number++;
      return onRecord(this.#parse(line, this.#spillPath, { line: number, lineEnd }));
    };
    return readLines(this.#fs, fd, this.#spillPath, files.spillFrom, onLine, { maxBytes });
  }

  /**
   * Reads a spool file's header: the spill position a snapshot names, or a spill file's epoch,
   * and where its records start (0 for an empty file). Throws on a file that is not a spool.
   */
  #readHeader(fd: number, path: string): SnapshotHeader & { epoch: number; start: number } {
    let line: string | undefined;
    let start = 0;
    readLines(this.#fs, fd, path, 0, (first, lineEnd) => {
      line = first;
      start = lineEnd;
      return false;
    });
    if (line === undefined && this.#fs.fstatSync(fd).size === 0) return { spill: 0, taken: 0, epoch: 0, start: 0 };
    if (line !== undefined && path === this.path) {
      const snapshot = parseSnapshotHeader(line);
      if (snapshot) return { ...snapshot, epoch: 0, start };
    } else if (line !== undefined) {
      const spill = parseSpillHeader(line);
      if (spill) return { spill: 0, taken: 0, epoch: spill.epoch, start };
    }
    throw new SpoolError(
      'KANA_SPOOL_FOREIGN',
      path,
      `kana-meter: ${path} is not a kana-meter spool (its first line is not a kana-meter spool header). It was left untouched: point spool.path at another file, or move this one away.`,
    );
  }

  /** A staged spill file from a run that crashed: renamed into place if the snapshot names it, else removed. */
  #finishStagedSpill(snapshotEpoch: number): void {
    const fd = openExisting(this.#fs, this.#nextPath, false);
    if (fd === undefined) return;
    let epoch: number | undefined;
    try {
      readLines(this.#fs, fd, this.#nextPath, 0, (line) => {
        epoch = parseSpillHeader(line)?.epoch;
        return false;
      });
    } finally {
      closeQuietly(this.#fs, fd);
    }
    if (epoch === snapshotEpoch) renameDurably(this.#fs, this.#nextPath, this.#spillPath);
    else unlinkQuietly(this.#fs, this.#nextPath);
  }

  /** Reads a record line; a bad one is reported at its line number when counted from the file's start, else its byte. */
  #parse(line: string, path: string, where: { line?: number; lineEnd: number }): SpoolRecord {
    const record = parseRecord(line);
    if (record) return record;
    const at = where.line ?? `byte ${where.lineEnd - Buffer.byteLength(line) - 1}`;
    throw new SpoolError(
      'KANA_SPOOL_CORRUPT',
      path,
      `kana-meter: the spool ${path} is corrupt at ${typeof at === 'number' ? `line ${at}` : at}: ${JSON.stringify(line.slice(0, 80))}. It was left untouched, with the usage it holds: repair or move it away, then restart.`,
    );
  }

  /** Writes a whole file under a temporary name and renames it over `path`; returns its descriptor, kept open. */
  #writeFile(
    path: string,
    header: string,
    records: Iterable<SpoolRecord>,
  ): { fd: number; size: number; count: number } {
    const temporary = temporaryPath(path);
    const fd = createExclusive(this.#fs, temporary);
    try {
      const writer = new ChunkedWriter(this.#fs, fd, temporary);
      writer.write(header);
      let count = 0;
      for (const record of records) {
        writer.write(recordLine(record));
        count++;
      }
      writer.flush();
      syncFile(this.#fs, fd, temporary);
      renameDurably(this.#fs, temporary, path);
      return { fd, size: writer.size, count };
    } catch (error) {
      closeQuietly(this.#fs, fd);
      unlinkQuietly(this.#fs, temporary);
      throw error;
    }
  }

  /** Replaces the spill file by an empty one of the next epoch. */
  #replaceWithEmptySpill(): void {
    this.#cancelRound();
    const epoch = this.#spillEpoch + 1;
    const temporary = temporaryPath(this.#spillPath);
    const fd = createExclusive(this.#fs, temporary);
    try {
      const header = Buffer.from(spillHeaderLine({ epoch }), 'utf8');
      writeFully(this.#fs, fd, temporary, header, 0);
      syncFile(this.#fs, fd, temporary);
      renameDurably(this.#fs, temporary, this.#spillPath);
      closeQuietly(this.#fs, this.#spillFd);
      this.#useSpill(fd, epoch, header.length, header.length);
      this.#earlierRunEnd = header.length;
    } catch (error) {
      closeQuietly(this.#fs, fd);
      unlinkQuietly(this.#fs, temporary);
      throw error;
    }
  }

  #useSpill(fd: number, epoch: number, start: number, size: number): void {
    this.#spillFd = fd;
    this.#spillEpoch = epoch;
    this.#spillStart = start;
    this.#spillSize = size;
    this.#spillTaken = start;
  }

  /** An append that could not be cut back: that file takes no more appends (they fail, and are reported). */
  #abandon(spilled: boolean): void {
    if (spilled) {
      this.#cancelRound();
      closeQuietly(this.#fs, this.#spillFd);
      this.#spillFd = undefined;
    } else {
      closeQuietly(this.#fs, this.#snapshotFd);
      this.#snapshotFd = undefined;
    }
  }

  /** Temporary files a crash left behind (only this spool's, and only while it holds the lock). */
  #removeTemporaryFiles(): void {
    let names: string[];
    try {
      names = this.#fs.readdirSync(dirname(this.path)) as string[];
    } catch {
      return;
    }
    for (const name of names) {
      if (isTemporaryOf(this.path, name) || isTemporaryOf(this.#spillPath, name)) {
        unlinkQuietly(this.#fs, join(dirname(this.path), name));
      }
    }
  }
}

/** A spill file written in full, records merged per key in batches, then fsync'd and renamed. */
class SpillWriter {
  readonly #fs: SpoolFileSystem;
  readonly #path: string;
  readonly #fd: number;
  readonly #writer: ChunkedWriter;
  readonly #start: number;
  readonly #maxKeys: number;
  #merged = new Map<string, SpoolRecord>();

  constructor(fs: SpoolFileSystem, path: string, epoch: number, maxKeys: number) {
    this.#fs = fs;
    this.#path = path;
    this.#maxKeys = maxKeys;
    this.#fd = createExclusive(fs, path);
    this.#writer = new ChunkedWriter(fs, this.#fd, path);
    this.#writer.write(spillHeaderLine({ epoch }));
    this.#writer.flush();
    this.#start = this.#writer.size;
  }

  add(record: SpoolRecord): void {
    const key = `${record.userId}\u0000${record.featureId}`;
    const seen = this.#merged.get(key);
    if (seen) {
      mergeRecord(seen, record);
      return;
    }
    if (this.#merged.size >= this.#maxKeys) this.#drain();
    this.#merged.set(key, { ...record });
  }

  /** Writes what is left, fsyncs, renames it to `target`; the descriptor stays open for appends. */
  finish(target: string): { fd: number; start: number; size: number } {
    try {
      this.#drain();
      this.#writer.flush();
      syncFile(this.#fs, this.#fd, this.#path);
      renameDurably(this.#fs, this.#path, target);
      return { fd: this.#fd, start: this.#start, size: this.#writer.size };
    } catch (error) {
      closeQuietly(this.#fs, this.#fd);
      unlinkQuietly(this.#fs, this.#path);
      throw error;
    }
  }

  /** Writes what is merged so far; returns the file's size: where the records added next start. */
  mark(): number {
    this.#drain();
    this.#writer.flush();
    return this.#writer.size;
  }

  /** Gives up: the temporary file goes. Idempotent. */
  abort(): void {
    closeQuietly(this.#fs, this.#fd);
    unlinkQuietly(this.#fs, this.#path);
  }

  #drain(): void {
    for (const record of this.#merged.values()) this.#writer.write(recordLine(record));
    this.#merged.clear();
  }
}
