// kanaMeter() options: their public types, defaults and validation into one frozen config.

import type { Request, Response } from 'express';
import { type AuditOptions, parseAudit } from './audit/audit-options.js';
import type { EnforceMode, KanaErrorPolicy, RefusedDecision } from './config/decision.js';
import type { KanaError } from './config/errors.js';
import { type KanaLogger, parseLogger } from './config/logger.js';
import { type KanaMeterMetrics, parseMetrics } from './config/metrics.js';
import {
  checkBoolean,
  checkEnforce,
  checkFunction,
  checkInteger,
  checkNumber,
  checkOneOf,
  hasMethods,
  knownKeys,
  optionError,
  rejectUnknownKeys,
} from './config/option-checks.js';
import {
  type ClientSettings,
  DEFAULT_CHECK_TIMEOUT_MS,
  KanaClient,
  parseClientOptions,
  type UsageMutation,
} from './kana/client.js';
import { compileRoutes, type RouteMap, type RouteMatcher } from './metering/routes.js';
import type { KanaMeterStore } from './stores/store.js';

/** The usage kana-meter could not deliver, as passed to `onDeliveryFailure`. */
export interface UndeliveredUsage {
  readonly userId: string;
  readonly featureId: string;
  /** Units not recorded: the sum of the deltas of `events` coalesced events. */
  readonly delta: number;
  /** How many captured events this usage stands for. */
  readonly events: number;
  /** When the oldest of them was captured. */
  readonly firstCapturedAt: Date;
}

export interface SpoolOptions {
  /**
   * The spool file (`path.spill` and `path.lock` go beside it, all created 0600). Its directory
   * must exist, and only this service's user should be able to write to it. One owner per spool:
   * a lock keeps other processes, and other kanaMeter()s of this one, off it.
   * @default none: required
   * @example '/var/lib/my-api/kana-usage.spool'
   */
  path: string;
  /**
   * Also write every captured event to the spool as it happens, so usage survives a crash or
   * SIGKILL (not a power loss: writes are not fsync'd one by one). Costs one write(2) per event.
   * @default false
   * @example true
   */
  writeAhead?: boolean;
}

/** p-retry's backoff settings for one Kana call. */
export interface RetryOptions {
  /**
   * Retries after the first attempt.
   * @default 5
   * @example 8
   */
  retries?: number;
  /**
   * Delay before the first retry, in milliseconds.
   * @default 100
   * @example 250
   */
  minTimeout?: number;
  /**
   * Longest delay between two retries, in milliseconds.
   * @default 10000
   * @example 30_000
   */
  maxTimeout?: number;
  /**
   * Exponential factor between delays.
   * @default 2
   * @example 3
   */
  factor?: number;
  /**
   * Multiply each delay by a random factor in [1, 2) (jitter), so many processes do not retry in step.
   * @default true
   * @example false
   */
  randomize?: boolean;
}

export interface IdempotencyKeyOptions {
  /**
   * The request header carrying the key.
   * @default 'Idempotency-Key'
   * @example 'X-Request-Id'
   */
  header?: string;
  /**
   * How long a billed key is remembered, in milliseconds.
   * @default 86400000 (24 hours)
   * @example 3_600_000
   */
  ttlMs?: number;
  /**
   * Most keys remembered (one per user and key, with its stored response). When full, the oldest
   * keys go first (in this process's memory, 1% of maxKeys at a time), and a retry of one of their
   * requests runs, and is billed, again.
   * @default 100000
   * @example 1_000_000
   */
  maxKeys?: number;
  /**
   * Most bytes of stored responses kept (bodies and headers; with `RedisStore`, for the whole
   * fleet). When full, the oldest go first. One response over 1 MiB is never stored.
   * @default 67108864 (64 MiB)
   * @example 268_435_456
   */
  maxBytes?: number;
}

/** Replaces the response to a refused request; see `onDenied`. It gets no `next`: a refused request never reaches its handler. */
export type DeniedHandler = (req: Request, res: Response, decision: RefusedDecision) => void | Promise<void>;

export type { KanaErrorPolicy };

/** What an enforced request without a user gets: refused with 401, or served unchecked and unbilled. */
export type AnonymousPolicy = 'refuse' | 'allow';

export interface KanaMeterOptions {
  /**
   * Your Kana private key (`prv_live_...`), sent as the `Authorization` header, so a valid header
   * value (printable ASCII, no CR, LF or NUL). Required unless `client` is given. Never logged.
   * @example process.env.KANA_API_KEY
   * @default undefined (required unless `client` is given)
   */
  apiKey?: string;
  /**
   * Kana's GraphQL endpoint, without credentials in it. Plain `http://` to another host logs a
   * warning: the key would travel in cleartext.
   * @default 'https://api.usekana.com/graphql'
   * @example process.env.KANA_ENDPOINT ?? 'https://api.usekana.com/graphql'
   */
  endpoint?: string;
  /**
   * A ready KanaClient to use instead of `apiKey`/`endpoint`/`mutation`/`timeoutMs`/`fetch`.
   * @default undefined (built from `apiKey`, `endpoint`, `mutation`, `timeoutMs`, `fetch`)
   * @example new KanaClient({ apiKey: process.env.KANA_API_KEY, mutation: 'recordUsage' })
   */
  client?: KanaClient;
  /**
   * The Kana user id of a request: a string or number (sent as a String), or undefined/null/''
   * for a request that is not billed. May be async. Called once the response has finished; on an
   * enforced request, called once before the handler instead (so authentication must run before
   * kanaMeter/meter() there), and that value is billed. It must come from your authentication
   * (a session, a verified token or API key), never from a header or parameter a client may set:
   * whoever picks the id picks who pays. No id on an enforced route: see `anonymous`.
   * @example (req) => req.user?.kanaId
   * @default none: required
   */
  userId: (
    req: Request,
    res: Response,
  ) => string | number | null | undefined | Promise<string | number | null | undefined>;
  /**
   * Route -> feature map.
   * @default {}
   * @example { 'POST /api/search': 'api-calls', 'GET /api/items/:id': { feature: 'item-reads', delta: 2 } }
   */
  routes?: RouteMap;
  /**
   * Whether a finished response counts as a successful use of the feature.
   * @default (req, res) => res.statusCode >= 200 && res.statusCode < 300
   * @example (req, res) => res.statusCode < 400
   */
  isSuccess?: (req: Request, res: Response) => boolean;
  /**
   * The mutation that records usage: `createUsageEvent` (Kana's usage guide, returns Boolean) or
   * `recordUsage` (Kana's current reference, returns `{ recorded, reason }`).
   * @default 'createUsageEvent'
   * @example 'recordUsage'
   */
  mutation?: UsageMutation;
  /**
   * Time limit of one Kana call, in milliseconds.
   * @default 10000
   * @example 5000
   */
  timeoutMs?: number;
  /**
   * Backoff of a failed Kana call (p-retry options).
   * @default { retries: 5, minTimeout: 100, maxTimeout: 10000, factor: 2, randomize: true }
   * @example { retries: 8, maxTimeout: 30_000 }
   */
  retry?: RetryOptions;
  /**
   * How long usage waits to be coalesced before it is sent, in milliseconds: Kana gets at most one
   * usage mutation per (user, feature) per interval, up to 20 in a call. `flush()` sends at once.
   * @default 1000
   * @example 5000
   */
  flushInterval?: number;
  /**
   * Most usage calls to Kana in flight at once. Each call carries up to 20 (user, feature) keys,
   * one mutation each in one GraphQL document.
   * @default 8
   * @example 16
   */
  concurrency?: number;
  /**
   * Called with usage that could not be delivered, and why. Errors it throws are logged.
   * @example (usage, error) => deadLetters.push({ ...usage, reason: error.code })
   * @default undefined (failures are still logged and counted)
   */
  onDeliveryFailure?: (usage: UndeliveredUsage, error: KanaError) => void | Promise<void>;
  /**
   * Most distinct (user, feature) keys held waiting for Kana. Memory is O(keys), never O(requests);
   * this bounds it during a long outage. Usage for a new key beyond it goes to the spool, or is
   * dropped (counted, logged, passed to `onDrop`) when there is no spool.
   * @default 50000
   * @example 200_000
   */
  maxPendingKeys?: number;
  /**
   * Keep usage Kana has not confirmed in a file, and send it on the next start: what is left at
   * close()'s deadline, usage held during an outage, and usage beyond `maxPendingKeys`.
   * @default undefined (no spool)
   * @example { path: '/var/lib/my-api/kana-usage.spool' }
   */
  spool?: SpoolOptions;
  /**
   * Called with usage dropped because `maxPendingKeys` keys were waiting and there is no spool.
   * @default undefined (drops are still logged and counted)
   * @example (usage) => deadLetters.push(usage)
   */
  onDrop?: (usage: UndeliveredUsage) => void | Promise<void>;
  /**
   * Check every metered request against the user's entitlement before its handler runs, and refuse
   * it (402 not in plan, 429 allowance used up) when the plan does not allow it. `'shadow'` makes
   * the same decisions (cache, holds, local accounting, `req.kana`) but never refuses: would-be
   * refusals are counted in `stats().shadowDenied` and logged at info (`KANA_METER_SHADOW_DENIED`),
   * and no RateLimit headers are sent, so clients see no change. A route map entry
   * `{ feature, enforce }` or `meter(feature, { enforce })` overrides this per route.
   * @default false
   * @example kanaMeter({ apiKey, userId, routes: { 'POST /api/search': 'api-calls' }, enforce: true })
   * @example kanaMeter({ apiKey, userId, routes: { 'POST /api/search': 'api-calls' }, enforce: 'shadow' })
   */
  enforce?: EnforceMode;
  /**
   * Replaces the default problem+json response of a refused request (402, 429, or 503 with
   * `onKanaError: 'deny'`). It is called as `onDenied(req, res, decision)`, without `next`: the
   * handler does not run and the request is not billed, whatever this sends. It may be async:
   * once it returns (or its promise settles), if it sent no headers, the default response is sent.
   * If it throws, rejects, or takes longer than `checkTimeoutMs`, that is logged
   * (`KANA_METER_HOOK_FAILED`), counted in `stats().hookErrors`, and the default response is sent
   * if nothing was sent yet.
   * @default sends application/problem+json (RFC 9457) with the status of `decision.status`
   * @example (req, res, decision) => res.status(decision.status).json({ upgrade: `/pricing?feature=${decision.featureId}` })
   */
  onDenied?: DeniedHandler;
  /**
   * What an enforced request does when Kana cannot be reached, times out or fails, and Kana has
   * never answered for its user and feature (else the last answer decides, see `staleIfError`):
   * `'allow'` lets it through (logged and counted in `stats().failedOpen`; it is billed as usual),
   * `'deny'` refuses it with 503. A check Kana refuses (a user or feature it does not know) is not
   * an outage: `onConfigError` decides it.
   * @default 'allow'
   * @example 'deny'
   */
  onKanaError?: KanaErrorPolicy;
  /**
   * Stale-if-error (RFC 5861), in milliseconds: when Kana cannot be asked, the last answer it gave
   * for a (user, feature), plus the usage counted locally since, keeps deciding for this long past
   * its `entitlementTtl` (never past the end of its usage period). `req.kana.source` is `'stale'`.
   * `0`: a failed check always goes to `onKanaError`.
   * @default 300000 (5 minutes)
   * @example 900_000
   */
  staleIfError?: number;
  /**
   * Most entitlement check calls to Kana in flight at once. Checks that arrive while every slot is
   * busy wait, and go out together in one GraphQL document (up to 20 checks, aliased) when a slot
   * frees; a check never waits for a slot longer than `checkTimeoutMs`.
   * @default 16
   * @example 4
   */
  checkConcurrency?: number;
  /**
   * Time limit of one entitlement check, in milliseconds (a request waits for it on a cache miss).
   * @default 2000
   * @example 500
   */
  checkTimeoutMs?: number;
  /**
   * How long Kana's answer for a (user, feature) is reused, in milliseconds. Within it, usage this
   * process records is counted locally; usage recorded elsewhere shows up when it expires.
   * It also expires when the usage period ends.
   * @default 30000
   * @example 5000
   */
  entitlementTtl?: number;
  /**
   * Most (user, feature) entitlements kept in the cache; the least recently fetched go first.
   * @default 10000
   * @example 100000
   */
  maxEntitlements?: number;
  /**
   * Send `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers-10) on
   * enforced requests to a consumable feature with a finite allowance and no overage.
   * @default true
   * @example false
   */
  rateLimitHeaders?: boolean;
  /**
   * Idempotent replay of requests carrying an `Idempotency-Key` header
   * (draft-ietf-httpapi-idempotency-key-header), per user. The first request with a key runs, is
   * checked and billed as usual; its 2xx response (status, body, headers but hop-by-hop ones and
   * Set-Cookie) is stored for `ttlMs`. A retry of the same request (method, routed path, query,
   * body) gets the stored response without running the handler, with `Idempotent-Replayed: true`,
   * not billed again (`stats().idempotentReplays`). The same key with a different request: 422;
   * while the first still runs: 409 (both problem+json, the handler does not run). A response
   * that is not stored (not 2xx, over 1 MiB, server-sent events, or the client left) releases the
   * key: a retry runs, and is billed, as a new request. Without a user, or with a body over 1 MiB,
   * or a key over 255 characters, the key is ignored. See docs/metering.md.
   * @default undefined (off: every successful request is billed)
   * @example true
   * @example { header: 'X-Request-Id', ttlMs: 3_600_000 }
   */
  idempotencyKey?: true | IdempotencyKeyOptions;
  /**
   * Where the state several instances share is kept: Kana's answers (one check per user and
   * feature per `entitlementTtl` for the whole fleet), leases on each allowance (so that together
   * they never pass more than it), and the `idempotencyKey` window. `RedisStore` from
   * `kana-meter/redis` shares it between processes; the default keeps it in this process. One
   * store per kanaMeter().
   * @default new MemoryStore() (this process only)
   * @example new RedisStore({ sendCommand: (...args: string[]) => redis.sendCommand(args) }) // import { RedisStore } from 'kana-meter/redis'
   */
  store?: KanaMeterStore;
  /**
   * What an enforced request gets when `userId` gives no id (`undefined`, `null`, `''`) or fails
   * (throws, rejects): `'refuse'` answers 401 application/problem+json, the handler does not run
   * (counted in `stats().refusedNoUser`); `'allow'` serves it unchecked and unbilled (counted in
   * `stats().unchecked`, logged once). Under `enforce: 'shadow'` it is served either way (counted
   * in `stats().shadowDenied` when `'refuse'` would refuse it). Routes that are only metered are
   * not affected: a request without a user has nothing to bill, logged once.
   * @default 'refuse'
   * @example 'allow'
   */
  anonymous?: AnonymousPolicy;
  /**
   * What an enforced request gets while Kana refuses the API key (wrong, revoked, or a key the
   * HTTP layer cannot send: `stats().configError` is set), or refuses its check (a user or a
   * feature Kana does not know, with no earlier answer): `'deny'` answers 503
   * application/problem+json saying the service's billing is misconfigured, the handler does not
   * run (counted in `stats().denied`); `'allow'` serves it (counted in `stats().failedOpen`) though
   * its usage cannot be billed. Neither is an outage: `onKanaError` does not decide them, and a
   * stale answer (`staleIfError`) does not cover a refused key. `kana.check()` answers the same.
   * @default 'deny'
   * @example 'allow'
   */
  onConfigError?: KanaErrorPolicy;
  /**
   * A pino-compatible logger.
   * @default pino({ name: 'kana-meter', level: 'warn' })
   * @example pino({ level: 'info' }).child({ component: 'billing' })
   */
  logger?: KanaLogger;
  /**
   * A metrics integration: it reads `stats()` when scraped and is told the duration and outcome
   * of every Kana call attempt (nothing is done per HTTP request). One object per kanaMeter().
   * @default undefined (no metrics)
   * @example prometheusMetrics() // import { prometheusMetrics } from 'kana-meter/prometheus'
   */
  metrics?: KanaMeterMetrics;
  /**
   * The fetch implementation Kana calls go through. By default, node:http(s) with keep-alive (a fraction of Node's
   * fetch's CPU per call), or `globalThis.fetch` when the host replaced it (a test double, an instrumented fetch).
   * @default node:http(s), or a replaced globalThis.fetch
   * @example (url, init) => fetch(url, { ...init, keepalive: true })
   */
  fetch?: typeof fetch;
  /**
   * An append-only JSON Lines audit trail: one line per billed request (who, what, how much,
   * which request) and one per delivery outcome (which Kana call carried it, or whether it failed
   * or was spooled), so `kana-meter reconcile` can compare it with Kana. Written in batches off the
   * request path, rotated by size; a write that fails is logged once and counted in
   * `stats().auditErrors`, never thrown. See docs/audit.md.
   * @default undefined (no audit trail)
   * @example { path: '/var/log/my-api/usage.audit.jsonl' }
   */
  audit?: AuditOptions;
}

/** The validated, frozen form of KanaMeterOptions. Nothing here is parsed again per request. */
export interface KanaMeterConfig {
  /** The user's KanaClient, or the settings kanaMeter() builds one from. */
  readonly client: KanaClient | ClientSettings;
  readonly userId: KanaMeterOptions['userId'];
  readonly matchRoute: RouteMatcher | undefined;
  readonly isSuccess: ((req: Request, res: Response) => boolean) | undefined;
  readonly retry: Readonly<Required<RetryOptions>>;
  readonly flushInterval: number;
  readonly concurrency: number;
  readonly onDeliveryFailure: KanaMeterOptions['onDeliveryFailure'];
  readonly maxPendingKeys: number;
  readonly spool: Readonly<Required<SpoolOptions>> | undefined;
  readonly onDrop: KanaMeterOptions['onDrop'];
  readonly logger: KanaLogger;
  readonly metrics: KanaMeterMetrics | undefined;
  readonly enforce: EnforceMode;
  readonly onDenied: DeniedHandler | undefined;
  readonly onKanaError: KanaErrorPolicy;
  readonly staleIfError: number;
  readonly checkConcurrency: number;
  readonly idempotencyKey: Readonly<Required<IdempotencyKeyOptions>> | undefined;
  readonly checkTimeoutMs: number;
  readonly entitlementTtl: number;
  readonly maxEntitlements: number;
  readonly rateLimitHeaders: boolean;
  /** The user's store; undefined: kanaMeter() makes a MemoryStore. */
  readonly store: KanaMeterStore | undefined;
  readonly anonymous: AnonymousPolicy;
  readonly onConfigError: KanaErrorPolicy;
  readonly audit: Readonly<Required<AuditOptions>> | undefined;
}

/**
 * How one kanaMeter() option is read: `parse` validates it (a TypeError naming it) and gives its
 * config field, the default when it is undefined. Options read together with another, as the
 * client's are, say which option's `parse` reads them (`readBy`).
 */
type OptionDeclaration<K extends keyof KanaMeterOptions> =
  | { readonly readBy: keyof KanaMeterOptions }
  | (K extends keyof KanaMeterConfig
      ? { readonly parse: (value: KanaMeterOptions[K], options: KanaMeterOptions) => KanaMeterConfig[K] }
      : IntoDeclaration<K>);

/** An option whose config field has another name (`routes` gives `matchRoute`). */
type IntoDeclaration<K extends keyof KanaMeterOptions> = {
  [C in keyof KanaMeterConfig]: {
    readonly into: C;
    readonly parse: (value: KanaMeterOptions[K], options: KanaMeterOptions) => KanaMeterConfig[C];
  };
}[keyof KanaMeterConfig];

/**
 * Every kanaMeter() option, declared once: its type and TSDoc are in KanaMeterOptions, its
 * validation and default here (the compiler wants one entry per option). The known-keys check,
 * parseOptions and docs/options.md come from this. Options are parsed in this order, so the first
 * bad one is the one reported.
 */
const OPTION_DECLARATIONS = {
  userId: { parse: parseUserId },
  apiKey: { readBy: 'client' },
  endpoint: { readBy: 'client' },
  client: { parse: (_client, options) => parseClient(options) },
  routes: { into: 'matchRoute', parse: (routes) => compileRoutes(routes) },
  isSuccess: { parse: (value) => checkFunction<(req: Request, res: Response) => boolean>('isSuccess', value) },
  mutation: { readBy: 'client' },
  timeoutMs: { readBy: 'client' },
  retry: { parse: parseRetry },
  flushInterval: { parse: (value) => checkInteger('flushInterval', value, 1000, 0) },
  concurrency: { parse: (value) => checkInteger('concurrency', value, 8, 1) },
  onDeliveryFailure: {
    parse: (value) => checkFunction<NonNullable<KanaMeterOptions['onDeliveryFailure']>>('onDeliveryFailure', value),
  },
  maxPendingKeys: { parse: (value) => checkInteger('maxPendingKeys', value, 50_000, 1) },
  spool: { parse: parseSpool },
  onDrop: { parse: (value) => checkFunction<NonNullable<KanaMeterOptions['onDrop']>>('onDrop', value) },
  logger: { parse: parseLogger },
  metrics: { parse: parseMetrics },
  fetch: { readBy: 'client' },
  enforce: { parse: (value) => checkEnforce('enforce', value, false) },
  onDenied: { parse: (value) => checkFunction<DeniedHandler>('onDenied', value) },
  onKanaError: { parse: (value) => checkOneOf('onKanaError', value, ['allow', 'deny'] as const, 'allow') },
  staleIfError: { parse: (value) => checkInteger('staleIfError', value, 300_000, 0) },
  checkConcurrency: { parse: (value) => checkInteger('checkConcurrency', value, 16, 1) },
  idempotencyKey: { parse: parseIdempotencyKey },
  checkTimeoutMs: { parse: (value) => checkInteger('checkTimeoutMs', value, DEFAULT_CHECK_TIMEOUT_MS, 1) },
  entitlementTtl: { parse: (value) => checkInteger('entitlementTtl', value, 30_000, 0) },
  maxEntitlements: { parse: (value) => checkInteger('maxEntitlements', value, 10_000, 1) },
  rateLimitHeaders: { parse: (value) => checkBoolean('rateLimitHeaders', value, true) },
  store: { parse: parseStore },
  anonymous: { parse: (value) => checkOneOf('anonymous', value, ['refuse', 'allow'] as const, 'refuse') },
  onConfigError: { parse: (value) => checkOneOf('onConfigError', value, ['deny', 'allow'] as const, 'deny') },
  audit: { parse: parseAudit },
} satisfies { readonly [K in keyof KanaMeterOptions]-?: OptionDeclaration<K> };

/** The config fields the declarations give: a KanaMeterConfig field that none gives fails to compile below. */
type ParsedField = {
  [K in keyof KanaMeterOptions]-?: (typeof OPTION_DECLARATIONS)[K] extends { into: infer C }
    ? C
    : (typeof OPTION_DECLARATIONS)[K] extends { parse: unknown }
      ? K
      : never;
}[keyof KanaMeterOptions];
const EVERY_FIELD_PARSED: [Exclude<keyof KanaMeterConfig, ParsedField>] extends [never] ? true : never = true;
void EVERY_FIELD_PARSED;

type OptionName = keyof KanaMeterOptions;
const OPTION_NAMES = Object.keys(OPTION_DECLARATIONS) as OptionName[];
const KNOWN_OPTIONS: ReadonlySet<string> = new Set(OPTION_NAMES);
/** The options `client` replaces, in declaration order (the first one given is named). */
const CLIENT_OPTIONS = OPTION_NAMES.filter((name) => {
  const declaration: OptionDeclaration<OptionName> = OPTION_DECLARATIONS[name];
  return 'readBy' in declaration && declaration.readBy === 'client';
});
const RETRY_OPTIONS = knownKeys<RetryOptions>({
  retries: true,
  minTimeout: true,
  maxTimeout: true,
  factor: true,
  randomize: true,
});

export function parseOptions(options: KanaMeterOptions): KanaMeterConfig {
  if (typeof options !== 'object' || options === null) {
    throw optionError('options', options, 'an object such as { apiKey, userId, routes }');
  }
  rejectUnknownKeys('', options, KNOWN_OPTIONS, 'absent: it is not a kanaMeter option');
  const config: Record<string, unknown> = {};
  for (const name of OPTION_NAMES) {
    const declaration = OPTION_DECLARATIONS[name] as
      | { readonly readBy: OptionName }
      | {
          readonly into?: keyof KanaMeterConfig;
          readonly parse: (value: unknown, options: KanaMeterOptions) => unknown;
        };
    if ('parse' in declaration) config[declaration.into ?? name] = declaration.parse(options[name], options);
  }
  return Object.freeze(config) as unknown as KanaMeterConfig;
}

function parseUserId(userId: KanaMeterOptions['userId']): KanaMeterOptions['userId'] {
  if (typeof userId !== 'function') {
    throw optionError('userId', userId, 'a function (req, res) => the Kana user id, e.g. (req) => req.user?.id');
  }
  return userId;
}

const STORE_METHODS = ['bind', 'reserve', 'beginCheck', 'storeAnswer', 'idempotencyWindow', 'stats'] as const;

function parseStore(value: unknown): KanaMeterStore | undefined {
  if (value === undefined) return undefined;
  // `report`, or `settle` in a store written to the interface before it was renamed (kanaMeter calls that).
  const reports = hasMethods(value, ['report']) || hasMethods(value, ['settle']);
  if (
    !reports ||
    !hasMethods(value, STORE_METHODS) ||
    typeof (value as { available?: unknown }).available !== 'boolean'
  ) {
    throw optionError(
      'store',
      value,
      "a store such as new RedisStore({ sendCommand }) from 'kana-meter/redis' (or new MemoryStore(), the default): an object with `available` and bind, reserve, report, beginCheck, storeAnswer, idempotencyWindow and stats methods",
    );
  }
  return value as KanaMeterStore;
}

const SPOOL_OPTIONS = knownKeys<SpoolOptions>({ path: true, writeAhead: true });

function parseSpool(spool: SpoolOptions | undefined): Readonly<Required<SpoolOptions>> | undefined {
  if (spool === undefined) return undefined;
  if (typeof spool !== 'object' || spool === null) {
    throw optionError('spool', spool, "an object such as { path: './kana-usage.spool' }");
  }
  rejectUnknownKeys('spool.', spool, SPOOL_OPTIONS);
  if (typeof spool.path !== 'string' || spool.path.trim() === '') {
    throw optionError('spool.path', spool.path, 'a file path');
  }
  return Object.freeze({ path: spool.path, writeAhead: checkBoolean('spool.writeAhead', spool.writeAhead, false) });
}

const IDEMPOTENCY_OPTIONS = knownKeys<IdempotencyKeyOptions>({
  header: true,
  ttlMs: true,
  maxKeys: true,
  maxBytes: true,
});
/** A header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function parseIdempotencyKey(
  value: KanaMeterOptions['idempotencyKey'],
): Readonly<Required<IdempotencyKeyOptions>> | undefined {
  if (value === undefined) return undefined;
  const expected =
    "true or an object such as { header: 'Idempotency-Key', ttlMs: 86400000, maxKeys: 100000 } (leave it out to turn it off)";
  if (value !== true && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    throw optionError('idempotencyKey', value, expected);
  }
  const options: IdempotencyKeyOptions = value === true ? {} : value;
  rejectUnknownKeys('idempotencyKey.', options, IDEMPOTENCY_OPTIONS);
  const header = options.header ?? 'Idempotency-Key';
  if (typeof header !== 'string' || !HEADER_NAME.test(header)) {
    throw optionError('idempotencyKey.header', header, "a header name such as 'Idempotency-Key'");
  }
  return Object.freeze({
    // Node gives request headers in lower case.
    header: header.toLowerCase(),
    ttlMs: checkInteger('idempotencyKey.ttlMs', options.ttlMs, 86_400_000, 1),
    maxKeys: checkInteger('idempotencyKey.maxKeys', options.maxKeys, 100_000, 1),
    maxBytes: checkInteger('idempotencyKey.maxBytes', options.maxBytes, 67_108_864, 1),
  });
}

function parseClient(options: KanaMeterOptions): KanaClient | ClientSettings {
  if (options.client === undefined) {
    if (options.apiKey === undefined) {
      throw new TypeError(
        'kana-meter: option `apiKey` is required (your Kana private key, e.g. process.env.KANA_API_KEY), or pass a ready `client`.',
      );
    }
    return parseClientOptions({
      apiKey: options.apiKey,
      endpoint: options.endpoint,
      mutation: options.mutation,
      timeoutMs: options.timeoutMs,
      fetch: options.fetch,
    });
  }
  if (!(options.client instanceof KanaClient)) {
    throw optionError('client', options.client, 'a KanaClient instance');
  }
  const conflicting = CLIENT_OPTIONS.find((key) => options[key] !== undefined);
  if (conflicting) {
    throw new TypeError(
      `kana-meter: option \`${conflicting}\` cannot be combined with \`client\`: set it on the KanaClient.`,
    );
  }
  return options.client;
}

function parseRetry(retry: RetryOptions | undefined): Readonly<Required<RetryOptions>> {
  if (retry !== undefined && (typeof retry !== 'object' || retry === null)) {
    throw optionError('retry', retry, 'an object such as { retries: 5, minTimeout: 100, maxTimeout: 10000 }');
  }
  rejectUnknownKeys('retry.', retry ?? {}, RETRY_OPTIONS);
  const minTimeout = checkNumber('retry.minTimeout', retry?.minTimeout, 100, 0);
  const maxTimeout = checkNumber('retry.maxTimeout', retry?.maxTimeout, 10_000, 0, true);
  if (maxTimeout < minTimeout) {
    throw optionError('retry.maxTimeout', maxTimeout, `>= retry.minTimeout (${minTimeout})`);
  }
  return Object.freeze({
    retries: checkInteger('retry.retries', retry?.retries, 5, 0),
    minTimeout,
    maxTimeout,
    factor: checkNumber('retry.factor', retry?.factor, 2, 1),
    randomize: checkBoolean('retry.randomize', retry?.randomize, true),
  });
}
