// Fault injection at every await of the gate: the userId hook, the store (a custom store wrapping MemoryStore), the idempotency
// window, the Kana check (emulator faults) and onDenied throw, reject or never settle, in sync and async variants. Every request
// is answered within the gate's bound (3 x checkTimeoutMs + the store's timeoutMs, plus checkTimeoutMs for onDenied), its
// handler runs only when allowed, and nothing reaches the process as an unhandled rejection or exception.

import type { Request, Response } from 'express';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Fault } from '../../src/emulator/index.js';
import {
  type KanaMeterOptions,
  type KanaMeterStore,
  kanaMeter,
  logCodes,
  MemoryStore,
  type StoreContext,
} from '../../src/index.js';
import { expressVersions, meteredApp, meterOptions, sleep } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const createExpress = expressVersions[0][1];
const CHECK_TIMEOUT_MS = 300;
const STORE_TIMEOUT_MS = 200;
/** The documented bound: 3 x checkTimeoutMs + the store's timeoutMs, plus checkTimeoutMs for an async onDenied. */
const BOUND_MS = 3 * CHECK_TIMEOUT_MS + STORE_TIMEOUT_MS + CHECK_TIMEOUT_MS;
/** Slack for a loaded 2-core machine; a request that hangs is cut off by the client well past it. */
const SLACK_MS = 1200;
const CLIENT_TIMEOUT_MS = 5000;

/** `slow`: answers, 30 ms short of the store's time limit. */
type Misbehaviour = 'throw' | 'reject' | 'hang' | 'null' | 'null-async' | 'slow';
type StoreMethod = 'reserve' | 'report' | 'beginCheck' | 'storeAnswer';

/** What a misbehaving hook or method does instead of answering. */
function misbehave(how: Misbehaviour, what: string): unknown {
  switch (how) {
    case 'throw':
      throw new Error(`${what} threw`);
    case 'reject':
      return Promise.reject(new Error(`${what} rejected`));
    case 'hang':
      return new Promise(() => {});
    case 'null':
      return null;
    case 'null-async':
      return Promise.resolve(null);
    case 'slow':
      throw new Error('slow is an answer, given by the store');
  }
}

/** A custom store: MemoryStore's semantics, answering asynchronously (as a networked store does), with faults per method. */
class FaultyStore implements KanaMeterStore {
  readonly #inner = new MemoryStore();

  constructor(
    readonly faults: Partial<Record<StoreMethod, Misbehaviour>>,
    readonly windowFault: { method: string; how: Misbehaviour } | undefined = undefined,
    readonly timeoutMs = STORE_TIMEOUT_MS,
  ) {}

  get available(): boolean {
    return true;
  }

  bind(context: StoreContext): void {
    this.#inner.bind(context);
  }

  #call<T>(method: StoreMethod, answer: () => T): unknown {
    const fault = this.faults[method];
    if (fault === 'slow') return sleep(this.timeoutMs - 30).then(answer);
    if (fault !== undefined) return misbehave(fault, `store.${method}`);
    return Promise.resolve().then(answer);
  }

  reserve(...args: Parameters<MemoryStore['reserve']>) {
    return this.#call('reserve', () => this.#inner.reserve(...args)) as ReturnType<KanaMeterStore['reserve']>;
  }

  report(...args: Parameters<MemoryStore['report']>) {
    return this.#call('report', () => this.#inner.report(...args)) as ReturnType<KanaMeterStore['report']>;
  }

  beginCheck(...args: Parameters<MemoryStore['beginCheck']>) {
    return this.#call('beginCheck', () => this.#inner.beginCheck(...args)) as ReturnType<KanaMeterStore['beginCheck']>;
  }

  storeAnswer(...args: Parameters<MemoryStore['storeAnswer']>) {
    return this.#call('storeAnswer', () => this.#inner.storeAnswer(...args)) as ReturnType<
      KanaMeterStore['storeAnswer']
    >;
  }

  idempotencyWindow(options: Parameters<MemoryStore['idempotencyWindow']>[0]) {
    const window = this.#inner.idempotencyWindow(options);
    const fault = this.windowFault;
    const slowMs = this.timeoutMs - 30;
    // Every method of the window is MemoryStore's, except the faulted one.
    return new Proxy(window, {
      get(target, property) {
        const value = Reflect.get(target, property, target) as unknown;
        if (typeof value !== 'function') return value;
        if (fault?.how === 'slow' && property === fault.method)
          return (...args: unknown[]) =>
            sleep(slowMs).then(() => (value as (...a: unknown[]) => unknown).apply(target, args));
        if (fault !== undefined && property === fault.method)
          return () => misbehave(fault.how, `idempotencyWindow.${fault.method}`);
        return (...args: unknown[]) =>
          Promise.resolve().then(() => (value as (...a: unknown[]) => unknown).apply(target, args));
      },
    });
  }

  stats() {
    return this.#inner.stats();
  }
}

const env = useEmulator();
const crashes: unknown[] = [];
const onCrash = (error: unknown) => crashes.push(error);

beforeAll(() => {
  process.on('unhandledRejection', onCrash);
  process.on('uncaughtException', onCrash);
});
afterAll(() => {
  process.off('unhandledRejection', onCrash);
  process.off('uncaughtException', onCrash);
});
beforeEach(() => {
  crashes.length = 0;
  env.emulator.reset();
  env.emulator.seed({
    users: [{ id: 'u' }, { id: 'spent' }],
    features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
    packages: [{ id: 'small', features: [{ id: 'api-calls', limit: 3 }] }],
    subscriptions: ['u', 'spent'].map((userId) => ({ userId, packageId: 'small' })),
    usage: [{ userId: 'spent', featureId: 'api-calls', used: 3 }],
  });
});
afterEach(() => {
  env.emulator.clearFaults();
});

interface Row {
  /** What misbehaves. */
  readonly fault: string;
  /** What today's code (before this change) did with it. */
  readonly before: 'hangs' | 'crashes' | 'serves refused' | 'throws into Express (500)' | 'answers';
  readonly options?: Partial<KanaMeterOptions>;
  readonly store?: FaultyStore;
  readonly kana?: Fault;
  readonly user?: string;
  readonly idempotencyKey?: boolean;
  /** Statuses a request may get. */
  readonly statuses: readonly number[];
  /** A throw inside the gate itself (KANA_METER_GATE_FAILED): onKanaError decides, so the allowance is not what decides. */
  readonly gateFails?: boolean;
}

const asyncUser = (req: Request) => Promise.resolve(req.get('x-user'));
const storeRows = (method: StoreMethod): Row[] => [
  {
    fault: `store.${method} throws`,
    before: 'answers',
    store: new FaultyStore({ [method]: 'throw' }),
    statuses: [200, 429],
  },
  {
    fault: `store.${method} rejects`,
    before: 'answers',
    store: new FaultyStore({ [method]: 'reject' }),
    statuses: [200, 429],
  },
  {
    fault: `store.${method} never settles`,
    before: 'hangs',
    store: new FaultyStore({ [method]: 'hang' }),
    statuses: [200, 429],
  },
];

const rows: Row[] = [
  // The userId hook: a failure is a request without a user (unchecked, or refused with 401 where anonymous users are).
  {
    fault: 'userId throws',
    before: 'answers',
    options: { userId: () => misbehave('throw', 'userId') as string },
    statuses: [200, 401],
  },
  {
    fault: 'userId rejects',
    before: 'answers',
    options: { userId: () => misbehave('reject', 'userId') as Promise<string> },
    statuses: [200, 401],
  },
  {
    fault: 'userId never settles',
    before: 'hangs',
    options: { userId: () => misbehave('hang', 'userId') as Promise<string> },
    statuses: [200, 401],
  },
  {
    // Read first by the Idempotency-Key stage, before the gate: the same time limit there.
    fault: 'userId never settles, the request carrying an Idempotency-Key',
    before: 'hangs',
    options: { userId: () => misbehave('hang', 'userId') as Promise<string> },
    idempotencyKey: true,
    statuses: [200, 401],
  },
  // The store, in each call the gate waits on.
  ...storeRows('reserve'),
  ...storeRows('beginCheck'),
  ...storeRows('storeAnswer'),
  {
    fault: 'store.reserve answers null (sync)',
    before: 'hangs',
    store: new FaultyStore({ reserve: 'null' }),
    statuses: [200, 429, 503],
  },
  {
    fault: 'store.reserve answers null (async)',
    before: 'answers',
    store: new FaultyStore({ reserve: 'null-async' }),
    statuses: [200, 429, 503],
  },
  // The idempotency window (asked before the gate, for a request with a key), with a sync and an async userId.
  ...(['throw', 'reject', 'hang'] as const).flatMap((how): Row[] =>
    [undefined, asyncUser].map((userId) => ({
      fault: `idempotencyWindow.begin ${how === 'hang' ? 'never settles' : `${how}s`}${userId ? ' (async userId)' : ''}`,
      before: how === 'hang' ? 'hangs' : how === 'throw' ? (userId ? 'hangs' : 'throws into Express (500)') : 'answers',
      options: userId ? { userId } : {},
      store: new FaultyStore({}, { method: 'begin', how }),
      idempotencyKey: true,
      statuses: [200, 429],
    })),
  ),
  // The Kana check.
  { fault: 'Kana hangs', before: 'answers', kana: { hang: true }, statuses: [200] },
  { fault: 'Kana answers 500', before: 'answers', kana: { status: 500 }, statuses: [200] },
  {
    fault: 'Kana fails the field',
    before: 'answers',
    kana: { fieldError: { field: 'canUseFeature' } },
    statuses: [200],
  },
  {
    fault: "Kana hangs, onKanaError: 'deny'",
    before: 'answers',
    kana: { hang: true },
    options: { onKanaError: 'deny' },
    statuses: [503],
  },
  // onDenied, for a user whose allowance is used up.
  ...(
    [
      ['onDenied throws', 'answers', () => misbehave('throw', 'onDenied')],
      ['onDenied rejects', 'crashes', () => misbehave('reject', 'onDenied')],
      ['onDenied never settles', 'hangs', () => misbehave('hang', 'onDenied')],
      ['onDenied sends nothing', 'hangs', () => {}],
      ['onDenied sends nothing, async', 'hangs', async () => {}],
      [
        'onDenied written for (req, res, next, decision) calls next',
        'serves refused',
        (_req: unknown, _res: unknown, next: () => void) => next(),
      ],
    ] as const
  ).map(
    ([fault, before, onDenied]): Row => ({
      fault,
      before,
      user: 'spent',
      options: { onDenied: onDenied as KanaMeterOptions['onDenied'] },
      statuses: [429],
    }),
  ),
];

describe('every await of the gate misbehaves: every request is answered in time, and the process lives', () => {
  it.each(rows)(
    '$fault (before: $before)',
    async (row) => {
      if (row.kana !== undefined) {
        env.emulator.failNext(row.kana, { operation: 'canUseFeature', times: Number.POSITIVE_INFINITY });
      }
      const { options, sink } = meterOptions(env.emulator, {
        enforce: true,
        routes: { 'GET /api/calls': 'api-calls' },
        checkTimeoutMs: CHECK_TIMEOUT_MS,
        staleIfError: 0,
        ...(row.store && { store: row.store }),
        ...(row.idempotencyKey && { idempotencyKey: true }),
        ...row.options,
      });
      const kana = env.trackTest(kanaMeter(options));
      let handled = 0;
      const app = meteredApp(createExpress, kana, (app) =>
        app.get('/api/calls', (_req: Request, res: Response) => {
          handled++;
          res.json({});
        }),
      );
      const send = async (i: number) => {
        const started = performance.now();
        let call = request(app)
          .get('/api/calls')
          .set('x-user', row.user ?? 'u')
          .timeout(CLIENT_TIMEOUT_MS);
        if (row.idempotencyKey) call = call.set('Idempotency-Key', `k${i}`);
        const status = await call.then(
          (response) => response.status,
          () => 0,
        );
        return { status, ms: performance.now() - started };
      };
      // A burst (the requests waiting on one call), then one by one (the report interval runs in between).
      const results = await Promise.all(Array.from({ length: 4 }, (_, i) => send(i)));
      for (let i = 4; i < 8; i++) {
        await sleep(120);
        results.push(await send(i));
      }
      await sleep(50);

      const unanswered = results.filter((result) => result.status === 0).length;
      expect({ unanswered, crashes: crashes.length }).toEqual({ unanswered: 0, crashes: 0 });
      for (const result of results) {
        expect(row.statuses).toContain(result.status);
        expect(result.ms).toBeLessThan(BOUND_MS + SLACK_MS);
      }
      // The handler ran exactly for the requests served, and never past the allowance.
      expect(handled).toBe(results.filter((result) => result.status === 200).length);
      if (row.gateFails) expect(sink.withCode(logCodes.gateFailed).length).toBeGreaterThan(0);
      // With a working store (a store failing decides per instance: how close that stays to the allowance is the store's concern).
      else if (row.store === undefined && row.statuses.includes(429) && row.user === undefined)
        expect(handled).toBeLessThanOrEqual(3);
      if (row.fault.startsWith('onDenied') && row.fault !== 'onDenied sends nothing' && !row.fault.endsWith('async')) {
        expect(sink.withCode(logCodes.hookFailed).length).toBeGreaterThan(0);
        expect(kana.stats().hookErrors).toBeGreaterThan(0);
      }
    },
    40_000,
  );
});

describe('the gate answers each request exactly once', () => {
  it.each([
    ['allow', 200, 1],
    ['deny', 503, 0],
  ] as const)(
    'each wait within its own limit, together past the bound: the deadline decides (onKanaError: %s), the late answer changes nothing',
    async (onKanaError, status, handlerRuns) => {
      // A store 30 ms short of its 400 ms limit at each call: 250 ms userId + 370 ms beginCheck
      // + 100 ms Kana + 370 ms storeAnswer + 370 ms reserve > 3 x 300 + 400 ms.
      env.emulator.failNext({ delayMs: 100 }, { operation: 'canUseFeature', times: Number.POSITIVE_INFINITY });
      const { options, sink } = meterOptions(env.emulator, {
        enforce: true,
        routes: { 'GET /api/calls': 'api-calls' },
        checkTimeoutMs: CHECK_TIMEOUT_MS,
        onKanaError,
        userId: (req) => sleep(250).then(() => req.get('x-user')),
        store: new FaultyStore({ beginCheck: 'slow', storeAnswer: 'slow', reserve: 'slow' }, undefined, 400),
      });
      const kana = env.trackTest(kanaMeter(options));
      let handled = 0;
      const app = meteredApp(createExpress, kana, (app) =>
        app.get('/api/calls', (_req: Request, res: Response) => {
          handled++;
          setTimeout(() => res.json({}), 300);
        }),
      );
      const started = performance.now();
      const response = await request(app).get('/api/calls').set('x-user', 'u').timeout(CLIENT_TIMEOUT_MS);
      const ms = performance.now() - started;
      // Kana's late answer arrives meanwhile, and is not acted on.
      await sleep(600);
      expect(response.status).toBe(status);
      expect(ms).toBeLessThan(3 * CHECK_TIMEOUT_MS + 400 + (handlerRuns ? 300 : 0) + SLACK_MS);
      expect(handled).toBe(handlerRuns);
      expect(sink.withCode(logCodes.gateTimeout)).toHaveLength(1);
      expect(kana.stats()).toMatchObject({ gateTimeouts: 1, allowed: handlerRuns, denied: 1 - handlerRuns });
      expect(crashes).toEqual([]);
    },
  );
});

describe('onDenied(req, res, decision)', () => {
  it('an async onDenied that answers after an await is the answer: no default refusal, no error', async () => {
    const { options } = meterOptions(env.emulator, {
      enforce: true,
      routes: { 'GET /api/calls': 'api-calls' },
      onDenied: async (_req, res, decision) => {
        await sleep(50);
        res.status(402).json({ upgrade: decision.featureId, status: decision.status });
      },
    });
    const kana = env.trackTest(kanaMeter(options));
    const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));
    const response = await request(app).get('/api/calls').set('x-user', 'spent').timeout(CLIENT_TIMEOUT_MS);
    expect(response.status).toBe(402);
    expect(response.body).toEqual({ upgrade: 'api-calls', status: 429 });
    expect(kana.stats()).toMatchObject({ hookErrors: 0, denied: 1 });
    expect(crashes).toEqual([]);
  });

  it.each([
    ['throws', () => misbehave('throw', 'onDenied')],
    ['rejects', () => misbehave('reject', 'onDenied')],
  ])(
    'onDenied %s and the logger throws too: the default refusal is sent, counted, nothing escapes',
    async (_how, onDenied) => {
      const throwingLogger = {
        error: () => {
          throw new Error('log sink down');
        },
        warn() {},
        info() {},
        debug() {},
      };
      const { options } = meterOptions(env.emulator, {
        enforce: true,
        routes: { 'GET /api/calls': 'api-calls' },
        logger: throwingLogger,
        onDenied: onDenied as KanaMeterOptions['onDenied'],
      });
      const kana = env.trackTest(kanaMeter(options));
      const app = meteredApp(createExpress, kana, (app) => app.get('/api/calls', (_req, res) => res.json({})));
      const response = await request(app).get('/api/calls').set('x-user', 'spent').timeout(CLIENT_TIMEOUT_MS);
      await sleep(20);
      expect(response.status).toBe(429);
      expect(kana.stats()).toMatchObject({ hookErrors: 1, denied: 1 });
      expect(crashes).toEqual([]);
    },
  );
});
