// The path a request is routed on, as Express's router sees it: what the route map is matched against.

import type { Request } from 'express';
import parseurl from 'parseurl';

/**
 * The full path Express routes this request on: the mount path (`req.baseUrl`, when the
 * middleware runs in a sub-app or router, or is mounted under a path) followed by the pathname
 * Express's router parses from `req.url` with parseurl. A fragment (`/api/search#x`), the absolute
 * form of a request line (`http://host/api/search`) and the query string are all left out, as
 * Express leaves them out. parseurl caches its result on the request for the URL the router
 * already parsed, so this costs a comparison.
 */
export function routedPath(req: Request): string {
  return (req.baseUrl ?? '') + (parseurl(req)?.pathname ?? '');
}

/** Where a log line's request went. */
export function where(req: Request): { method: string; path: string } {
  return { method: req.method, path: routedPath(req) };
}
