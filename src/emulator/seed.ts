// seed(): validate a whole EmulatorSeed (errors name the field path), then write it into the store.
import {
  FEATURE_TYPES,
  type FeatureType,
  type KanaStore,
  PACKAGE_STATUSES,
  type PackageStatus,
  RESET_PERIODS,
  type ResetPeriod,
  SUBSCRIPTION_STATUSES,
  type SubscriptionStatus,
} from './store.js';

export interface EmulatorSeed {
  users?: { id: string; name?: string; email?: string; billingId?: string; metadata?: unknown }[];
  features?: {
    id: string;
    name?: string;
    type: FeatureType;
    unitLabel?: string;
    unitLabelPlural?: string;
    metadata?: unknown;
  }[];
  packages?: {
    id: string;
    name?: string;
    isAddon?: boolean;
    /** @default 'PUBLISHED' (unlike createPackage, which always makes a DRAFT) */
    status?: PackageStatus;
    features: { id: string; limit?: number | null; resetPeriod?: ResetPeriod; overageEnabled?: boolean }[];
    metadata?: unknown;
  }[];
  subscriptions?: {
    userId: string;
    packageId: string;
    /** @default 'ACTIVE' */
    status?: SubscriptionStatus;
    /** ISO-8601. @default now */
    startedAt?: string;
  }[];
  /** Starting usage in the current period (not logged as a usage call). */
  usage?: { userId: string; featureId: string; used: number }[];
}

const INT32_MAX = 2_147_483_647;
const INT32_MIN = -2_147_483_648;

type Fields = Record<string, unknown>;

/**
 * A seed that does not fit the EmulatorSeed shape. `path` is the field at fault, e.g.
 * `packages[1].features[0].limit`; the message is `Invalid emulator seed: <path> <problem>`.
 */
export class EmulatorSeedError extends Error {
  override readonly name = 'EmulatorSeedError';

  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(`Invalid emulator seed: ${path} ${problem}`);
  }
}

function fail(path: string, problem: string): never {
  throw new EmulatorSeedError(path, problem);
}

function show(value: unknown): string {
  if (value === undefined) return 'undefined';
  const text = typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isRecord(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function record(value: unknown, path: string, allowed: readonly string[]): Fields {
  if (!isRecord(value)) fail(path, `must be an object, got ${show(value)}`);
  for (const key of Object.keys(value)) {
    // A misspelt field would otherwise be ignored silently.
    if (!allowed.includes(key)) fail(`${path}.${key}`, `is not a known field (expected one of: ${allowed.join(', ')})`);
  }
  return value;
}

function list(value: unknown, path: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) fail(path, `must be an array, got ${show(value)}`);
  return value;
}

function id(fields: Fields, key: string, path: string): string {
  const value = fields[key];
  if (typeof value !== 'string' || value.length === 0)
    fail(`${path}.${key}`, `must be a non-empty string, got ${show(value)}`);
  return value;
}

/** The entry's `id`, which neither an earlier entry of the seed nor the store may have. */
function newId(fields: Fields, path: string, kind: string, exists: (id: string) => boolean): string {
  const value = id(fields, 'id', path);
  if (exists(value)) fail(`${path}.id`, `duplicates the ${kind} id ${show(value)}`);
  return value;
}

function optionalString(fields: Fields, key: string, path: string): void {
  const value = fields[key];
  if (value !== undefined && typeof value !== 'string') fail(`${path}.${key}`, `must be a string, got ${show(value)}`);
}

function optionalBoolean(fields: Fields, key: string, path: string): void {
  const value = fields[key];
  if (value !== undefined && typeof value !== 'boolean')
    fail(`${path}.${key}`, `must be a boolean, got ${show(value)}`);
}

function oneOf<T extends string>(
  fields: Fields,
  key: string,
  path: string,
  allowed: readonly T[],
  required: boolean,
): T | undefined {
  const value = fields[key];
  if (value === undefined && !required) return undefined;
  if (!(allowed as readonly unknown[]).includes(value)) {
    fail(`${path}.${key}`, `must be one of ${allowed.join(', ')}, got ${show(value)}`);
  }
  return value as T;
}

function int32(value: unknown, path: string, what: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > INT32_MAX) {
    fail(path, `must be ${what} (a GraphQL Int), got ${show(value)}`);
  }
  return value;
}

/** Checks the whole seed against the store's current state; throws before anything is written. */
function validateSeed(store: KanaStore, seed: unknown): EmulatorSeed {
  const root = record(seed, 'seed', ['users', 'features', 'packages', 'subscriptions', 'usage']);

  const userIds = new Set<string>();
  const userExists = (userId: string) => userIds.has(userId) || store.hasUser(userId);
  list(root.users, 'users').forEach((value, i) => {
    const path = `users[${i}]`;
    const user = record(value, path, ['id', 'name', 'email', 'billingId', 'metadata']);
    userIds.add(newId(user, path, 'user', userExists));
    for (const key of ['name', 'email', 'billingId']) optionalString(user, key, path);
  });

  const featureTypes = new Map<string, FeatureType>();
  const featureExists = (featureId: string) => featureTypes.has(featureId) || store.hasFeature(featureId);
  list(root.features, 'features').forEach((value, i) => {
    const path = `features[${i}]`;
    const feature = record(value, path, ['id', 'name', 'type', 'unitLabel', 'unitLabelPlural', 'metadata']);
    const featureId = newId(feature, path, 'feature', featureExists);
    featureTypes.set(featureId, oneOf(feature, 'type', path, FEATURE_TYPES, true)!);
    for (const key of ['name', 'unitLabel', 'unitLabelPlural']) optionalString(feature, key, path);
  });
  const featureType = (featureId: string): FeatureType | undefined =>
    featureTypes.get(featureId) ?? (store.hasFeature(featureId) ? store.getFeature(featureId).type : undefined);

  const packageIds = new Set<string>();
  const packageExists = (packageId: string) => packageIds.has(packageId) || store.hasPackage(packageId);
  list(root.packages, 'packages').forEach((value, i) => {
    const path = `packages[${i}]`;
    const pkg = record(value, path, ['id', 'name', 'isAddon', 'status', 'features', 'metadata']);
    const packageId = newId(pkg, path, 'package', packageExists);
    packageIds.add(packageId);
    optionalString(pkg, 'name', path);
    optionalBoolean(pkg, 'isAddon', path);
    oneOf(pkg, 'status', path, PACKAGE_STATUSES, false);
    if (pkg.features === undefined) fail(`${path}.features`, 'is required (an array, possibly empty)');
    const inPackage = new Set<string>();
    list(pkg.features, `${path}.features`).forEach((pfValue, j) => {
      const pfPath = `${path}.features[${j}]`;
      const pf = record(pfValue, pfPath, ['id', 'limit', 'resetPeriod', 'overageEnabled']);
      const featureId = id(pf, 'id', pfPath);
      const type = featureType(featureId);
      if (type === undefined) fail(`${pfPath}.id`, `names an unknown feature ${show(featureId)}`);
      if (inPackage.has(featureId)) fail(`${pfPath}.id`, `lists the feature ${show(featureId)} twice in one package`);
      inPackage.add(featureId);
      if (pf.limit !== undefined && pf.limit !== null) {
        if (type === 'BINARY') {
          fail(
            `${pfPath}.limit`,
            `must be omitted: ${show(featureId)} is a BINARY feature (limits are for CONSUMABLE ones)`,
          );
        }
        int32(pf.limit, `${pfPath}.limit`, 'a non-negative integer or null', 0);
      }
      oneOf(pf, 'resetPeriod', pfPath, RESET_PERIODS, false);
      optionalBoolean(pf, 'overageEnabled', pfPath);
    });
  });

  list(root.subscriptions, 'subscriptions').forEach((value, i) => {
    const path = `subscriptions[${i}]`;
    const subscription = record(value, path, ['userId', 'packageId', 'status', 'startedAt']);
    const userId = id(subscription, 'userId', path);
    if (!userExists(userId)) fail(`${path}.userId`, `names an unknown user ${show(userId)}`);
    const packageId = id(subscription, 'packageId', path);
    if (!packageExists(packageId)) fail(`${path}.packageId`, `names an unknown package ${show(packageId)}`);
    oneOf(subscription, 'status', path, SUBSCRIPTION_STATUSES, false);
    const startedAt = subscription.startedAt;
    if (startedAt !== undefined && (typeof startedAt !== 'string' || Number.isNaN(Date.parse(startedAt)))) {
      fail(`${path}.startedAt`, `must be an ISO-8601 date-time string, got ${show(startedAt)}`);
    }
  });

  list(root.usage, 'usage').forEach((value, i) => {
    const path = `usage[${i}]`;
    const usage = record(value, path, ['userId', 'featureId', 'used']);
    const userId = id(usage, 'userId', path);
    if (!userExists(userId)) fail(`${path}.userId`, `names an unknown user ${show(userId)}`);
    const featureId = id(usage, 'featureId', path);
    if (featureType(featureId) === undefined) fail(`${path}.featureId`, `names an unknown feature ${show(featureId)}`);
    int32(usage.used, `${path}.used`, 'an integer', INT32_MIN);
  });

  return root as EmulatorSeed;
}

/** Validates, then writes in dependency order: users, features, packages, subscriptions, usage. */
export function applySeed(store: KanaStore, seed: EmulatorSeed, now: number): void {
  const valid = validateSeed(store, seed);
  for (const user of valid.users ?? []) store.createUser(user);
  for (const feature of valid.features ?? []) store.createFeature(feature);
  for (const pkg of valid.packages ?? []) {
    store.createPackage({
      id: pkg.id,
      name: pkg.name,
      isAddon: pkg.isAddon,
      status: pkg.status ?? 'PUBLISHED',
      features: pkg.features.map((pf) => ({
        featureId: pf.id,
        limit: pf.limit ?? null,
        resetPeriod: pf.resetPeriod ?? null,
        overageEnabled: pf.overageEnabled ?? false,
      })),
      metadata: pkg.metadata,
    });
  }
  for (const subscription of valid.subscriptions ?? []) {
    store.insertSubscription({
      userId: subscription.userId,
      packageId: subscription.packageId,
      status: subscription.status ?? 'ACTIVE',
      startedAt: subscription.startedAt === undefined ? now : Date.parse(subscription.startedAt),
    });
  }
  for (const usage of valid.usage ?? []) store.setStartingUsage(usage.userId, usage.featureId, usage.used);
}
