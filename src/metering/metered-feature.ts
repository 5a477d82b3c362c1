// A feature billed on a request and how its delta is computed, parsed once from meter() or the route map.

import type { Request, Response } from 'express';
import type { EnforceMode } from '../config/decision.js';
import {
  checkBoolean,
  checkEnforce,
  checkFeatureId,
  knownKeys,
  optionError,
  rejectUnknownKeys,
} from '../config/option-checks.js';

/** The largest delta Kana accepts: `delta` is a GraphQL Int (32-bit signed). */
export const MAX_DELTA = 2_147_483_647;

/** Computes the delta of one request once its response has finished. */
export type DeltaFunction = (req: Request, res: Response) => number | Promise<number>;

/** Options shared by `meter(feature, options)` and the object form of a route map entry. */
export interface FeatureOptions {
  /**
   * How many units one successful request uses: an integer in 1..2147483647, or a function of the
   * finished request that returns one (for example the number of rows exported). A function may
   * return 0 for a request that used nothing: it is not billed, and nothing is logged.
   * @default 1
   * @example meter('exports', { delta: (req, res) => res.locals.rows })
   */
  delta?: number | DeltaFunction;
  /**
   * Whether this route's requests are checked against the user's entitlement before the handler
   * (and refused with 402/429 when the plan does not allow them). `'shadow'` decides the same way
   * but never refuses (see kanaMeter's `enforce`). Overrides kanaMeter's `enforce`.
   * A delta computed from the response is checked as 1.
   * @default kanaMeter's `enforce` (false)
   * @example meter('reports', { enforce: true })
   * @example meter('reports', { enforce: 'shadow' })
   */
  enforce?: EnforceMode;
  /**
   * Whether a response the client abandons (its connection closes before the response finishes)
   * is billed for what it delivered. The `delta` is then taken when the connection closes, as it is
   * on a finish, and billed: a function returning 0 bills nothing, a fixed delta is billed whole.
   * Only a response that had started (its headers sent) with a successful status is billed. On an
   * enforced route the units held for the request are released first, then the delta is billed,
   * exactly as on a finish. For responses whose cost is paid as they are sent (LLM tokens streamed);
   * off by default because a plain request whose client left before its response finished
   * delivered nothing.
   * @default false (an abandoned response is not billed)
   * @example meter('llm-tokens', { delta: (req, res) => res.locals.tokensSent, billAborted: true })
   */
  billAborted?: boolean;
}

/** A feature to bill on a request, validated. */
export interface MeteredFeature {
  readonly featureId: string;
  /** A fixed delta, or a function evaluated on `finish`. */
  readonly delta: number | DeltaFunction;
  /** The units checked before the handler: the fixed delta, or 1 when it is computed from the response. */
  readonly checkDelta: number;
  /** Whether to check the entitlement before the handler; undefined = kanaMeter's `enforce`. */
  readonly enforce: EnforceMode | undefined;
  /** Whether a response the client abandons is billed too, its delta taken on `close`. */
  readonly billAborted: boolean;
  /** Where it came from, for log lines: a route map key or `meter('<feature>')`. */
  readonly source: string;
}

const FEATURE_OPTION_KEYS = knownKeys<FeatureOptions>({ delta: true, enforce: true, billAborted: true });
const FEATURE_OPTIONS_EXPECTED = `absent (known options: ${[...FEATURE_OPTION_KEYS].join(', ')})`;

/** True for a delta Kana can take: an integer in 1..2147483647. */
export function isValidDelta(delta: unknown): delta is number {
  return typeof delta === 'number' && Number.isInteger(delta) && delta >= 1 && delta <= MAX_DELTA;
}

/**
 * Validates a feature id and its options; `name` is how the error names the option
 * (e.g. `routes["POST /api/search"]`).
 */
export function parseMeteredFeature(
  name: string,
  featureId: unknown,
  options: FeatureOptions | undefined,
  source: string,
  featureIdName = name,
): MeteredFeature {
  checkFeatureId(featureIdName, featureId);
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw optionError(`${name} options`, options, 'an object such as { delta: 2 }');
  }
  rejectUnknownKeys(`${name}.`, options ?? {}, FEATURE_OPTION_KEYS, FEATURE_OPTIONS_EXPECTED);
  const delta = options?.delta ?? 1;
  if (typeof delta !== 'function' && !isValidDelta(delta)) {
    throw optionError(`${name}.delta`, delta, `an integer in 1..${MAX_DELTA} or a function (req, res) => number`);
  }
  const enforce = options?.enforce === undefined ? undefined : checkEnforce(`${name}.enforce`, options.enforce, false);
  return Object.freeze({
    featureId: featureId as string,
    delta,
    checkDelta: typeof delta === 'number' ? delta : 1,
    enforce,
    billAborted: checkBoolean(`${name}.billAborted`, options?.billAborted, false),
    source,
  });
}
