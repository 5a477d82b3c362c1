// The spool's file format: a JSON header line, then one JSON usage record per line.

/** One line of the spool: usage for a (user, feature) key. */
export interface SpoolRecord {
  userId: string;
  featureId: string;
  delta: number;
  events: number;
  firstCapturedAt: number;
}

/**
 * The snapshot's header names the spill records it already holds: those of spill file `spill`
 * (its epoch) before byte `taken`. A spill file of a later epoch is held in none of it.
 */
export interface SnapshotHeader {
  spill: number;
  taken: number;
}

/** The spill file's header: its epoch, one more each time the file is replaced. */
export interface SpillHeader {
  epoch: number;
}

interface WireRecord {
  u: string;
  f: string;
  d: number;
  n: number;
  t: number;
}

/** Version 1 (kana-meter 0.1) had a bare header: read as epoch 0, nothing taken. */
const VERSION_1 = '{"kanaMeterSpool":1}';

/** The longest line read: a record is far shorter; a longer one is corrupt, and is never buffered whole. */
export const MAX_LINE_BYTES = 64 * 1024;

export function snapshotHeaderLine(header: SnapshotHeader): string {
  return `{"kanaMeterSpool":2,"spill":${header.spill},"taken":${header.taken}}\n`;
}

export function spillHeaderLine(header: SpillHeader): string {
  return `{"kanaMeterSpool":2,"epoch":${header.epoch}}\n`;
}

/** Reads a snapshot's header line; undefined when it is not a kana-meter spool. */
export function parseSnapshotHeader(line: string): SnapshotHeader | undefined {
  if (line === VERSION_1) return { spill: 0, taken: 0 };
  const header = parseVersion2(line);
  if (!header || !isCount(header.spill) || !isCount(header.taken)) return undefined;
  return { spill: header.spill, taken: header.taken };
}

/** Reads a spill file's header line; undefined when it is not a kana-meter spool. */
export function parseSpillHeader(line: string): SpillHeader | undefined {
  if (line === VERSION_1) return { epoch: 0 };
  const header = parseVersion2(line);
  if (!header || !isCount(header.epoch)) return undefined;
  return { epoch: header.epoch };
}

function parseVersion2(line: string): Record<string, unknown> | undefined {
  try {
    const header = JSON.parse(line) as Record<string, unknown> | null;
    return typeof header === 'object' && header !== null && header.kanaMeterSpool === 2 ? header : undefined;
  } catch {
    return undefined;
  }
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

export function recordLine(record: SpoolRecord): string {
  const wire: WireRecord = {
    u: record.userId,
    f: record.featureId,
    d: record.delta,
    n: record.events,
    t: record.firstCapturedAt,
  };
  return `${JSON.stringify(wire)}\n`;
}

/** Reads one record line; undefined when it is not a valid record. */
export function parseRecord(line: string): SpoolRecord | undefined {
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

/** Adds `record` to `into` (same key): deltas and events add up, the oldest capture time stays. */
export function mergeRecord(into: SpoolRecord, record: SpoolRecord): void {
  into.delta += record.delta;
  into.events += record.events;
  if (record.firstCapturedAt < into.firstCapturedAt) into.firstCapturedAt = record.firstCapturedAt;
}
