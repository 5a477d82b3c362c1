// GraphQL resolvers: map each field of Kana's schema onto the store, and apply scripted faults (usage not recorded, a failing root field).
import type { GraphQLFieldResolver } from 'graphql';
import { KanaEmulatorError, notSupported } from './errors.js';
import type { FieldFault } from './faults.js';
import type {
  FeatureRecord,
  FeatureType,
  KanaStore,
  PackageFeatureRecord,
  PackageRecord,
  RecordUsageAction,
  ResetPeriod,
  SubscriptionRecord,
} from './store.js';

/** Per-request state handed to every resolver. */
export interface ResolverContext {
  store: KanaStore;
  /** A scripted `{ result: false }` fault: usage mutations apply nothing and report failure. */
  usageNotRecorded: boolean;
  /** A scripted `{ fieldError }` fault: this root field throws, wherever the document selects it (under its alias, if it names one). */
  failingField?: FieldFault | undefined;
}

// biome-ignore lint/suspicious/noExplicitAny: each resolver narrows its own source and args.
type Resolver = GraphQLFieldResolver<any, ResolverContext, any>;
export type ResolverMap = Record<string, Record<string, Resolver>>;

interface UsageInput {
  userId: string;
  featureId: string;
  delta?: number | null;
  action?: RecordUsageAction | null;
}

interface CreatePackageInput {
  id: string;
  name?: string | null;
  isAddon?: boolean | null;
  features: {
    id: string;
    entitlement?: { limit?: number | null; resetPeriod: ResetPeriod; overageEnabled?: boolean | null } | null;
  }[];
  metadata?: unknown;
}

const NOT_RECORDED_REASON = 'Emulated fault: the usage was not recorded';

function toPackageFeatureRecord(store: KanaStore, input: CreatePackageInput['features'][number]): PackageFeatureRecord {
  const type: FeatureType = store.getFeature(input.id).type;
  const entitlement = input.entitlement ?? null;
  return {
    featureId: input.id,
    // A limit applies only to CONSUMABLE features (API.md §5); omitted means unlimited.
    limit: type === 'CONSUMABLE' ? (entitlement?.limit ?? null) : null,
    resetPeriod: entitlement?.resetPeriod ?? null,
    overageEnabled: entitlement?.overageEnabled ?? false,
  };
}

/** Root resolvers that throw the request's `{ fieldError }` fault when it names their field. */
function withFieldFaults(fields: Record<string, Resolver>): Record<string, Resolver> {
  return Object.fromEntries(
    Object.entries(fields).map(([field, resolve]): [string, Resolver] => [
      field,
      (root, args, context: ResolverContext, info) => {
        const fault = context.failingField;
        if (fault?.field === field && (fault.alias === undefined || fault.alias === info.path.key)) {
          throw new KanaEmulatorError(fault.message ?? `Emulated fault: ${field} failed`, {
            code: fault.code ?? 'INTERNAL_SERVER_ERROR',
            name: fault.name ?? 'Error',
          });
        }
        return resolve(root, args, context, info);
      },
    ]),
  );
}

const rootResolvers: ResolverMap = {
  Query: {
    feature: (_root, args: { id: string }, { store }) => store.getFeature(args.id),
    features: (_root, _args, { store }) => store.listFeatures(),
    canUseFeature: (_root, args: { userId: string; featureId: string; delta?: number | null }, { store }) => {
      const delta = args.delta ?? 1;
      const answer = store.entitlement(args.userId, args.featureId, delta);
      store.noteCheck({ userId: args.userId, featureId: args.featureId, delta, access: answer.access });
      return answer;
    },
    showUsage: (_root, args: { userId: string; featureId: string }, { store }) =>
      store.showUsage(args.userId, args.featureId),
    package: (_root, args: { id: string }, { store }) => store.getPackage(args.id),
    packages: (_root, args: { status?: string | null }, { store }) => store.listPackages(args.status),
    user: (_root, args: { id: string }, { store }) => store.getUser(args.id),
    users: (_root, _args, { store }) => store.listUsers(),
    subscription: (_root, args: { id: string }, { store }) => store.getSubscription(args.id),
    subscriptions: (_root, args: { userId?: string | null }, { store }) => store.listSubscriptions(args.userId),
  },

  Mutation: {
    createFeature: (_root, args: { input: Parameters<KanaStore['createFeature']>[0] }, { store }) =>
      store.createFeature(args.input),
    updateFeature: (_root, args: { id: string; input: Parameters<KanaStore['updateFeature']>[1] }, { store }) =>
      store.updateFeature(args.id, args.input),
    // Packages created through the API always start as DRAFT (API.md §7); publishing is a
    // dashboard/CLI action, so tests get PUBLISHED packages through the emulator's seed().
    createPackage: (_root, args: { input: CreatePackageInput }, { store }) =>
      store.createPackage({
        id: args.input.id,
        name: args.input.name,
        isAddon: args.input.isAddon,
        status: 'DRAFT',
        metadata: args.input.metadata,
        features: args.input.features.map((pf) => toPackageFeatureRecord(store, pf)),
      }),
    updatePackage: (_root, args: { id: string; input: { metadata?: unknown } }, { store }) =>
      store.updatePackage(args.id, args.input),
    createUser: (_root, args: { input: Parameters<KanaStore['createUser']>[0] }, { store }) =>
      store.createUser(args.input),
    updateUser: (_root, args: { id: string; input: Parameters<KanaStore['updateUser']>[1] }, { store }) =>
      store.updateUser(args.id, args.input),
    subscribe: (_root, args: { userId: string; packageIds: string[] }, { store }) =>
      store.subscribe(args.userId, args.packageIds),
    recordUsage: (_root, args: { input: UsageInput }, { store, usageNotRecorded }) => {
      if (usageNotRecorded) return { recorded: false, reason: NOT_RECORDED_REASON };
      store.recordUsage('recordUsage', args.input);
      return { recorded: true, reason: null };
    },
    createUsageEvent: (_root, args: { input: UsageInput }, { store, usageNotRecorded }) => {
      if (usageNotRecorded) return false;
      store.recordUsage('createUsageEvent', args.input);
      return true;
    },
    generateSubscriptionLink: () => {
      throw notSupported('generateSubscriptionLink');
    },
    generateUserToken: () => {
      throw notSupported('generateUserToken');
    },
  },
};

export const resolvers: ResolverMap = {
  Query: withFieldFaults(rootResolvers.Query as Record<string, Resolver>),
  Mutation: withFieldFaults(rootResolvers.Mutation as Record<string, Resolver>),

  Feature: {
    packages: (feature: FeatureRecord, _args, { store }) => store.packagesWithFeature(feature.id),
    entitlement: (feature: FeatureRecord, args: { userId: string }, { store }) =>
      store.entitlement(args.userId, feature.id, 1),
  },

  Package: {
    features: (pkg: PackageRecord, _args, { store }) =>
      pkg.features.map((pf) => {
        const feature = store.getFeature(pf.featureId);
        return {
          id: feature.id,
          name: feature.name,
          type: feature.type,
          limit: pf.limit,
          unitLabel: feature.unitLabel,
          unitLabelPlural: feature.unitLabelPlural,
          metadata: null,
        };
      }),
    // Prices come from the billing provider (Stripe), which the emulator does not model.
    prices: () => [],
  },

  PackageSubscription: {
    package: (subscription: SubscriptionRecord, _args, { store }) => store.getPackage(subscription.packageId),
    metadata: () => null,
  },
};
