// Refusals that are not about an allowance: no user on an enforced route (401), a key or a check Kana refuses (503); RFC 9457 problem+json.

import type { ServerResponse } from 'node:http';

/** The problem details of a request refused before any entitlement was asked. */
export interface GateProblem {
  type: string;
  title: string;
  status: 401 | 503;
  detail: string;
  featureId: string;
}

/** 401: the enforced route has no user to check nor bill (`anonymous: 'refuse'`). */
export function noUserProblem(featureId: string): GateProblem {
  return {
    type: 'about:blank',
    title: 'Unauthorized',
    status: 401,
    detail: `${JSON.stringify(featureId)} is billed per user, and this request is not authenticated as one.`,
    featureId,
  };
}

/** 503: Kana refuses this service's API key, so nothing served now could be billed (`onConfigError: 'deny'`). */
export function configErrorProblem(featureId: string): GateProblem {
  return {
    type: 'about:blank',
    title: 'Service Unavailable',
    status: 503,
    detail: `The service's billing is misconfigured (its billing provider refuses its key), so ${JSON.stringify(featureId)} cannot be served now.`,
    featureId,
  };
}

/** 503: Kana refuses the check itself (it does not know the user or the feature), so nothing served could be billed (`onConfigError: 'deny'`). */
export function checkRefusedProblem(featureId: string): GateProblem {
  return {
    type: 'about:blank',
    title: 'Service Unavailable',
    status: 503,
    detail: `The service's billing provider cannot bill this request (it does not know its user or ${JSON.stringify(featureId)}), so it cannot be served now.`,
    featureId,
  };
}

/** Sends a problem as application/problem+json, unless the response has already started. */
export function sendProblem(res: ServerResponse, problem: GateProblem): void {
  if (res.headersSent) return;
  const body = JSON.stringify(problem);
  res.statusCode = problem.status;
  res.setHeader('Content-Type', 'application/problem+json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}
