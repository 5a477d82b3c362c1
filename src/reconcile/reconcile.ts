// reconcile: sums audited usage per user and feature over Kana's current period and compares it with Kana's `used`, asking Kana in rate-limited batches.

import { KanaError } from '../config/errors.js';
import { type EntitlementAnswer, type KanaClient, MAX_CHECKS_PER_DOCUMENT } from '../kana/client.js';
import type { AuditContents, AuditedUsage } from './audit-reader.js';

export interface ReconcileRow {
  readonly userId: string;
  readonly featureId: string;
  /** Units the trail says were billed in Kana's current period, in flight excluded. */
  readonly audited: number;
  /** Kana's `used` for the same period. */
  readonly kana: number;
  /** audited − kana. */
  readonly drift: number;
  /** Units captured in the period and not delivered yet per the outcome lines (waiting, retried, spooled): not counted as drift. */
  readonly inFlight: number;
  /** The period compared (ISO); null when the usage never resets: all time. */
  readonly periodStart: string | null;
  readonly periodEnd: string | null;
}

export interface ReconcileOptions {
  /** Kana calls per second at most (each asks up to MAX_CHECKS_PER_DOCUMENT pairs). */
  readonly callsPerSecond: number;
  /** Told after each call: pairs asked so far, of all. */
  readonly onProgress?: (done: number, total: number) => void;
  readonly timeoutMs?: number;
}

/** Kana could not answer for a pair (an unknown user or feature, a refused key): reconcile exits 2 with its message. */
export class ReconcileKanaError extends Error {}

interface KeyTally {
  readonly userId: string;
  readonly featureId: string;
  readonly usage: AuditedUsage[];
  /** Units Kana accepted or that failed for good: no longer in flight. */
  ended: number;
}

/** Usage lines and the units whose delivery ended (delivered, or failed for good) per (user, feature). */
export function tally(contents: AuditContents): Map<string, KeyTally> {
  const keys = new Map<string, KeyTally>();
  const of = (userId: string, featureId: string) => {
    const key = `${userId}\u0000${featureId}`;
    let entry = keys.get(key);
    if (entry === undefined) {
      entry = { userId, featureId, usage: [], ended: 0 };
      keys.set(key, entry);
    }
    return entry;
  };
  for (const line of contents.usage) of(line.userId, line.featureId).usage.push(line);
  for (const line of contents.outcomes) {
    if (line.outcome !== 'spooled') of(line.userId, line.featureId).ended += line.delta;
  }
  return keys;
}

/**
 * The rows for one key and Kana's period. The queue delivers each key's usage oldest first, so
 * what has not ended yet is the newest usage: those units are in flight, the rest is audited.
 */
export function rowFor(key: KeyTally, kana: number, period: { start: Date; end: Date } | null): ReconcileRow {
  const usage = [...key.usage].sort((a, b) => a.at - b.at);
  const captured = usage.reduce((sum, line) => sum + line.delta, 0);
  let unended = Math.max(0, captured - key.ended);
  let audited = 0;
  let inFlight = 0;
  const start = period?.start.getTime() ?? Number.NEGATIVE_INFINITY;
  const end = period?.end.getTime() ?? Number.POSITIVE_INFINITY;
  for (let i = usage.length - 1; i >= 0; i--) {
    const line = usage[i] as AuditedUsage;
    const flying = Math.min(unended, line.delta);
    unended -= flying;
    if (line.at < start || line.at >= end) continue;
    inFlight += flying;
    audited += line.delta - flying;
  }
  return {
    userId: key.userId,
    featureId: key.featureId,
    audited,
    kana,
    drift: audited - kana,
    inFlight,
    periodStart: period ? period.start.toISOString() : null,
    periodEnd: period ? period.end.toISOString() : null,
  };
}

/** Asks Kana for every (user, feature) of the trail, batched and rate-limited, and builds the rows. */
export async function reconcile(
  contents: AuditContents,
  client: KanaClient,
  options: ReconcileOptions,
): Promise<ReconcileRow[]> {
  const keys = [...tally(contents).values()];
  const rows: ReconcileRow[] = [];
  const spacingMs = 1000 / options.callsPerSecond;
  let lastCall = 0;
  for (let i = 0; i < keys.length; i += MAX_CHECKS_PER_DOCUMENT) {
    const chunk = keys.slice(i, i + MAX_CHECKS_PER_DOCUMENT);
    const wait = lastCall + spacingMs - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    lastCall = Date.now();
    const queries = chunk.map(({ userId, featureId }) => ({ userId, featureId, delta: 1 }));
    const { outcomes } = await client.checkEntitlements(queries, { period: true, timeoutMs: options.timeoutMs });
    for (const [j, key] of chunk.entries()) {
      let outcome = outcomes[j];
      // Lost with another pair's failure: asked again on its own.
      if (outcome === 'lost' || outcome === undefined) outcome = await askAlone(client, key, options.timeoutMs);
      if (outcome instanceof KanaError) {
        throw new ReconcileKanaError(
          `Kana gave no usage for user ${JSON.stringify(key.userId)}, feature ${JSON.stringify(key.featureId)}: ${outcome.message}`,
        );
      }
      rows.push(rowFor(key, outcome.consumption?.used ?? 0, outcome.period));
    }
    options.onProgress?.(Math.min(i + chunk.length, keys.length), keys.length);
  }
  return rows.sort((a, b) => (a.userId === b.userId ? cmp(a.featureId, b.featureId) : cmp(a.userId, b.userId)));
}

async function askAlone(
  client: KanaClient,
  key: KeyTally,
  timeoutMs: number | undefined,
): Promise<EntitlementAnswer | KanaError> {
  try {
    return await client.checkEntitlement({ userId: key.userId, featureId: key.featureId, delta: 1 }, { timeoutMs });
  } catch (error) {
    if (error instanceof KanaError) return error;
    throw error;
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
