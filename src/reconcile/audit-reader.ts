// Reads audit trails for `kana-meter reconcile`: files or folders, rotated files included, oldest first; torn lines skipped and reported.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** A usage line, as reconcile needs it. */
export interface AuditedUsage {
  readonly at: number;
  readonly userId: string;
  readonly featureId: string;
  readonly delta: number;
}

/** A delivery outcome line, as reconcile needs it. */
export interface AuditedOutcome {
  readonly outcome: 'delivered' | 'failed' | 'spooled';
  readonly userId: string;
  readonly featureId: string;
  readonly delta: number;
}

/** A line that is not a whole audit line (a crash mid-write leaves one at the end of a file). */
export interface SkippedLine {
  readonly file: string;
  readonly line: number;
}

export interface AuditContents {
  readonly files: readonly string[];
  readonly usage: readonly AuditedUsage[];
  readonly outcomes: readonly AuditedOutcome[];
  readonly skipped: readonly SkippedLine[];
}

/** A path that cannot be read as an audit trail: reconcile exits 2 with its message. */
export class AuditReadError extends Error {}

const TRAIL_NAME = /\.jsonl(\.\d+)?$/;

/**
 * The files of the trails named: a file with its rotated siblings (`path.1`, `path.2`, …), or every
 * `*.jsonl` and `*.jsonl.<n>` file of a folder; each trail oldest first (highest number first).
 */
export function auditFiles(paths: readonly string[]): string[] {
  const files = new Set<string>();
  for (const path of paths) {
    let stats: ReturnType<typeof statSync>;
    try {
      stats = statSync(path);
    } catch (error) {
      throw new AuditReadError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    }
    const names = stats.isDirectory()
      ? readdirSync(path)
          .filter((name) => TRAIL_NAME.test(name))
          .map((name) => join(path, name))
      : [path, ...siblingsOf(path)];
    for (const file of names.sort(oldestFirst)) files.add(file);
  }
  return [...files];
}

function siblingsOf(path: string): string[] {
  const prefix = `${basename(path)}.`;
  return readdirSync(dirname(path))
    .filter((name) => name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length)))
    .map((name) => join(dirname(path), name));
}

/** `x.jsonl.3` before `x.jsonl.2` before `x.jsonl`: rotation renames upwards. */
function oldestFirst(a: string, b: string): number {
  const base = (file: string) => file.replace(/\.\d+$/, '');
  const number = (file: string) => Number(/\.(\d+)$/.exec(file)?.[1] ?? 0);
  return base(a) === base(b) ? number(b) - number(a) : base(a) < base(b) ? -1 : 1;
}

export function readAudit(paths: readonly string[]): AuditContents {
  const files = auditFiles(paths);
  if (files.length === 0) throw new AuditReadError(`no audit files (*.jsonl) in ${paths.join(', ')}`);
  const usage: AuditedUsage[] = [];
  const outcomes: AuditedOutcome[] = [];
  const skipped: SkippedLine[] = [];
  for (const file of files) {
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((text, index) => {
      if (text === '') return;
      const line = parseLine(text);
      if (line === undefined) skipped.push({ file, line: index + 1 });
      else if (line === null) return;
      else if ('at' in line) usage.push(line);
      else outcomes.push(line);
    });
  }
  return { files, usage, outcomes, skipped };
}

/** A usage or outcome line; null for a whole line of another type; undefined for a line that is not whole. */
function parseLine(text: string): AuditedUsage | AuditedOutcome | null | undefined {
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { type, userId, featureId, delta } = value;
  if (typeof userId !== 'string' || typeof featureId !== 'string' || typeof delta !== 'number') {
    return type === 'usage' || type === 'delivery' ? undefined : null;
  }
  if (type === 'usage') {
    const at = Date.parse(String(value.at));
    return Number.isNaN(at) ? undefined : { at, userId, featureId, delta };
  }
  if (type === 'delivery') {
    const { outcome } = value;
    if (outcome !== 'delivered' && outcome !== 'failed' && outcome !== 'spooled') return undefined;
    return { outcome, userId, featureId, delta };
  }
  return null;
}
