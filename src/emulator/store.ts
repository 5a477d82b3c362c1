// In-memory Kana state and its semantics: entitlements, consumption, usage periods, subscribe rules.
import {
  badInput,
  featureNotFound,
  KanaEmulatorError,
  packageNotFound,
  subscriptionError,
  subscriptionNotFound,
  userNotFound,
} from './errors.js';
import { type Period, periodAt, periodBoundary, periodIndex, type ResetPeriod } from './periods.js';

export type { ResetPeriod } from './periods.js';
export type FeatureType = 'BINARY' | 'CONSUMABLE';
export type PackageStatus = 'DRAFT' | 'PUBLISHED' | 'ARCHIVED';
export type SubscriptionStatus =
  | 'ACTIVE'
  | 'TRIALING'
  | 'CANCELLED'
  | 'PAST_DUE'
  | 'UNPAID'
  | 'INCOMPLETE'
  | 'INCOMPLETE_EXPIRED';
export type RecordUsageAction = 'ADD' | 'SET';

export const FEATURE_TYPES: readonly FeatureType[] = ['BINARY', 'CONSUMABLE'];
export const PACKAGE_STATUSES: readonly PackageStatus[] = ['DRAFT', 'PUBLISHED', 'ARCHIVED'];
export const RESET_PERIODS: readonly ResetPeriod[] = ['DAY', 'MONTH', 'YEAR'];
export const SUBSCRIPTION_STATUSES: readonly SubscriptionStatus[] = [
  'ACTIVE',
  'TRIALING',
  'CANCELLED',
  'PAST_DUE',
  'UNPAID',
  'INCOMPLETE',
  'INCOMPLETE_EXPIRED',
];

/** Only these statuses grant access (API.md §11.3). */
const ENTITLING_STATUSES: ReadonlySet<SubscriptionStatus> = new Set(['ACTIVE', 'TRIALING']);

/** The three `subscribe` errors Kana documents, verbatim (API.md §3). */
export const SUBSCRIBE_ERRORS = {
  packageNotFound: 'Package Id not found for app',
  multipleTiers: 'Cannot subscribe to multiple tiers',
  addonWithoutBase: 'Cannot subscribe to addon. Missing live tier subscription.',
} as const;

/**
 * `reason` strings. Only `consumableAllowed` is Kana's (verbatim, typo included: API.md §7); the
 * others are the emulator's own wording, kept distinct so a caller can tell the cases apart.
 */
export const REASONS = {
  consumableAllowed:
    'The user has a subcription to a package with this consumable feature and either has an allowance remaining or overage is enabled.',
  binaryAllowed: 'The user has a subscription to a package with this binary feature.',
  notSubscribed: 'The user has no active or trialing subscription to a package with this feature.',
  limitReached:
    'The user does not have enough allowance remaining for this consumable feature and overage is not enabled.',
} as const;

export interface UserRecord {
  id: string;
  name: string | null;
  email: string | null;
  billingId: string | null;
  metadata: unknown;
}

export interface FeatureRecord {
  id: string;
  name: string;
  type: FeatureType;
  unitLabel: string | null;
  unitLabelPlural: string | null;
  metadata: unknown;
}

export interface PackageFeatureRecord {
  featureId: string;
  /** null = unlimited. */
  limit: number | null;
  /** null = usage never resets. */
  resetPeriod: ResetPeriod | null;
  overageEnabled: boolean;
}

export interface PackageRecord {
  id: string;
  name: string;
  isAddon: boolean;
  status: PackageStatus;
  features: PackageFeatureRecord[];
  metadata: unknown;
  updatedAt: number;
}

export interface SubscriptionRecord {
  id: string;
  userId: string;
  packageId: string;
  status: SubscriptionStatus;
  startedAt: number;
}

export interface Consumption {
  used: number;
  budget: number | null;
  overageEnabled: boolean;
}

export interface EntitlementResult {
  access: boolean;
  reason: string;
  consumption: Consumption | null;
}

/** One feature of one user as the dashboard shows it (`KanaStore.featureOverview`). */
export interface FeatureOverview {
  feature: FeatureRecord;
  /** The package whose entitlement is in force; null when no ACTIVE/TRIALING subscription grants it. */
  packageId: string | null;
  /** What canUseFeature with the default delta (1) answers now. */
  access: boolean;
  reason: string;
  /** In the current period; all recorded usage when there is no entitlement or it never resets. */
  used: number;
  /** null = unlimited (or not applicable: a BINARY feature, no entitlement). */
  budget: number | null;
  overageEnabled: boolean;
  /** The current usage period; null when the usage never resets or there is no entitlement. */
  period: Period | null;
}

export interface UsagePeriod {
  periodStart: number;
  periodEnd: number;
  consumption: Consumption;
}

/** One applied usage mutation, as `KanaEmulator.usageCalls()` reports it. */
export interface UsageCall {
  operation: 'createUsageEvent' | 'recordUsage';
  userId: string;
  featureId: string;
  delta: number;
  action: RecordUsageAction;
  /** Epoch milliseconds from the emulator's clock. */
  at: number;
}

/** One canUseFeature answered, as the dashboard's feed shows it. */
export interface CheckRecord {
  userId: string;
  featureId: string;
  delta: number;
  access: boolean;
  /** Epoch milliseconds from the emulator's clock. */
  at: number;
}

/** Checks kept for the dashboard's feed: the newest. */
const MAX_CHECKS_KEPT = 200;

export interface NewUser {
  id: string;
  name?: string | null;
  email?: string | null;
  billingId?: string | null;
  metadata?: unknown;
}

export interface NewFeature {
  id: string;
  name?: string | null;
  type: FeatureType;
  unitLabel?: string | null;
  unitLabelPlural?: string | null;
  metadata?: unknown;
}

export interface NewPackage {
  id: string;
  name?: string | null;
  isAddon?: boolean | null;
  status: PackageStatus;
  features: PackageFeatureRecord[];
  metadata?: unknown;
}

export interface NewSubscription {
  userId: string;
  packageId: string;
  status: SubscriptionStatus;
  startedAt: number;
}

interface UsageEvent {
  at: number;
  delta: number;
  action: RecordUsageAction;
}

/**
 * Every usage event of one user and feature, in arrival order. Usage is never stored as a running
 * total because the period it belongs to depends on the subscription in force when it is read;
 * `memo` makes repeated reads of the same period incremental (the benchmarks record many events).
 */
interface UsageLedger {
  events: UsageEvent[];
  memo: { start: number; end: number; scanned: number; used: number } | null;
}

const ALL_TIME: Period = { start: -Infinity, end: Infinity };

function copyJson(value: unknown): unknown {
  return value === undefined ? null : structuredClone(value);
}

export class KanaStore {
  private readonly users = new Map<string, UserRecord>();
  private readonly features = new Map<string, FeatureRecord>();
  private readonly packages = new Map<string, PackageRecord>();
  private readonly subscriptions = new Map<string, SubscriptionRecord>();
  /** userId -> featureId -> ledger */
  private readonly usage = new Map<string, Map<string, UsageLedger>>();
  private readonly calls: UsageCall[] = [];
  private readonly checks: CheckRecord[] = [];
  private nextSubscriptionId = 1;

  constructor(private readonly now: () => number) {}

  reset(): void {
    this.users.clear();
    this.features.clear();
    this.packages.clear();
    this.subscriptions.clear();
    this.usage.clear();
    this.calls.length = 0;
    this.checks.length = 0;
    this.nextSubscriptionId = 1;
  }

  // ------------------------------------------------------------------ users

  hasUser(id: string): boolean {
    return this.users.has(id);
  }

  getUser(id: string): UserRecord {
    const user = this.users.get(id);
    if (user === undefined) throw userNotFound(id);
    return user;
  }

  listUsers(): UserRecord[] {
    return [...this.users.values()];
  }

  // Kana does not document what happens on a duplicate id (API.md §12); rejecting is the safer guess.
  createUser(input: NewUser): UserRecord {
    if (this.users.has(input.id)) throw badInput(`A user with id "${input.id}" already exists`);
    const user: UserRecord = {
      id: input.id,
      name: input.name ?? null,
      email: input.email ?? null,
      billingId: input.billingId ?? null,
      metadata: copyJson(input.metadata),
    };
    this.users.set(user.id, user);
    return user;
  }

  /** `input.id` is the new id: updateUser can rename a user (API.md §6); subscriptions and usage follow. */
  updateUser(id: string, input: { id: string; name?: string | null; metadata?: unknown }): UserRecord {
    const user = this.getUser(id);
    const newId = input.id;
    if (newId !== id && this.users.has(newId)) throw badInput(`A user with id "${newId}" already exists`);
    if (input.name !== undefined) user.name = input.name;
    if (input.metadata !== undefined) user.metadata = copyJson(input.metadata);
    if (newId !== id) {
      user.id = newId;
      // Rebuild the map so the renamed user keeps its place in `users` listings.
      const records = [...this.users.values()];
      this.users.clear();
      for (const record of records) this.users.set(record.id, record);
      for (const subscription of this.subscriptions.values()) {
        if (subscription.userId === id) subscription.userId = newId;
      }
      const ledgers = this.usage.get(id);
      if (ledgers !== undefined) {
        this.usage.delete(id);
        this.usage.set(newId, ledgers);
      }
    }
    return user;
  }

  // ------------------------------------------------------------------ features

  hasFeature(id: string): boolean {
    return this.features.has(id);
  }

  getFeature(id: string): FeatureRecord {
    const feature = this.features.get(id);
    if (feature === undefined) throw featureNotFound(id);
    return feature;
  }

  listFeatures(): FeatureRecord[] {
    return [...this.features.values()];
  }

  createFeature(input: NewFeature): FeatureRecord {
    if (this.features.has(input.id)) throw badInput(`A feature with id "${input.id}" already exists`);
    const feature: FeatureRecord = {
      id: input.id,
      // CreateFeatureInput.name is nullable but Feature.name is not: fall back to the id.
      name: input.name ?? input.id,
      type: input.type,
      unitLabel: input.unitLabel ?? null,
      unitLabelPlural: input.unitLabelPlural ?? null,
      metadata: copyJson(input.metadata),
    };
    this.features.set(feature.id, feature);
    return feature;
  }

  /** The type cannot change (API.md §6); absent fields are left as they are. */
  updateFeature(
    id: string,
    input: { name?: string | null; unitLabel?: string | null; unitLabelPlural?: string | null; metadata?: unknown },
  ): FeatureRecord {
    const feature = this.getFeature(id);
    if (input.name !== undefined) feature.name = input.name ?? feature.id;
    if (input.unitLabel !== undefined) feature.unitLabel = input.unitLabel;
    if (input.unitLabelPlural !== undefined) feature.unitLabelPlural = input.unitLabelPlural;
    if (input.metadata !== undefined) feature.metadata = copyJson(input.metadata);
    return feature;
  }

  // ------------------------------------------------------------------ packages

  hasPackage(id: string): boolean {
    return this.packages.has(id);
  }

  getPackage(id: string): PackageRecord {
    const pkg = this.packages.get(id);
    if (pkg === undefined) throw packageNotFound(id);
    return pkg;
  }

  /** `status` is a String argument in Kana's schema, PUBLISHED by default, ALL for every status. */
  listPackages(status: string | null | undefined): PackageRecord[] {
    const filter = status ?? 'PUBLISHED';
    const all = [...this.packages.values()];
    if (filter === 'ALL') return all;
    if (!(PACKAGE_STATUSES as readonly string[]).includes(filter)) {
      throw badInput(`Invalid package status "${filter}": expected one of ARCHIVED, DRAFT, PUBLISHED, ALL`);
    }
    return all.filter((pkg) => pkg.status === filter);
  }

  packagesWithFeature(featureId: string): PackageRecord[] {
    return [...this.packages.values()].filter((pkg) => pkg.features.some((pf) => pf.featureId === featureId));
  }

  createPackage(input: NewPackage): PackageRecord {
    if (this.packages.has(input.id)) throw badInput(`A package with id "${input.id}" already exists`);
    const seen = new Set<string>();
    for (const pf of input.features) {
      this.getFeature(pf.featureId);
      if (seen.has(pf.featureId)) throw badInput(`Feature "${pf.featureId}" appears twice in package "${input.id}"`);
      seen.add(pf.featureId);
    }
    const pkg: PackageRecord = {
      id: input.id,
      name: input.name ?? input.id,
      isAddon: input.isAddon ?? false,
      status: input.status,
      features: input.features.map((pf) => ({ ...pf })),
      metadata: copyJson(input.metadata),
      updatedAt: this.now(),
    };
    this.packages.set(pkg.id, pkg);
    return pkg;
  }

  updatePackage(id: string, input: { metadata?: unknown }): PackageRecord {
    const pkg = this.getPackage(id);
    if (input.metadata !== undefined) pkg.metadata = copyJson(input.metadata);
    pkg.updatedAt = this.now();
    return pkg;
  }

  // ------------------------------------------------------------------ subscriptions

  getSubscription(id: string): SubscriptionRecord {
    const subscription = this.subscriptions.get(id);
    if (subscription === undefined) throw subscriptionNotFound(id);
    return subscription;
  }

  listSubscriptions(userId: string | null | undefined): SubscriptionRecord[] {
    const all = [...this.subscriptions.values()];
    if (userId == null) return all;
    this.getUser(userId);
    return all.filter((s) => s.userId === userId);
  }

  /** Writes a subscription row as it is (seeding); `subscribe` is the rule-checking path. */
  insertSubscription(input: NewSubscription): SubscriptionRecord {
    this.getUser(input.userId);
    this.getPackage(input.packageId);
    const subscription: SubscriptionRecord = { id: String(this.nextSubscriptionId++), ...input };
    this.subscriptions.set(subscription.id, subscription);
    return subscription;
  }

  /**
   * Kana's rules (API.md §7, §11.2): only PUBLISHED packages; at most one base package, counting
   * the ones already held; an add-on needs a base, held or in the same call. All or nothing.
   * "Held" means an ACTIVE or TRIALING subscription, the same statuses that grant access.
   */
  subscribe(userId: string, packageIds: readonly string[]): SubscriptionRecord[] {
    this.getUser(userId);
    const packages = packageIds.map((id) => {
      const pkg = this.packages.get(id);
      if (pkg === undefined) {
        const name = 'PackageNotFoundError';
        throw new KanaEmulatorError(SUBSCRIBE_ERRORS.packageNotFound, { code: 'BAD_USER_INPUT', name });
      }
      // Kana documents the rule but not this error's text: the message is made up.
      if (pkg.status !== 'PUBLISHED') {
        throw subscriptionError(`Package "${id}" is not published (status ${pkg.status})`);
      }
      return pkg;
    });
    const newBases = packages.filter((pkg) => !pkg.isAddon);
    const holdsBase = [...this.subscriptions.values()].some(
      (s) =>
        s.userId === userId && ENTITLING_STATUSES.has(s.status) && this.packages.get(s.packageId)?.isAddon === false,
    );
    if (newBases.length > 1 || (newBases.length === 1 && holdsBase)) {
      throw subscriptionError(SUBSCRIBE_ERRORS.multipleTiers);
    }
    if (packages.some((pkg) => pkg.isAddon) && newBases.length === 0 && !holdsBase) {
      throw subscriptionError(SUBSCRIBE_ERRORS.addonWithoutBase);
    }
    const startedAt = this.now();
    return packages.map((pkg) => this.insertSubscription({ userId, packageId: pkg.id, status: 'ACTIVE', startedAt }));
  }

  // ------------------------------------------------------------------ usage

  /** Applies one usage mutation (recordUsage and createUsageEvent share this store, API.md §8). */
  recordUsage(
    operation: UsageCall['operation'],
    input: { userId: string; featureId: string; delta?: number | null; action?: RecordUsageAction | null },
  ): UsageCall {
    this.getUser(input.userId);
    this.getFeature(input.featureId);
    // Kana does not enforce limits when recording (API.md §11.10): usage may exceed the budget.
    const call: UsageCall = {
      operation,
      userId: input.userId,
      featureId: input.featureId,
      delta: input.delta ?? 1,
      action: input.action ?? 'ADD',
      at: this.now(),
    };
    this.appendUsage(call.userId, call.featureId, { at: call.at, delta: call.delta, action: call.action });
    this.calls.push(call);
    return call;
  }

  /** Seeds a starting total for the current period without logging a usage call. */
  setStartingUsage(userId: string, featureId: string, used: number): void {
    this.getUser(userId);
    this.getFeature(featureId);
    this.appendUsage(userId, featureId, { at: this.now(), delta: used, action: 'SET' });
  }

  /** Notes a canUseFeature answered (the dashboard's feed); the newest MAX_CHECKS_KEPT are kept. */
  noteCheck(check: Omit<CheckRecord, 'at'>): void {
    this.checks.push({ ...check, at: this.now() });
    if (this.checks.length > MAX_CHECKS_KEPT) this.checks.splice(0, this.checks.length - MAX_CHECKS_KEPT);
  }

  /** The newest `limit` checks, oldest first. */
  recentChecks(limit: number): readonly CheckRecord[] {
    return this.checks.slice(-limit);
  }

  /** The newest `limit` usage calls, oldest first (not copied: read only). */
  recentUsageCalls(limit: number): readonly UsageCall[] {
    return this.calls.slice(-limit);
  }

  /** Adds `delta` (negative to remove units) to the current period's usage without logging a usage call. */
  adjustUsage(userId: string, featureId: string, delta: number): void {
    this.getUser(userId);
    this.getFeature(featureId);
    this.appendUsage(userId, featureId, { at: this.now(), delta, action: 'ADD' });
  }

  usageCalls(): readonly UsageCall[] {
    return this.calls.map((call) => ({ ...call }));
  }

  /** Used in the current period of the governing entitlement (all time when none or no reset). */
  currentUsage(userId: string, featureId: string): number {
    this.getUser(userId);
    this.getFeature(featureId);
    const governing = this.governingEntitlement(userId, featureId);
    return this.usedIn(userId, featureId, governing === null ? ALL_TIME : this.currentPeriod(governing));
  }

  // ------------------------------------------------------------------ entitlements

  /** canUseFeature and Feature.entitlement (API.md §11.8). */
  entitlement(userId: string, featureId: string, delta: number): EntitlementResult {
    this.getUser(userId);
    const feature = this.getFeature(featureId);
    const governing = this.governingEntitlement(userId, featureId);
    if (governing === null) return { access: false, reason: REASONS.notSubscribed, consumption: null };
    if (feature.type === 'BINARY') return { access: true, reason: REASONS.binaryAllowed, consumption: null };
    const consumption = this.consumption(userId, governing, this.currentPeriod(governing));
    const { used, budget, overageEnabled } = consumption;
    const access = budget === null || overageEnabled || used + delta <= budget;
    return { access, reason: access ? REASONS.consumableAllowed : REASONS.limitReached, consumption };
  }

  /**
   * showUsage: the current period and every earlier period (since the governing subscription
   * started) in which usage was recorded, oldest first. `current` is null when there is no period
   * to report: no entitlement, a BINARY feature, or a feature that never resets (periodEnd is
   * non-null in the schema, and such usage has no end).
   */
  showUsage(userId: string, featureId: string): { current: UsagePeriod | null; past: UsagePeriod[] } {
    this.getUser(userId);
    const feature = this.getFeature(featureId);
    const governing = this.governingEntitlement(userId, featureId);
    if (governing === null || feature.type === 'BINARY' || governing.packageFeature.resetPeriod === null) {
      return { current: null, past: [] };
    }
    const resetPeriod = governing.packageFeature.resetPeriod;
    const anchor = governing.subscription.startedAt;
    const current = this.currentPeriod(governing);
    const currentIndex = periodIndex(anchor, resetPeriod, current.start);
    const pastIndexes = new Set<number>();
    for (const event of this.ledger(userId, featureId)?.events ?? []) {
      const index = periodIndex(anchor, resetPeriod, event.at);
      if (index >= 0 && index < currentIndex) pastIndexes.add(index);
    }
    const toUsagePeriod = (period: Period): UsagePeriod => ({
      periodStart: period.start,
      periodEnd: period.end,
      consumption: this.consumption(userId, governing, period),
    });
    const past = [...pastIndexes]
      .sort((a, b) => a - b)
      .map((n) =>
        toUsagePeriod({
          start: periodBoundary(anchor, resetPeriod, n),
          end: periodBoundary(anchor, resetPeriod, n + 1),
        }),
      );
    return { current: toUsagePeriod(current), past };
  }

  /**
   * Every feature the user is entitled to (through an ACTIVE/TRIALING subscription) or has usage
   * recorded for, in feature order, computed by the same rules as canUseFeature and showUsage.
   */
  featureOverview(userId: string): FeatureOverview[] {
    this.getUser(userId);
    const recorded = this.usage.get(userId);
    const rows: FeatureOverview[] = [];
    for (const feature of this.features.values()) {
      const governing = this.governingEntitlement(userId, feature.id);
      if (governing === null && recorded?.has(feature.id) !== true) continue;
      const { access, reason, consumption } = this.entitlement(userId, feature.id, 1);
      const resetPeriod = governing?.packageFeature.resetPeriod ?? null;
      rows.push({
        feature,
        packageId: governing?.subscription.packageId ?? null,
        access,
        reason,
        used: consumption?.used ?? this.currentUsage(userId, feature.id),
        budget: consumption?.budget ?? null,
        overageEnabled: consumption?.overageEnabled ?? false,
        period: governing === null || resetPeriod === null ? null : this.currentPeriod(governing),
      });
    }
    return rows;
  }

  /**
   * The entitlement in force: among the user's ACTIVE/TRIALING subscriptions to packages with this
   * feature, the one with the highest limit; null (unlimited) beats every number (API.md §11.4,
   * the null rule is [I]). On a tie the earliest subscription wins.
   */
  private governingEntitlement(
    userId: string,
    featureId: string,
  ): { subscription: SubscriptionRecord; packageFeature: PackageFeatureRecord } | null {
    let best: { subscription: SubscriptionRecord; packageFeature: PackageFeatureRecord } | null = null;
    for (const subscription of this.subscriptions.values()) {
      if (subscription.userId !== userId || !ENTITLING_STATUSES.has(subscription.status)) continue;
      const pkg = this.packages.get(subscription.packageId);
      const packageFeature = pkg?.features.find((pf) => pf.featureId === featureId);
      if (packageFeature === undefined) continue;
      const limit = packageFeature.limit ?? Infinity;
      if (best === null || limit > (best.packageFeature.limit ?? Infinity)) best = { subscription, packageFeature };
    }
    return best;
  }

  private currentPeriod(governing: { subscription: SubscriptionRecord; packageFeature: PackageFeatureRecord }): Period {
    const { resetPeriod } = governing.packageFeature;
    if (resetPeriod === null) return ALL_TIME;
    return periodAt(governing.subscription.startedAt, resetPeriod, this.now());
  }

  private consumption(
    userId: string,
    governing: { packageFeature: PackageFeatureRecord },
    period: Period,
  ): Consumption {
    const { featureId, limit, overageEnabled } = governing.packageFeature;
    return { used: this.usedIn(userId, featureId, period), budget: limit, overageEnabled };
  }

  private ledger(userId: string, featureId: string): UsageLedger | undefined {
    return this.usage.get(userId)?.get(featureId);
  }

  private appendUsage(userId: string, featureId: string, event: UsageEvent): void {
    let byFeature = this.usage.get(userId);
    if (byFeature === undefined) {
      byFeature = new Map();
      this.usage.set(userId, byFeature);
    }
    let ledger = byFeature.get(featureId);
    if (ledger === undefined) {
      ledger = { events: [], memo: null };
      byFeature.set(featureId, ledger);
    }
    ledger.events.push(event);
  }

  /** Replays the events inside `period` in arrival order: ADD adds, SET overwrites the total. */
  private usedIn(userId: string, featureId: string, period: Period): number {
    const ledger = this.ledger(userId, featureId);
    if (ledger === undefined) return 0;
    let memo = ledger.memo;
    if (memo === null || memo.start !== period.start || memo.end !== period.end) {
      memo = { start: period.start, end: period.end, scanned: 0, used: 0 };
    }
    const { events } = ledger;
    for (let i = memo.scanned; i < events.length; i += 1) {
      const event = events[i]!;
      if (event.at < period.start || event.at >= period.end) continue;
      memo.used = event.action === 'SET' ? event.delta : memo.used + event.delta;
    }
    memo.scanned = events.length;
    ledger.memo = memo;
    return memo.used;
  }
}
