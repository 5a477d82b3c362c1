// Scripted faults: what failNext() queues and which incoming request each one applies to.

/**
 * A scripted failure for the next matching request(s).
 * - `{ status }`: answer with this HTTP status (optional `Retry-After`, `body`); nothing is applied.
 * - `{ result: false }`: usage mutations report failure (`false` / `{ recorded: false }`); nothing is applied.
 * - `{ delayMs, apply }`: wait, then answer normally. `apply` (default true) decides what happens when
 *   the client gives up during the wait: true = the request is still executed (its effect happens,
 *   the response is lost); false = it is not executed.
 * - `{ drop: true }`: destroy the socket without answering; nothing is applied, unless `afterApply`,
 *   in which case the request is executed first (a lost response).
 * - `{ hang: true }`: never answer; the request ends when the client gives up, or the emulator goes
 *   offline or closes. Nothing is applied.
 * - `{ graphqlError }`: answer with this GraphQL error (HTTP 200 unless `httpStatus`); nothing is applied.
 * - `{ fieldError }`: the root field `field` (or only its selection under `alias`) fails with this
 *   error while the rest of the document runs, as graphql-js answers it: an error with that field's
 *   path (its alias, if aliased); a non-null field nulls the whole `data`, a nullable one
 *   (`createUsageEvent`, `recordUsage`) only itself. Only requests selecting that field match.
 */
export type Fault =
  | { status: number; retryAfter?: string | number; body?: string }
  | { result: false }
  | { delayMs: number; apply?: boolean }
  | { hang: true }
  | { drop: true; afterApply?: boolean }
  | { graphqlError: { message: string; code: string; name?: string }; httpStatus?: number }
  | { fieldError: FieldFault };

/** A root field that fails in a `{ fieldError }` fault, and the error it fails with. */
export interface FieldFault {
  /** A root field of the schema, e.g. 'showUsage' or 'canUseFeature'. */
  field: string;
  /** Only where the document selects `field` under this alias (response key), e.g. 'u1'. @default every selection of `field` */
  alias?: string;
  /** @default 'Emulated fault: <field> failed' */
  message?: string;
  /** `extensions.code`. @default 'INTERNAL_SERVER_ERROR' */
  code?: string;
  /** `extensions.exception.name`. @default 'Error' */
  name?: string;
}

export interface FailNextOptions {
  /** How many matching requests get this fault; `Infinity`: every one, until `clearFaults()` or `reset()`. @default 1 */
  times?: number;
  /** Only requests selecting this root field (e.g. 'createUsageEvent'). @default any request */
  operation?: string;
}

/** The root fields a `{ result: false }` fault can act on. */
const USAGE_FIELDS: ReadonlySet<string> = new Set(['createUsageEvent', 'recordUsage']);

interface QueuedFault {
  fault: Fault;
  remaining: number;
  operation: string | null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Throws a TypeError that says what is wrong with a fault given to failNext(). */
function assertValidFault(fault: unknown): asserts fault is Fault {
  const expected =
    'expected one of { status }, { result: false }, { delayMs }, { hang: true }, { drop: true }, { graphqlError: { message, code } }, { fieldError: { field } }';
  if (!isRecord(fault)) throw new TypeError(`failNext: fault must be an object; ${expected}`);
  const kinds = ['status', 'result', 'delayMs', 'hang', 'drop', 'graphqlError', 'fieldError'].filter(
    (key) => key in fault,
  );
  if (kinds.length !== 1) throw new TypeError(`failNext: fault must have exactly one kind; ${expected}`);
  if ('status' in fault) {
    const status = fault.status;
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) {
      throw new TypeError(`failNext: fault.status must be an HTTP status code (100-599), got ${String(status)}`);
    }
    if (fault.body !== undefined && typeof fault.body !== 'string')
      throw new TypeError('failNext: fault.body must be a string');
  } else if ('result' in fault) {
    if (fault.result !== false) throw new TypeError('failNext: fault.result must be false');
  } else if ('delayMs' in fault) {
    const delayMs = fault.delayMs;
    if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
      throw new TypeError(`failNext: fault.delayMs must be a non-negative number, got ${String(delayMs)}`);
    }
  } else if ('hang' in fault) {
    if (fault.hang !== true) throw new TypeError('failNext: fault.hang must be true');
  } else if ('drop' in fault) {
    if (fault.drop !== true) throw new TypeError('failNext: fault.drop must be true');
  } else if ('fieldError' in fault) {
    const error = fault.fieldError;
    const optionalString = (value: unknown) => value === undefined || typeof value === 'string';
    if (
      !isRecord(error) ||
      typeof error.field !== 'string' ||
      error.field === '' ||
      !optionalString(error.alias) ||
      !optionalString(error.message) ||
      !optionalString(error.code) ||
      !optionalString(error.name)
    ) {
      throw new TypeError(
        'failNext: fault.fieldError must be { field: string, alias?: string, message?: string, code?: string, name?: string }',
      );
    }
  } else {
    const error = fault.graphqlError;
    if (!isRecord(error) || typeof error.message !== 'string' || typeof error.code !== 'string') {
      throw new TypeError('failNext: fault.graphqlError must be { message: string, code: string, name?: string }');
    }
  }
}

export class FaultQueue {
  private queue: QueuedFault[] = [];

  add(fault: Fault, options: FailNextOptions = {}): void {
    assertValidFault(fault);
    const times = options.times ?? 1;
    if ((!Number.isInteger(times) && times !== Number.POSITIVE_INFINITY) || times < 1)
      throw new TypeError(`failNext: times must be a positive integer or Infinity, got ${times}`);
    this.queue.push({ fault, remaining: times, operation: options.operation ?? null });
  }

  /**
   * The fault for a request selecting these root fields, if one is queued (first queued, first
   * used). A `{ result: false }` fault only matches requests that record usage; a `{ fieldError }`
   * fault, requests selecting its field.
   */
  take(fieldNames: readonly string[]): Fault | null {
    const index = this.queue.findIndex(
      ({ operation, fault }) =>
        (operation === null || fieldNames.includes(operation)) &&
        (!('result' in fault) || fieldNames.some((name) => USAGE_FIELDS.has(name))) &&
        (!('fieldError' in fault) || fieldNames.includes(fault.fieldError.field)),
    );
    if (index === -1) return null;
    const entry = this.queue[index]!;
    entry.remaining -= 1;
    if (entry.remaining === 0) this.queue.splice(index, 1);
    return entry.fault;
  }

  clear(): void {
    this.queue = [];
  }
}
