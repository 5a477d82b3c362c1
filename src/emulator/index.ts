// The emulator's public surface: startKanaEmulator() and the KanaEmulator handle tests drive it with.
import type { RequestListener } from 'node:http';
import { generateApiKey, PRIVATE_KEY } from './api-keys.js';
import { createDashboard } from './dashboard.js';
import { type FailNextOptions, type Fault, FaultQueue } from './faults.js';
import { createGraphQLEndpoint, type EmulatorRequest } from './graphql-endpoint.js';
import { urlHost } from './hosts.js';
import { EmulatorHttpServer } from './http-server.js';
import { RequestLog } from './request-log.js';
import { resolvers } from './resolvers.js';
import { buildExecutableSchema, loadSchemaText } from './schema.js';
import { applySeed, type EmulatorSeed } from './seed.js';
import { KanaStore, type UsageCall } from './store.js';

export type { DashboardState } from './dashboard.js';
export type { FailNextOptions, Fault, FieldFault } from './faults.js';
export type { EmulatorRequest } from './graphql-endpoint.js';
export { type EmulatorSeed, EmulatorSeedError } from './seed.js';
export type {
  FeatureType,
  PackageStatus,
  RecordUsageAction,
  ResetPeriod,
  SubscriptionStatus,
  UsageCall,
} from './store.js';
export { REASONS, SUBSCRIBE_ERRORS } from './store.js';

export interface KanaEmulatorOptions {
  /** TCP port; 0 picks a free one. @default 0 */
  port?: number;
  /** Interface to bind. @default '127.0.0.1' */
  host?: string;
  /** The private key clients must send. @default a generated 'prv_test_' + 32 alphanumerics */
  apiKey?: string;
  /**
   * Users, features, packages, subscriptions and usage to start with, and to go back to on
   * `reset()`. Copied: changing the object afterwards changes nothing.
   */
  seed?: EmulatorSeed;
  /** The clock for usage periods, subscription starts and logs (epoch ms). @default Date.now */
  now?: () => number;
}

export interface KanaEmulator {
  /** The GraphQL endpoint, e.g. 'http://127.0.0.1:54321/graphql'. */
  readonly url: string;
  /** The dashboard page, e.g. 'http://127.0.0.1:54321/'. */
  readonly dashboardUrl: string;
  readonly apiKey: string;
  readonly port: number;
  /**
   * Adds users/features/packages/subscriptions/usage to what is there; validates the whole seed
   * first and writes nothing if any part is wrong (EmulatorSeedError names the field path).
   */
  seed(seed: EmulatorSeed): void;
  /**
   * The user's usage of a feature in the current period of the entitlement in force (all recorded
   * usage when the user has none, or it never resets). Throws for an unknown user or feature id,
   * so that a typo in a test fails instead of reading 0.
   */
  usage(userId: string, featureId: string): number;
  /**
   * Changes the user's usage of a feature by `delta` units (negative removes some), as an edit of
   * Kana's ledger from outside the API would: not logged as a usage call. For tests of drift.
   * @example emulator.adjustUsage('u1', 'reports', -1)
   */
  adjustUsage(userId: string, featureId: string, delta: number): void;
  /** Every usage mutation applied, in order. */
  usageCalls(): readonly UsageCall[];
  /**
   * The requests received on /graphql, in order: the last 10,000 at most (16 MiB of variables and
   * names in all; variables over 64 KiB are not kept). Of a request without the right key, only
   * that it came, when, and its status.
   */
  requests(): readonly EmulatorRequest[];
  /** Scripts a fault for the next matching request(s). */
  failNext(fault: Fault, options?: FailNextOptions): void;
  /** Drops every scripted fault not used yet (requests already held by one stay held); state and logs stay. */
  clearFaults(): void;
  /** Offline: stop listening and drop open sockets. Online again: listen on the same port. */
  setOffline(offline: boolean): Promise<void>;
  /**
   * Back to the start: clears all state, scripted faults and logs, then applies the `seed` given to
   * startKanaEmulator() again (nothing, if none was). Keeps the url, port and key.
   */
  reset(): void;
  /** Idempotent; also closes idle keep-alive sockets. */
  close(): Promise<void>;
}

function checkOptions(options: KanaEmulatorOptions): void {
  const { port, host, apiKey, now } = options;
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    throw new TypeError(`startKanaEmulator: port must be an integer from 0 to 65535, got ${String(port)}`);
  }
  if (host !== undefined && (typeof host !== 'string' || host === '')) {
    throw new TypeError(`startKanaEmulator: host must be a non-empty string, got ${String(host)}`);
  }
  // The key itself is never echoed: only its shape is described.
  if (apiKey !== undefined && (typeof apiKey !== 'string' || !PRIVATE_KEY.test(apiKey))) {
    throw new TypeError(
      'startKanaEmulator: apiKey must be a Kana private key: prv_test_ or prv_live_ followed by letters and digits',
    );
  }
  if (now !== undefined && typeof now !== 'function') {
    throw new TypeError('startKanaEmulator: now must be a function returning epoch ms');
  }
}

/** Starts a local Kana GraphQL server serving Kana's documented schema on POST /graphql. */
export async function startKanaEmulator(options: KanaEmulatorOptions = {}): Promise<KanaEmulator> {
  checkOptions(options);
  const now = options.now ?? Date.now;
  const host = options.host ?? '127.0.0.1';
  const apiKey = options.apiKey ?? generateApiKey();
  const store = new KanaStore(now);
  const faults = new FaultQueue();
  const log = new RequestLog();

  const startSeed = options.seed === undefined ? undefined : structuredClone(options.seed);

  // Seed before binding, so a bad seed throws without leaving a server listening.
  if (startSeed !== undefined) applySeed(store, startSeed, now());

  const schema = buildExecutableSchema(loadSchemaText(), resolvers);
  const endpoint = createGraphQLEndpoint({ schema, store, faults, apiKey, now, log });
  const dashboard = createDashboard({ store, apiKey, host });
  const handler: RequestListener = (req, res) => {
    if (!dashboard.handle(req, res)) endpoint.handle(req, res);
  };
  const server = new EmulatorHttpServer(handler, host, endpoint.cancelPending);
  const port = await server.listen(options.port ?? 0);
  const origin = `http://${urlHost(host)}:${port}`;

  return {
    url: `${origin}/graphql`,
    dashboardUrl: `${origin}/`,
    apiKey,
    port,
    seed: (seed) => applySeed(store, seed, now()),
    usage: (userId, featureId) => store.currentUsage(userId, featureId),
    adjustUsage: (userId, featureId, delta) => {
      if (!Number.isInteger(delta)) throw new TypeError(`adjustUsage: delta must be an integer, got ${String(delta)}`);
      store.adjustUsage(userId, featureId, delta);
    },
    usageCalls: () => store.usageCalls(),
    requests: () => log.entries().map((entry) => ({ ...entry, fieldNames: [...entry.fieldNames] })),
    failNext: (fault, failOptions) => faults.add(fault, failOptions),
    clearFaults: () => faults.clear(),
    setOffline: (offline) => (offline ? server.goOffline() : server.goOnline()),
    reset: () => {
      store.reset();
      faults.clear();
      log.clear();
      if (startSeed !== undefined) applySeed(store, startSeed, now());
    },
    close: () => server.close(),
  };
}
