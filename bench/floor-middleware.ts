// The floor: the least any middleware that counts each user's requests pays, written as plainly as it can be, to
// set beside kana-meter's figures in the same run. It bills nothing and checks nothing with Kana; it is what an
// overhead target is measured against before asking kana-meter to go below it.

import type { ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';

const MONTH_SECONDS = 30 * 24 * 3600;
const BUDGET = 1_000_000_000;

/** Nothing to do at the end: the listener is the cost, as a biller's or a limiter's is. */
function onEnd(this: ServerResponse): void {}

/**
 * 'floor-metered': one Express layer, the user's header, a count per user, a `finish` listener.
 * 'floor-enforced': that, a `close` listener (units a client left with go back), and the `RateLimit-Policy`
 * and `RateLimit` fields (draft-10, as kana-meter and express-rate-limit send them).
 */
export function floorMiddleware(withRateLimitFields: boolean): RequestHandler {
  const counts = new Map<string, number>();
  const resetAt = Date.now() + MONTH_SECONDS * 1000;
  return (req, res, next) => {
    const key = `${req.get('x-user')}\u0000api-calls`;
    const used = (counts.get(key) ?? 0) + 1;
    counts.set(key, used);
    res.on('finish', onEnd);
    if (withRateLimitFields) {
      res.on('close', onEnd);
      res.setHeader('RateLimit-Policy', `"api-calls";q=${BUDGET};w=${MONTH_SECONDS}`);
      res.setHeader('RateLimit', `"api-calls";r=${BUDGET - used};t=${Math.ceil((resetAt - Date.now()) / 1000)}`);
    }
    next();
  };
}
