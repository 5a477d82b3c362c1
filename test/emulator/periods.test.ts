// Usage periods: anniversary resets with an injected clock, showUsage current/past, and the date arithmetic.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import { periodAt, periodBoundary } from '../../src/emulator/periods.js';
import { CAN_USE_FEATURE, post, RECORD_USAGE, SHOW_USAGE } from './graphql-client.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const START = Date.parse('2024-01-31T10:00:00.000Z');

let clock = START;
let emulator: KanaEmulator;

beforeAll(async () => {
  emulator = await startKanaEmulator({ now: () => clock });
});
afterAll(() => emulator.close());
beforeEach(() => {
  clock = START;
  emulator.reset();
  emulator.seed({
    users: [{ id: 'u1' }],
    features: [
      { id: 'daily', type: 'CONSUMABLE' },
      { id: 'monthly', type: 'CONSUMABLE' },
      { id: 'forever', type: 'CONSUMABLE' },
    ],
    packages: [
      {
        id: 'plan',
        features: [
          { id: 'daily', limit: 3, resetPeriod: 'DAY' },
          { id: 'monthly', limit: 100, resetPeriod: 'MONTH' },
          { id: 'forever', limit: 10 },
        ],
      },
    ],
    subscriptions: [{ userId: 'u1', packageId: 'plan' }],
  });
});

function record(featureId: string, delta: number) {
  return post(emulator, RECORD_USAGE, { input: { userId: 'u1', featureId, delta } });
}

describe('DAY reset', () => {
  it('usage resets one day after the subscription start, not at midnight', async () => {
    await record('daily', 3);
    expect(
      (await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'daily' })).data.canUseFeature.access,
    ).toBe(false);

    clock = START + DAY - 1;
    expect(emulator.usage('u1', 'daily')).toBe(3);

    clock = START + DAY;
    expect(emulator.usage('u1', 'daily')).toBe(0);
    const check = await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'daily' });
    expect(check.data.canUseFeature).toMatchObject({ access: true, consumption: { used: 0, budget: 3 } });
  });

  it('showUsage reports the current period with ISO bounds, and past periods that had usage', async () => {
    await record('daily', 2);
    clock = START + 2 * DAY + 5 * HOUR;
    await record('daily', 1);

    const response = await post(emulator, SHOW_USAGE, { userId: 'u1', featureId: 'daily' });
    expect(response.status).toBe(200);
    expect(response.data.showUsage).toEqual({
      current: {
        periodStart: '2024-02-02T10:00:00.000Z',
        periodEnd: '2024-02-03T10:00:00.000Z',
        consumption: { used: 1, budget: 3, overageEnabled: false },
      },
      past: [
        {
          periodStart: '2024-01-31T10:00:00.000Z',
          periodEnd: '2024-02-01T10:00:00.000Z',
          consumption: { used: 2, budget: 3, overageEnabled: false },
        },
      ],
    });
  });
});

describe('MONTH reset', () => {
  it('counts months from the start day, clamped to short months', async () => {
    await record('monthly', 40);
    clock = Date.parse('2024-02-29T09:59:59.999Z');
    expect(emulator.usage('u1', 'monthly')).toBe(40);
    clock = Date.parse('2024-02-29T10:00:00.000Z');
    expect(emulator.usage('u1', 'monthly')).toBe(0);

    const response = await post(emulator, SHOW_USAGE, { userId: 'u1', featureId: 'monthly' });
    expect(response.data.showUsage.current).toMatchObject({
      periodStart: '2024-02-29T10:00:00.000Z',
      periodEnd: '2024-03-31T10:00:00.000Z',
    });
  });
});

describe('no reset period', () => {
  it('usage never resets, and showUsage has no current period to report', async () => {
    await record('forever', 7);
    clock = START + 400 * DAY;
    expect(emulator.usage('u1', 'forever')).toBe(7);
    const response = await post(emulator, SHOW_USAGE, { userId: 'u1', featureId: 'forever' });
    expect(response.data.showUsage).toEqual({ current: null, past: [] });
  });
});

describe('period arithmetic', () => {
  it('adds months from the anchor without drifting after a short month', () => {
    const anchor = Date.parse('2023-01-31T00:00:00.000Z');
    expect(new Date(periodBoundary(anchor, 'MONTH', 1)).toISOString()).toBe('2023-02-28T00:00:00.000Z');
    expect(new Date(periodBoundary(anchor, 'MONTH', 2)).toISOString()).toBe('2023-03-31T00:00:00.000Z');
    expect(new Date(periodBoundary(anchor, 'MONTH', 13)).toISOString()).toBe('2024-02-29T00:00:00.000Z');
  });

  it('clamps Feb 29 anniversaries in non-leap years', () => {
    const anchor = Date.parse('2024-02-29T12:00:00.000Z');
    expect(new Date(periodBoundary(anchor, 'YEAR', 1)).toISOString()).toBe('2025-02-28T12:00:00.000Z');
    expect(new Date(periodBoundary(anchor, 'YEAR', 4)).toISOString()).toBe('2028-02-29T12:00:00.000Z');
  });

  it('finds the period containing an instant, inclusive start and exclusive end', () => {
    const anchor = Date.parse('2024-01-31T10:00:00.000Z');
    const at = Date.parse('2024-03-31T10:00:00.000Z');
    expect(periodAt(anchor, 'MONTH', at)).toEqual({ start: at, end: Date.parse('2024-04-30T10:00:00.000Z') });
    expect(periodAt(anchor, 'MONTH', at - 1)).toEqual({ start: Date.parse('2024-02-29T10:00:00.000Z'), end: at });
    expect(periodAt(anchor, 'DAY', anchor + 3.5 * DAY)).toEqual({ start: anchor + 3 * DAY, end: anchor + 4 * DAY });
  });
});
