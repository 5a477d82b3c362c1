// The audit trail: a JSON line per billed request and per delivery outcome, buffered off the request path and written in batches.

import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Request } from 'express';
import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import type { DeliveryOutcome } from '../delivery/delivery-outcome.js';
import type { MeteredFeature } from '../metering/metered-feature.js';
import type { RequestUsage } from '../metering/request-usage.js';
import { AuditFile } from './audit-file.js';
import type { AuditOptions } from './audit-options.js';

/** Where a usage line came from: a response, `kana.record()`, or a hold's `commit()`. */
export type AuditSource = 'http' | 'record' | 'hold';

/** Lines are written this long after the first of a batch was buffered. */
export const AUDIT_WRITE_INTERVAL_MS = 100;
/** A batch this big is written at once. */
const WRITE_BATCH_LINES = 1024;
/** Lines buffered while the disk is slow; beyond it new lines are counted in auditErrors, not kept. */
const MAX_BUFFERED_LINES = 100_000;
/** Distinct feature ids, routes and methods whose JSON is kept. */
const MAX_QUOTED = 1000;

/** A usage line as captured: formatted later, off the request path. */
interface UsageEntry {
  readonly at: number;
  /** The request's own id, or undefined: `seq` makes one. */
  readonly requestId: string | number | undefined;
  readonly seq: number;
  readonly userId: string;
  readonly featureId: string;
  readonly delta: number;
  readonly method: string | undefined;
  readonly route: string | undefined;
  readonly status: number | undefined;
  readonly source: AuditSource;
}

interface OutcomeEntry {
  readonly at: number;
  readonly outcome: DeliveryOutcome;
}

type Entry = UsageEntry | OutcomeEntry;

export interface AuditTrailDependencies {
  readonly logger: KanaLogger;
  readonly counters: Record<Counter, number>;
  /** Names this process in every line. @default host/pid/random */
  readonly instance?: string;
}

/** A name for this process, unique across restarts: host, pid, and a random suffix. */
export function createInstanceId(): string {
  return `${hostname()}/${process.pid}/${randomBytes(3).toString('hex')}`;
}

export class AuditTrail {
  readonly instance: string;
  readonly #file: AuditFile;
  readonly #logger: KanaLogger;
  readonly #counters: Record<Counter, number>;
  #buffer: Entry[] = [];
  #seq = 0;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #writing: Promise<void> | undefined;
  /** A failure was logged and no write has worked since: the next failure is not logged again. */
  #failing = false;
  #overflowing = false;
  #closing: Promise<void> | undefined;
  readonly #instanceJson: string;
  #isoMs = Number.NaN;
  #isoText = '';
  readonly #quotes = new Map<string, string>();

  constructor(options: Readonly<Required<AuditOptions>>, dependencies: AuditTrailDependencies) {
    this.#file = new AuditFile(options);
    this.#logger = dependencies.logger;
    this.#counters = dependencies.counters;
    this.instance = dependencies.instance ?? createInstanceId();
    this.#instanceJson = JSON.stringify(this.instance);
  }

  get path(): string {
    return this.#file.path;
  }

  /** A response's usage was captured: its line, with the request's method, route, status and id. */
  capturedFromRequest(req: Request, usage: RequestUsage | undefined, userId: string, featureId: string, delta: number) {
    const header = req.headers['x-request-id'];
    // pino-http sets req.id; Express does not know it.
    const requestId = typeof header === 'string' && header !== '' ? header : (req as { id?: string | number }).id;
    this.#push({
      at: Date.now(),
      requestId,
      seq: ++this.#seq,
      userId,
      featureId,
      delta,
      method: req.method,
      route: usage && routeOf(usage, featureId),
      status: req.res?.statusCode,
      source: 'http',
    });
  }

  /** Usage captured outside a request: `kana.record()`, or a hold's `commit()` (`source: 'hold'`). */
  capturedOutsideRequest(userId: string, featureId: string, delta: number, source: 'record' | 'hold'): void {
    this.#push({
      at: Date.now(),
      requestId: undefined,
      seq: ++this.#seq,
      userId,
      featureId,
      delta,
      method: undefined,
      route: undefined,
      status: undefined,
      source,
    });
  }

  /** What became of usage the queue took (its outcome listener). */
  delivery(outcome: DeliveryOutcome): void {
    this.#push({ at: Date.now(), outcome });
  }

  /** Resolves once every line buffered so far was written (or counted in auditErrors). */
  async flush(): Promise<void> {
    this.#cancelTimers();
    while (this.#buffer.length > 0 || this.#writing !== undefined) await this.#drain();
  }

  /** Writes what is buffered and closes the file. Idempotent; lines after it are counted in auditErrors. */
  close(): Promise<void> {
    this.#closing ??= this.flush().then(() => this.#file.close());
    return this.#closing;
  }

  #push(entry: Entry): void {
    if (this.#closing !== undefined || this.#buffer.length >= MAX_BUFFERED_LINES) {
      this.#lost(1, this.#closing ? 'the audit trail is closed' : 'the audit trail is writing too slowly');
      return;
    }
    this.#buffer.push(entry);
    if (this.#buffer.length >= WRITE_BATCH_LINES) {
      this.#immediate ??= setImmediate(() => {
        this.#immediate = undefined;
        void this.#drain();
      });
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.#drain();
      }, AUDIT_WRITE_INTERVAL_MS);
      this.#timer.unref();
    }
  }

  #cancelTimers(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#immediate) clearImmediate(this.#immediate);
    this.#immediate = undefined;
  }

  /** One write at a time; the one under way takes everything buffered when it started. */
  #drain(): Promise<void> {
    this.#writing ??= this.#writeBuffered().finally(() => {
      this.#writing = undefined;
    });
    return this.#writing;
  }

  async #writeBuffered(): Promise<void> {
    while (this.#buffer.length > 0) {
      const entries = this.#buffer;
      this.#buffer = [];
      const lines = new Array<string>(entries.length);
      for (let i = 0; i < entries.length; i++) lines[i] = this.#line(entries[i] as Entry);
      try {
        await this.#file.append(`${lines.join('\n')}\n`);
        this.#failing = false;
        this.#overflowing = false;
      } catch (error) {
        this.#lost(entries.length, 'the audit file could not be written', error);
      }
    }
  }

  /** JSON of a string that repeats (feature ids, routes, methods): kept, at most MAX_QUOTED of them. */
  #quoted(text: string): string {
    let json = this.#quotes.get(text);
    if (json === undefined) {
      if (this.#quotes.size >= MAX_QUOTED) this.#quotes.clear();
      json = JSON.stringify(text);
      this.#quotes.set(text, json);
    }
    return json;
  }

  /** The ISO time of `ms`; lines of one batch mostly share their millisecond. */
  #iso(ms: number): string {
    if (ms !== this.#isoMs) {
      this.#isoMs = ms;
      this.#isoText = new Date(ms).toISOString();
    }
    return this.#isoText;
  }

  /** One JSON line, written out by hand: JSON.stringify of an object per line costs several µs more. */
  #line(entry: Entry): string {
    const at = this.#iso(entry.at);
    if ('outcome' in entry) {
      const { outcome, call, userId, featureId, delta, events, reason } = entry.outcome;
      const batchId = call === undefined ? '' : `,"batchId":${JSON.stringify(`${this.instance}#${call}`)}`;
      const why = reason === undefined ? '' : `,"reason":${JSON.stringify(reason)}`;
      return `{"type":"delivery","at":"${at}","outcome":"${outcome}"${batchId},"userId":${JSON.stringify(userId)},"featureId":${JSON.stringify(featureId)},"delta":${delta},"events":${events}${why},"instance":${this.#instanceJson}}`;
    }
    const requestId =
      entry.requestId === undefined
        ? JSON.stringify(`${this.instance}#r${entry.seq}`)
        : JSON.stringify(entry.requestId);
    const method = entry.method === undefined ? '' : `,"method":${this.#quoted(entry.method)}`;
    const route = entry.route === undefined ? '' : `,"route":${this.#quoted(entry.route)}`;
    const status = entry.status === undefined ? '' : `,"status":${entry.status}`;
    return `{"type":"usage","at":"${at}","requestId":${requestId},"userId":${JSON.stringify(entry.userId)},"featureId":${this.#quoted(entry.featureId)},"delta":${entry.delta}${method}${route}${status},"source":"${entry.source}","instance":${this.#instanceJson}}`;
  }

  /** Lines not written: counted every time, logged once per episode (until a write works again). */
  #lost(lines: number, why: string, error?: unknown): void {
    this.#counters.auditErrors += lines;
    const overflow = error === undefined;
    if (overflow ? this.#overflowing : this.#failing) return;
    if (overflow) this.#overflowing = true;
    else this.#failing = true;
    const err = error as NodeJS.ErrnoException | undefined;
    this.#logger.error(
      {
        code: logCodes.auditFailed,
        path: this.#file.path,
        err: err && { code: err.code, message: err.message },
        auditErrors: this.#counters.auditErrors,
      },
      `kana-meter: ${why}; audit lines are lost (counted in auditErrors), requests and delivery go on. Logged once until writes work again.`,
    );
  }
}

/** The route map key or `meter('<feature>')` that billed this feature on the request. */
function routeOf(usage: RequestUsage, featureId: string): string | undefined {
  const tagged: readonly MeteredFeature[] | undefined = usage.tagged;
  if (tagged !== undefined) {
    for (const feature of tagged) if (feature.featureId === featureId) return feature.source;
  }
  return usage.routeFeature?.source;
}
