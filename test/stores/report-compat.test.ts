// The store's `report` (named `settle` before): a store with `report` only is taken and reported to; one written to the
// old name (a MemoryStore subclass overriding `settle`) still gets its `settle` called, its `'settled'` reply read as `'reported'`.

import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { logCodes } from '../../src/config/errors.js';
import { createCounters } from '../../src/config/stats.js';
import { Entitlement } from '../../src/enforcement/entitlements.js';
import { KeyLedger } from '../../src/enforcement/key-ledger.js';
import { Leases } from '../../src/enforcement/leases.js';
import {
  type KanaMeterStore,
  kanaMeter,
  type LeaseState,
  MemoryStore,
  type ReportRequest,
  type StoreKey,
} from '../../src/index.js';
import { apiCallsSeed, createLogSink, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

/** A store written to the old interface: a MemoryStore subclass whose `settle` reports, counting its calls, and replies `'settled'`. */
class OldNameStore extends MemoryStore {
  settles = 0;

  settle(key: StoreKey, request: ReportRequest): LeaseState {
    this.settles++;
    return { ...this.report(key, request), status: 'settled' } as unknown as LeaseState;
  }
}

/** A custom store with the new name only: MemoryStore's methods, `report` counting its calls. */
function newNameStore(): KanaMeterStore & { reports: number } {
  const inner = new MemoryStore();
  const store = {
    reports: 0,
    available: true,
    bind: (context) => inner.bind(context),
    reserve: (key, req) => inner.reserve(key, req),
    report: (key, req) => {
      store.reports++;
      return inner.report(key, req);
    },
    beginCheck: (key, req) => inner.beginCheck(key, req),
    storeAnswer: (key, req) => inner.storeAnswer(key, req),
    idempotencyWindow: (options) => inner.idempotencyWindow(options),
    stats: () => inner.stats(),
  } satisfies KanaMeterStore & { reports: number };
  return store;
}

describe('the store method report', () => {
  const env = useEmulator();
  beforeEach(() => {
    env.emulator.reset();
    env.emulator.seed(apiCallsSeed(5));
  });

  /** 8 requests for an allowance of 5, then close(): the statuses, after the totals were reported; no store call failed. */
  async function run(store: KanaMeterStore): Promise<number[]> {
    const { options, sink } = meterOptions(env.emulator, {
      routes: { 'GET /calls': 'api-calls' },
      enforce: true,
      store,
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(expressVersions[0][1], kana, (app) => app.get('/calls', (_req, res) => res.json({})));
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await request(app).get('/calls').set('x-user', 'u1')).status);
    await new Promise((resolve) => setTimeout(resolve, 250)); // a report interval or two
    await kana.close();
    expect(sink.withCode(logCodes.storeCommandFailed)).toEqual([]);
    return statuses;
  }

  it('is required of a store (or settle, its old name): the error names report', () => {
    const { report: _report, ...withoutReport } = newNameStore();
    const base = { apiKey: 'prv_test_abc123', userId: () => 'u1' };
    expect(() => kanaMeter({ ...base, store: withoutReport as never })).toThrow(
      /option `store` must be a store .*bind, reserve, report, beginCheck, storeAnswer, idempotencyWindow and stats methods/,
    );
    expect(() => kanaMeter({ ...base, store: { ...withoutReport, settle: () => {} } as never })).not.toThrow();
  });

  it('is what kanaMeter calls on a store that defines it (and no settle)', async () => {
    const store = newNameStore();
    const statuses = await run(store);
    expect(statuses.filter((status) => status === 200)).toHaveLength(5);
    expect(store.reports).toBeGreaterThan(0);
  });

  it('is replaced by settle on a store written to the old name, a MemoryStore subclass included', async () => {
    const store = new OldNameStore();
    const statuses = await run(store);
    expect(statuses.filter((status) => status === 200)).toHaveLength(5);
    expect(store.settles).toBeGreaterThan(0);
  });

  it("reads an old store's 'settled' reply as 'reported': the outage share of the same answer is kept", async () => {
    const store = new OldNameStore();
    store.bind({ logger: createLogSink().logger });
    const key = { userId: 'u1', featureId: 'api-calls' };
    const ticket = store.beginCheck(key, { instance: 'x', lockMs: 1000 });
    const epoch = ticket.status === 'check' ? ticket.epoch : 0;
    const answer = { access: true, consumable: true, used: 0, budget: 10, overageEnabled: false };
    store.storeAnswer(key, {
      instance: 'x',
      epoch,
      outcome: { ...answer, periodStart: null, periodEnd: null, ttlMs: 60_000 },
    });
    const leases = new Leases({
      store,
      counters: createCounters(),
      logger: createLogSink().logger,
      adoptAnswer: () => {},
    });
    const entry = Object.assign(new Entitlement('k', 'u1', 'api-calls', new KeyLedger(leases.ledgerId(), 0)), {
      ...answer,
      loaded: true,
      epoch,
    });
    expect(leases.take(entry, 1, false)).toMatchObject({ outcome: 'allowed' });
    expect(entry.ledger.outage).toMatchObject({ epoch, left: expect.any(Number) }); // from the reservation
    await leases.close(); // reports, giving the block back: a 'settled' reply
    expect(store.settles).toBe(1);
    expect(entry.ledger.outage).toMatchObject({ epoch, left: 10 });
  });
});
