// The per-request link between kanaMeter() and meter(): what a request bills, kept on the request object.

import type { Request, Response } from 'express';
import type { MeteredFeature } from './metered-feature.js';

/** What kanaMeter() offers to meter() for the requests it sees. */
export interface MeterContext {
  /** Bills `feature` on this request (once per feature id), replacing the route map's feature. */
  tag(req: Request, res: Response, feature: MeteredFeature): void;
}

/** The features one request bills; created only for metered requests. */
export interface RequestUsage {
  /** The route map's feature, if a route matched. */
  readonly routeFeature: MeteredFeature | undefined;
  /** Features named by meter() on the matched route; they win over routeFeature. */
  tagged: MeteredFeature[] | undefined;
}

// Symbol.for: an ESM and a CommonJS copy of kana-meter in one process still see each other.
export const METER_CONTEXT = Symbol.for('kana-meter.context');
export const REQUEST_USAGE = Symbol.for('kana-meter.request-usage');

export interface MeteredRequest {
  [METER_CONTEXT]?: MeterContext;
  [REQUEST_USAGE]?: RequestUsage;
}

/** The features to bill: meter()'s if any (one per feature id, the last one wins), else the route map's. */
export function featuresToBill(usage: RequestUsage): readonly MeteredFeature[] {
  const { tagged } = usage;
  if (!tagged) return usage.routeFeature ? [usage.routeFeature] : [];
  if (tagged.length === 1) return tagged;
  return [...new Map(tagged.map((feature) => [feature.featureId, feature])).values()];
}
