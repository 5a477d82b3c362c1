// Usage periods: anniversary-based windows counted from the subscription start (API.md §11.7).

export type ResetPeriod = 'DAY' | 'MONTH' | 'YEAR';

export interface Period {
  /** Inclusive, epoch milliseconds. */
  start: number;
  /** Exclusive, epoch milliseconds. */
  end: number;
}

const DAY_MS = 86_400_000;

/**
 * The start of period number `n` (0 = the one that begins at `anchor`). Months and years are added
 * in UTC from the anchor itself, not step by step, so a subscription started on Jan 31 resets on
 * Feb 28 and then on Mar 31 (the day is clamped to the month's last day, never drifts).
 */
export function periodBoundary(anchor: number, resetPeriod: ResetPeriod, n: number): number {
  if (resetPeriod === 'DAY') return anchor + n * DAY_MS;
  const months = resetPeriod === 'MONTH' ? n : n * 12;
  const a = new Date(anchor);
  const totalMonths = a.getUTCMonth() + months;
  const year = a.getUTCFullYear() + Math.floor(totalMonths / 12);
  const month = ((totalMonths % 12) + 12) % 12;
  const lastDay = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
  return Date.UTC(
    year,
    month,
    Math.min(a.getUTCDate(), lastDay),
    a.getUTCHours(),
    a.getUTCMinutes(),
    a.getUTCSeconds(),
    a.getUTCMilliseconds(),
  );
}

/** The index of the period containing `at` (negative before the anchor). */
export function periodIndex(anchor: number, resetPeriod: ResetPeriod, at: number): number {
  let n: number;
  if (resetPeriod === 'DAY') {
    n = Math.floor((at - anchor) / DAY_MS);
  } else {
    // Estimate from the calendar difference, then correct by one either way for day/time clamping.
    const a = new Date(anchor);
    const t = new Date(at);
    const months = (t.getUTCFullYear() - a.getUTCFullYear()) * 12 + (t.getUTCMonth() - a.getUTCMonth());
    n = resetPeriod === 'MONTH' ? months : Math.floor(months / 12);
  }
  while (periodBoundary(anchor, resetPeriod, n) > at) n -= 1;
  while (periodBoundary(anchor, resetPeriod, n + 1) <= at) n += 1;
  return n;
}

/** The period containing `at`. */
export function periodAt(anchor: number, resetPeriod: ResetPeriod, at: number): Period {
  const n = periodIndex(anchor, resetPeriod, at);
  return { start: periodBoundary(anchor, resetPeriod, n), end: periodBoundary(anchor, resetPeriod, n + 1) };
}
