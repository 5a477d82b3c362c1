// meter(): the per-route decorator that tags a request with the feature it uses; kanaMeter() reports it.

import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { logCodes } from './config/errors.js';
import { getDefaultLogger } from './config/logger.js';
import { type FeatureOptions, parseMeteredFeature } from './metering/metered-feature.js';
import { meterRouteCreated, nearestMeter } from './metering/request-usage.js';

/**
 * Bills `featureId` for each successful request on this route. Requires `app.use(kanaMeter(...))`
 * before the route; the last kanaMeter() the request passed through bills it. On a request that
 * kanaMeter's route map also names, meter() wins. With `enforce` (or kanaMeter's), the user's
 * entitlement is checked here, before the handler.
 * @example app.get('/api/reports/:id', meter('reports'), handler)
 * @example app.get('/api/docs/:id', meter('docs', { enforce: true }), handler)
 * @example app.post('/api/export', meter('exports', { delta: (req, res) => res.locals.rows }), handler)
 */
export function meter(featureId: string, options?: FeatureOptions): RequestHandler {
  const feature = parseMeteredFeature('meter() feature', featureId, options, `meter(${JSON.stringify(featureId)})`);
  let warnedNotMounted = false;
  meterRouteCreated();

  return function meterMiddleware(req: Request, res: Response, next: NextFunction) {
    const context = nearestMeter(req);
    if (context) {
      context.meter(req, res, next, feature);
      return;
    }
    if (!warnedNotMounted) {
      warnedNotMounted = true;
      getDefaultLogger().error(
        { code: logCodes.meterWithoutMiddleware, featureId, method: req.method, path: req.path },
        `kana-meter: meter(${JSON.stringify(featureId)}) ran without kanaMeter(): mount app.use(kanaMeter(...)) before this route. Requests here are not billed.`,
      );
    }
    next();
  };
}
