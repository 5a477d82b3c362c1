// The spool's lock: one owner per spool across processes and within one, taken atomically, recovered only from a provably gone holder.

import { randomBytes } from 'node:crypto';
import { constants, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { SpoolError } from '../config/errors.js';
import {
  closeQuietly,
  createExclusive,
  type SpoolFileSystem,
  syncFile,
  unlinkQuietly,
  writeFailed,
  writeFully,
} from './spool-files.js';

/** What a lock file says of its holder (one JSON line). */
interface LockHolder {
  kanaMeterLock: 1;
  pid: number;
  host: string;
  /** Random per Spool: tells two owners in one process apart, and a reused pid from its predecessor. */
  token: string;
  /** Linux: the boot the holder runs in, and its start time in clock ticks since boot (/proc). */
  bootId?: string;
  startTicks?: number;
  createdAt: number;
}

/** A held lock: release() removes it, if it is still this one. */
export interface SpoolLock {
  release(): void;
  /** Why a stale lock was taken over to get this one, if one was. */
  readonly recovered: string | undefined;
}

/** An empty lock older than this was left by a crash between creating and writing it (kana-meter 0.1). */
const EMPTY_LOCK_GRACE_MS = 5000;
/** Slack when comparing a process's start time (whole seconds from /proc) with a file's mtime. */
const START_TIME_SLACK_MS = 2000;
const MAX_ATTEMPTS = 5;

/** Tokens of the locks held by live Spools of this process (shared by an ESM and a CJS copy of kana-meter). */
const HELD = Symbol.for('kana-meter.spool-locks');
const shared = globalThis as { [HELD]?: Set<string> };
shared[HELD] ??= new Set();
const heldTokens: Set<string> = shared[HELD];

/**
 * Takes `lockPath` for the spool at `spoolPath`. The lock is created complete and then linked into
 * place (`link` fails if a lock is there: no two owners, no empty lock). A lock already there is
 * taken over only when its holder is provably gone (see staleReason); otherwise this throws a
 * SpoolError naming the holder and what to do.
 */
export function acquireSpoolLock(fs: SpoolFileSystem, lockPath: string, spoolPath: string): SpoolLock {
  const holder = ownIdentity();
  const token = randomBytes(16).toString('hex');
  const content = Buffer.from(`${JSON.stringify({ kanaMeterLock: 1, ...holder, token, createdAt: Date.now() })}\n`);
  const ownPath = `${lockPath}.${token.slice(0, 16)}.tmp`;
  const fd = createExclusive(fs, ownPath, false);
  let recovered: string | undefined;
  // Held from before it is linked: a lock naming this process and a token it does not hold is stale.
  heldTokens.add(token);
  let ino: number | undefined;
  try {
    try {
      writeFully(fs, fd, ownPath, content, 0);
      syncFile(fs, fd, ownPath);
    } finally {
      closeQuietly(fs, fd);
    }
    for (let attempt = 1; ; attempt++) {
      if (linkLock(fs, ownPath, lockPath, content)) break;
      const inspected = inspectLock(fs, lockPath, spoolPath);
      if (attempt === MAX_ATTEMPTS) {
        throw (
          inspected?.refusal() ??
          new SpoolError(
            'KANA_SPOOL_LOCKED',
            lockPath,
            `kana-meter: could not take the spool's lock ${lockPath} in ${MAX_ATTEMPTS} attempts: other processes are taking and releasing it. Give each process its own spool.path.`,
          )
        );
      }
      if (inspected === undefined) continue; // released meanwhile
      if (inspected.stale === undefined) throw inspected.refusal();
      if (removeStaleLock(fs, lockPath, inspected.ino)) recovered = inspected.stale;
    }
    ino = fs.lstatSync(lockPath).ino;
  } finally {
    unlinkQuietly(fs, ownPath);
    if (ino === undefined) heldTokens.delete(token);
  }
  const lockIno = ino;
  return {
    recovered,
    release() {
      if (!heldTokens.delete(token)) return;
      // Remove it only if it is still ours: never a lock someone else holds now.
      const current = fs.lstatSync(lockPath, { throwIfNoEntry: false });
      if (current?.ino === lockIno) unlinkQuietly(fs, lockPath);
    },
  };
}

/** Puts the lock in place; false when one is there already. */
function linkLock(fs: SpoolFileSystem, ownPath: string, lockPath: string, content: Buffer): boolean {
  try {
    fs.linkSync(ownPath, lockPath);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') {
      throw writeFailed(lockPath, 'create', error);
    }
  }
  // A filesystem without hard links: create the lock itself exclusively (it is empty for a moment).
  let fd: number;
  try {
    fd = createExclusive(fs, lockPath, false);
  } catch (error) {
    if ((error as SpoolError).cause && ((error as SpoolError).cause as NodeJS.ErrnoException).code === 'EEXIST') {
      return false;
    }
    throw error;
  }
  try {
    writeFully(fs, fd, lockPath, content, 0);
  } finally {
    closeQuietly(fs, fd);
  }
  return true;
}

interface InspectedLock {
  ino: number;
  /** Why the holder is provably gone; undefined when it may still hold the spool. */
  stale: string | undefined;
  refusal: () => SpoolError;
}

/** Reads the lock there now (undefined if it is gone) and judges whether its holder is provably gone. */
function inspectLock(fs: SpoolFileSystem, lockPath: string, spoolPath: string): InspectedLock | undefined {
  const { O_RDONLY, O_NOFOLLOW = 0, O_NONBLOCK = 0 } = constants;
  let fd: number;
  try {
    fd = fs.openSync(lockPath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') {
      throw new SpoolError(
        'KANA_SPOOL_UNSAFE',
        lockPath,
        `kana-meter: the spool's lock ${lockPath} is a symbolic link, which kana-meter never follows. Remove it, and keep the spool in a directory only this service can write to.`,
      );
    }
    throw new SpoolError(
      'KANA_SPOOL_LOCKED',
      lockPath,
      `kana-meter: cannot read the spool's lock ${lockPath} (${code}), so whether another process uses ${spoolPath} is unknown. If none does, delete ${lockPath}; otherwise give this process its own spool.path.`,
      error,
    );
  }
  let stat: ReturnType<SpoolFileSystem['fstatSync']>;
  let text: string;
  try {
    stat = fs.fstatSync(fd);
    if (!stat.isFile()) {
      throw new SpoolError(
        'KANA_SPOOL_UNSAFE',
        lockPath,
        `kana-meter: the spool's lock ${lockPath} is not a regular file. Remove it.`,
      );
    }
    const buffer = Buffer.alloc(4096);
    const count = fs.readSync(fd, buffer, 0, buffer.length, 0);
    text = buffer.subarray(0, count).toString('utf8').trim();
  } finally {
    closeQuietly(fs, fd);
  }
  const ownerUid =
    process.getuid !== undefined && stat.uid !== process.getuid() ? ` (the file belongs to uid ${stat.uid})` : '';
  const holder = parseHolder(text);
  const judged = staleReason(holder, stat.mtimeMs);
  const refusal = (): SpoolError => {
    if (holder === 'foreign') {
      return new SpoolError(
        'KANA_SPOOL_LOCKED',
        lockPath,
        `kana-meter: ${lockPath} is not a kana-meter lock${ownerUid}; it was left untouched. Move it away, or point spool.path elsewhere.`,
      );
    }
    if (holder === 'empty') {
      return new SpoolError(
        'KANA_SPOOL_LOCKED',
        lockPath,
        `kana-meter: the spool's lock ${lockPath} is empty and was written less than ${EMPTY_LOCK_GRACE_MS / 1000} s ago: another process may be taking the spool ${spoolPath}. Retry; an empty lock older than that is taken over.`,
      );
    }
    const where = holder.host === undefined ? '' : ` on host ${holder.host}`;
    const inProcess = holder.pid === process.pid && holder.host === hostname();
    const who = inProcess ? 'another kanaMeter() in this process' : `process ${holder.pid}${where}`;
    return new SpoolError(
      'KANA_SPOOL_LOCKED',
      lockPath,
      `kana-meter: the spool ${spoolPath} is in use by ${who}${ownerUid} (its lock: ${lockPath}). Give each process, and each kanaMeter() in a process, its own spool.path${inProcess ? ', or close() the other one first' : ''}. If no process uses this spool any more, delete ${lockPath}.`,
    );
  };
  return { ino: stat.ino, stale: judged, refusal };
}

type ParsedHolder = (Partial<LockHolder> & { pid: number }) | 'empty' | 'foreign';

function parseHolder(text: string): ParsedHolder {
  if (text === '') return 'empty';
  // kana-meter 0.1 wrote the bare pid.
  if (/^\d+$/.test(text)) return Number(text) >= 1 ? { pid: Number(text) } : 'foreign';
  try {
    const parsed = JSON.parse(text) as Partial<LockHolder> | null;
    if (parsed?.kanaMeterLock === 1 && Number.isSafeInteger(parsed.pid) && (parsed.pid as number) >= 1) {
      return parsed as Partial<LockHolder> & { pid: number };
    }
  } catch {
    // Not JSON: not ours.
  }
  return 'foreign';
}

/**
 * The lock rule: a holder is provably gone, and its lock taken over, when
 * 1. the lock is empty and older than 5 s (a crash between creating and writing it); or, for a
 *    holder on this host (same hostname; 0.1 locks name no host and are taken as this host's):
 * 2. it ran before this machine's last boot (another Linux boot id); or
 * 3. it names this process, yet no kanaMeter() of this process holds it (the pid was reused, as
 *    when a container's main process is pid 1 on every start); or
 * 4. no process has its pid; or
 * 5. the process with its pid is another one: it started at another time than the holder did
 *    (Linux), or, for a 0.1 lock, after the lock was written.
 * Anything else may still be held: a live holder, one on another host, one whose liveness this
 * platform cannot tell. Those are refused with an error that says how to clear a lock that is not.
 */
function staleReason(holder: ParsedHolder, mtimeMs: number): string | undefined {
  if (holder === 'foreign') return undefined;
  if (holder === 'empty') {
    return Date.now() - mtimeMs > EMPTY_LOCK_GRACE_MS ? 'the lock was empty (a crash while it was created)' : undefined;
  }
  const self = ownIdentity();
  if (holder.host !== undefined && holder.host !== self.host) return undefined;
  if (holder.bootId !== undefined && self.bootId !== undefined && holder.bootId !== self.bootId) {
    return `its holder, process ${holder.pid}, ran before the last reboot`;
  }
  if (holder.pid === process.pid) {
    return holder.token !== undefined && heldTokens.has(holder.token)
      ? undefined
      : `it names this process (pid ${holder.pid}, reused), which does not hold it`;
  }
  if (!isAlive(holder.pid)) return `its holder, process ${holder.pid}, is gone`;
  const liveStart = startTicks(holder.pid);
  if (liveStart === undefined) return undefined;
  if (holder.startTicks !== undefined) {
    return liveStart !== holder.startTicks ? `pid ${holder.pid} now belongs to another process` : undefined;
  }
  const startedAt = ticksToEpochMs(liveStart);
  return startedAt !== undefined && startedAt > mtimeMs + START_TIME_SLACK_MS
    ? `process ${holder.pid} started after the lock was written`
    : undefined;
}

/**
 * Removes the lock judged stale, if it is still the one judged. Removals take `<lock>.takeover`
 * first, so that between the check and the unlink no other process can remove it and link its own
 * (a live holder's lock must never go). Without it, two processes that judged the same stale lock
 * could both end up holding the spool: one moved aside the lock the other had just linked. False
 * when another process is taking over now, or the lock changed: the next attempt judges again.
 */
function removeStaleLock(fs: SpoolFileSystem, lockPath: string, inspectedIno: number): boolean {
  const takeoverPath = `${lockPath}.takeover`;
  if (!takeTakeover(fs, takeoverPath)) return false;
  try {
    if (fs.lstatSync(lockPath, { throwIfNoEntry: false })?.ino !== inspectedIno) return false;
    try {
      fs.unlinkSync(lockPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw writeFailed(lockPath, 'take over', error);
    }
    return true;
  } finally {
    unlinkQuietly(fs, takeoverPath);
  }
}

/**
 * Creates the takeover file, or false when another process holds it. It is held for a few system
 * calls; one older than EMPTY_LOCK_GRACE_MS was left by a crash in between, and is removed.
 */
function takeTakeover(fs: SpoolFileSystem, takeoverPath: string): boolean {
  try {
    closeQuietly(fs, createExclusive(fs, takeoverPath, false));
    return true;
  } catch (error) {
    if (((error as SpoolError).cause as NodeJS.ErrnoException | undefined)?.code !== 'EEXIST') throw error;
  }
  const left = fs.lstatSync(takeoverPath, { throwIfNoEntry: false });
  if (left !== undefined && Date.now() - left.mtimeMs > EMPTY_LOCK_GRACE_MS) unlinkQuietly(fs, takeoverPath);
  return false;
}

interface Identity {
  pid: number;
  host: string;
  bootId?: string;
  startTicks?: number;
}

let identity: Identity | undefined;

/** This process, as a lock names it. */
function ownIdentity(): Identity {
  if (identity?.pid === process.pid) return identity;
  const bootId = readProc('/proc/sys/kernel/random/boot_id')?.trim();
  const ticks = startTicks(process.pid);
  identity = {
    pid: process.pid,
    host: hostname(),
    ...(bootId ? { bootId } : {}),
    ...(ticks === undefined ? {} : { startTicks: ticks }),
  };
  return identity;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: alive, but another user's.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); undefined off Linux. */
function startTicks(pid: number): number | undefined {
  const stat = readProc(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[19]);
  return Number.isSafeInteger(ticks) ? ticks : undefined;
}

/** Clock ticks since boot to epoch ms (USER_HZ is 100 on Linux). */
function ticksToEpochMs(ticks: number): number | undefined {
  const bootTime = /^btime (\d+)$/m.exec(readProc('/proc/stat') ?? '')?.[1];
  return bootTime === undefined ? undefined : Number(bootTime) * 1000 + ticks * 10;
}

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
