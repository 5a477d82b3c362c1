// The dashboard: GET / serves the page, GET /dashboard.json the users, plans and usage it shows.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { authFailure } from './api-keys.js';
import { DASHBOARD_CSP, DASHBOARD_HTML } from './dashboard-page.js';
import { hostHeaderName, isLoopbackHost } from './hosts.js';
import type { FeatureType, KanaStore, SubscriptionStatus } from './store.js';

/** What GET /dashboard.json returns. It holds no API key. */
export interface DashboardState {
  users: {
    id: string;
    name: string | null;
    /** All of the user's subscriptions, any status, oldest first. */
    subscriptions: {
      id: string;
      packageId: string;
      packageName: string;
      isAddon: boolean;
      status: SubscriptionStatus;
      /** ACTIVE or TRIALING: the statuses that grant access. */
      entitling: boolean;
      startedAt: string;
    }[];
    /** Features the user is entitled to or has usage recorded for. */
    features: {
      id: string;
      name: string;
      type: FeatureType;
      unitLabel: string | null;
      unitLabelPlural: string | null;
      /** The package whose entitlement is in force; null when no active plan includes the feature. */
      packageId: string | null;
      /** What canUseFeature (delta 1) answers now. */
      access: boolean;
      used: number;
      /** null: unlimited, or not applicable (BINARY, no entitlement). */
      budget: number | null;
      overageEnabled: boolean;
      /** The current usage period; null when usage never resets or there is no entitlement. */
      periodStart: string | null;
      periodEnd: string | null;
    }[];
  }[];
  /** The newest usage events and checks, newest first: the live feed. */
  activity: {
    at: string;
    kind: 'usage' | 'check';
    userId: string;
    featureId: string;
    delta: number;
    /** usage: `recorded` (ADD) or `set` (SET); check: `allowed` or `denied`. */
    outcome: 'recorded' | 'set' | 'allowed' | 'denied';
  }[];
  /** The newest usage calls, oldest first, for the usage-over-time chart. */
  usage: { at: string; userId: string; featureId: string; delta: number; action: 'ADD' | 'SET' }[];
}

/** Entries in the live feed. */
export const FEED_LENGTH = 50;
/** Usage calls the chart is drawn from. */
export const CHART_CALLS = 2000;

export interface DashboardOptions {
  store: KanaStore;
  apiKey: string;
  /** The address the emulator binds: it decides whether dashboard.json asks for the key. */
  host: string;
}

export interface Dashboard {
  /** Answers GET/HEAD / and /dashboard.json; returns false for any other path. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
}

const ENTITLING: ReadonlySet<SubscriptionStatus> = new Set(['ACTIVE', 'TRIALING']);

/** The dashboard's view of the store, computed by the store's own entitlement rules. */
export function dashboardState(store: KanaStore): DashboardState {
  return {
    users: store.listUsers().map((user) => ({
      id: user.id,
      name: user.name,
      subscriptions: store.listSubscriptions(user.id).map((subscription) => {
        const pkg = store.getPackage(subscription.packageId);
        return {
          id: subscription.id,
          packageId: pkg.id,
          packageName: pkg.name,
          isAddon: pkg.isAddon,
          status: subscription.status,
          entitling: ENTITLING.has(subscription.status),
          startedAt: new Date(subscription.startedAt).toISOString(),
        };
      }),
      features: store.featureOverview(user.id).map((row) => ({
        id: row.feature.id,
        name: row.feature.name,
        type: row.feature.type,
        unitLabel: row.feature.unitLabel,
        unitLabelPlural: row.feature.unitLabelPlural,
        packageId: row.packageId,
        access: row.access,
        used: row.used,
        budget: row.budget,
        overageEnabled: row.overageEnabled,
        periodStart: row.period === null ? null : new Date(row.period.start).toISOString(),
        periodEnd: row.period === null ? null : new Date(row.period.end).toISOString(),
      })),
    })),
    activity: activityOf(store),
    usage: store.recentUsageCalls(CHART_CALLS).map((call) => ({
      at: new Date(call.at).toISOString(),
      userId: call.userId,
      featureId: call.featureId,
      delta: call.delta,
      action: call.action,
    })),
  };
}

/** The feed: the newest usage calls and checks merged, newest first. */
function activityOf(store: KanaStore): DashboardState['activity'] {
  const usage = store.recentUsageCalls(FEED_LENGTH).map((call) => ({
    at: call.at,
    kind: 'usage' as const,
    userId: call.userId,
    featureId: call.featureId,
    delta: call.delta,
    outcome: call.action === 'SET' ? ('set' as const) : ('recorded' as const),
  }));
  const checks = store.recentChecks(FEED_LENGTH).map((check) => ({
    at: check.at,
    kind: 'check' as const,
    userId: check.userId,
    featureId: check.featureId,
    delta: check.delta,
    outcome: check.access ? ('allowed' as const) : ('denied' as const),
  }));
  // Newest first; at equal times, the later one (by arrival, usage then checks) first.
  return [...usage, ...checks]
    .map((entry, index) => ({ entry, index }))
    .sort((a, b) => b.entry.at - a.entry.at || b.index - a.index)
    .slice(0, FEED_LENGTH)
    .map(({ entry }) => ({ ...entry, at: new Date(entry.at).toISOString() }));
}

function send(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string>,
): void {
  res.writeHead(status, {
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    ...headers,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function sendJson(req: IncomingMessage, res: ServerResponse, status: number, payload: unknown): void {
  send(req, res, status, JSON.stringify(payload), { 'content-type': 'application/json; charset=utf-8' });
}

/**
 * Access: the page itself holds no data and is always served. dashboard.json holds users and usage
 * but never the key. On a loopback-only emulator it is open to this machine, and a Host header
 * that is not a loopback name is refused (a DNS-rebinding page cannot read it). On an emulator
 * bound beyond loopback, it needs the emulator's API key in the Authorization header, as
 * /graphql does; the page asks for the key.
 */
export function createDashboard({ store, apiKey, host }: DashboardOptions): Dashboard {
  const loopbackOnly = isLoopbackHost(host);

  function refusal(req: IncomingMessage): { status: number; message: string } | null {
    if (loopbackOnly) {
      const hostHeader = req.headers.host;
      if (hostHeader !== undefined && !isLoopbackHost(hostHeaderName(hostHeader))) {
        return { status: 403, message: 'Forbidden: the dashboard answers only to a loopback host name' };
      }
      return null;
    }
    const failure = authFailure(req.headers.authorization, apiKey);
    return failure === null ? null : { status: 401, message: failure };
  }

  return {
    handle(req, res) {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/' && path !== '/dashboard.json') return false;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        send(req, res, 405, 'Method Not Allowed: use GET', {
          allow: 'GET, HEAD',
          'content-type': 'text/plain; charset=utf-8',
        });
        return true;
      }
      if (path === '/') {
        send(req, res, 200, DASHBOARD_HTML, {
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': DASHBOARD_CSP,
          'x-frame-options': 'DENY',
        });
        return true;
      }
      const refused = refusal(req);
      if (refused !== null) {
        sendJson(req, res, refused.status, { error: refused.message });
        return true;
      }
      sendJson(req, res, 200, dashboardState(store));
      return true;
    },
  };
}
