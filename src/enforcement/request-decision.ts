// `req.kana` without a new property on each request: an accessor on Express's request prototype reads the kept decision.

import { IncomingMessage } from 'node:http';
import type { Request } from 'express';
import type { EntitlementDecision } from '../config/decision.js';
import { keptDecision, type SharedRequest } from '../metering/request-usage.js';

/**
 * Assigning `req.kana` on each request would add a property to Node's request object after
 * Express has, which costs about 2 µs per request (every later property access on it slows
 * down). Instead the decision is kept in the request's shared record (request-usage.ts), and
 * `kana` is an accessor defined once on the request prototype that every Express app of that Express copy shares
 * (the one just above IncomingMessage.prototype), so sub-apps see it too. Assigning `req.kana`
 * yourself still works: the setter turns it into a plain property of that request.
 */
export function setDecision(req: Request, shared: SharedRequest, decision: EntitlementDecision): void {
  shared.decision = decision;
  const prototype = Object.getPrototypeOf(req) as object | null;
  if (prototype !== lastPrototype) {
    lastPrototype = prototype;
    lastHasAccessor = installAccessor(req);
  }
  // Not an Express request (no prototype to put the accessor on): a plain property, then.
  if (!lastHasAccessor) Object.defineProperty(req, 'kana', ownProperty(decision));
}

let lastPrototype: object | null = null;
let lastHasAccessor = false;
const patched = new WeakSet<object>();

/** Defines `kana` on Express's base request prototype; false when the request does not come from Express. */
function installAccessor(req: Request): boolean {
  let base = Object.getPrototypeOf(req) as object | null;
  while (base !== null && Object.getPrototypeOf(base) !== IncomingMessage.prototype) base = Object.getPrototypeOf(base);
  if (base === null || base === IncomingMessage.prototype) return false;
  if (patched.has(base) || Object.getOwnPropertyDescriptor(base, 'kana')) return true;
  patched.add(base);
  Object.defineProperty(base, 'kana', {
    configurable: true,
    enumerable: false,
    get(this: Request): EntitlementDecision | undefined {
      return keptDecision(this);
    },
    set(this: Request, value: unknown) {
      Object.defineProperty(this, 'kana', ownProperty(value));
    },
  });
  return true;
}

function ownProperty(value: unknown): PropertyDescriptor {
  return { value, writable: true, enumerable: true, configurable: true };
}
