// Test helpers: an Express app metered against a real emulator, and a pino log sink.

import type { Express } from 'express';
import express5 from 'express';
import express4 from 'express4';
import { pino } from 'pino';
import type { KanaEmulator } from '../../src/emulator/index.js';
import type { KanaMeter, KanaMeterOptions } from '../../src/index.js';

export const expressVersions = [
  ['express 5', express5 as unknown as () => Express],
  ['express 4', express4 as unknown as () => Express],
] as const;

export interface LogLine {
  level: number;
  code?: string;
  msg: string;
  [field: string]: unknown;
}

/** A pino logger at debug level whose lines are kept, parsed and raw. */
export function createLogSink() {
  const raw: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => raw.push(line) });
  return {
    logger,
    raw,
    lines: () => raw.map((line) => JSON.parse(line) as LogLine),
    withCode: (code: string) => raw.map((line) => JSON.parse(line) as LogLine).filter((line) => line.code === code),
  };
}

/** kanaMeter options aimed at the emulator, quick to retry, with a log sink. */
export function meterOptions(emulator: KanaEmulator, overrides: Partial<KanaMeterOptions> = {}) {
  const sink = createLogSink();
  const options: KanaMeterOptions = {
    apiKey: emulator.apiKey,
    endpoint: emulator.url,
    userId: (req) => req.get('x-user') ?? undefined,
    retry: { retries: 3, minTimeout: 5, maxTimeout: 20 },
    flushInterval: 60_000,
    logger: sink.logger,
    ...overrides,
  };
  return { options, sink };
}

/** An app with kanaMeter mounted first; `routes` adds the handlers. */
export function meteredApp(createExpress: () => Express, kana: KanaMeter, routes: (app: Express) => void): Express {
  const app = createExpress();
  app.use(kana);
  routes(app);
  return app;
}

/** Seed for most tests: users u1..u3 on an unlimited plan with the features the tests bill. */
export const basicSeed = {
  users: [{ id: 'u1' }, { id: 'u2' }, { id: 'u3' }, { id: '124' }],
  features: ['api-calls', 'reports', 'exports', 'item-reads'].map((id) => ({ id, type: 'CONSUMABLE' as const })),
  packages: [
    {
      id: 'unlimited',
      features: ['api-calls', 'reports', 'exports', 'item-reads'].map((id) => ({ id, limit: null })),
    },
  ],
  subscriptions: ['u1', 'u2', 'u3', '124'].map((userId) => ({ userId, packageId: 'unlimited' })),
};

/** Seed for allowance tests: `users` (u1 by default) on plan 'p', of `limit` api-calls each. */
export function apiCallsSeed(limit: number, users: readonly string[] = ['u1']) {
  return {
    users: users.map((id) => ({ id })),
    features: [{ id: 'api-calls', type: 'CONSUMABLE' as const }],
    packages: [{ id: 'p', features: [{ id: 'api-calls', limit }] }],
    subscriptions: users.map((userId) => ({ userId, packageId: 'p' })),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
