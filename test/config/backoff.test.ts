// The one backoff formula (outage probes of delivery and of checks): p-retry's schedule, capped, with jitter in [1, 2).

import { afterEach, describe, expect, it, vi } from 'vitest';
import { backoffDelay } from '../../src/config/backoff.js';

const settings = { minTimeout: 100, maxTimeout: 10_000, factor: 2, randomize: false };

describe('backoffDelay()', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('grows by `factor` from `minTimeout`, up to `maxTimeout`', () => {
    expect([0, 1, 2, 5, 6, 7, 20].map((attempt) => backoffDelay(settings, attempt))).toEqual([
      100, 200, 400, 3200, 6400, 10_000, 10_000,
    ]);
  });

  it('with `randomize`, multiplies by 1 + Math.random() (one draw) before the cap', () => {
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.5);
    expect(backoffDelay({ ...settings, randomize: true }, 3)).toBe(1200);
    expect(backoffDelay({ ...settings, randomize: true }, 10)).toBe(10_000);
    expect(random).toHaveBeenCalledTimes(2);
  });

  it('without `randomize`, draws no random number', () => {
    const random = vi.spyOn(Math, 'random');
    backoffDelay(settings, 1);
    expect(random).not.toHaveBeenCalled();
  });
});
