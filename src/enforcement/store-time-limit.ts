// Every call to a store gets a time limit: a custom store whose promise never settles reads as a failed call (decided per instance), and the store as unavailable until a call settles again.

import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import type { Counter } from '../config/stats.js';
import { isPromise } from '../config/thenable.js';
import { withTimeLimit } from '../config/time-limit.js';
import type { KanaMeterStore } from '../stores/store.js';

/** The time limit of a store's calls when the store does not declare its own `timeoutMs`. */
export const DEFAULT_STORE_TIMEOUT_MS = 1000;
/** Past a store's own `timeoutMs` (RedisStore times out its commands itself): only a backstop. */
const OWN_LIMIT_MARGIN_MS = 100;

export interface StoreTimeLimitOptions {
  logger: KanaLogger;
  counters: Record<Counter, number>;
}

/** The time limit kana-meter gives a store's calls: its own `timeoutMs` if it declares one, else DEFAULT_STORE_TIMEOUT_MS. */
export function storeTimeoutOf(store: KanaMeterStore): number {
  const own = (store as { timeoutMs?: unknown }).timeoutMs;
  return typeof own === 'number' && Number.isFinite(own) && own > 0 ? own : DEFAULT_STORE_TIMEOUT_MS;
}

/**
 * The store as kana-meter calls it: each method that returns a promise gets a time limit (the
 * store's `timeoutMs`, plus a margin when it declares one, since it then limits its calls itself),
 * and so do the methods of the idempotency window it makes. Answers given at once (MemoryStore)
 * pass untouched. A call past its limit rejects: the requests waiting on it are decided per
 * instance, and `available` reads false until some call settles, so the requests arriving
 * meanwhile do not wait for the store either. Any other property (methods a store adds) is
 * forwarded as is, so the wrapper stays transparent.
 */
export function withStoreTimeLimit(store: KanaMeterStore, { logger, counters }: StoreTimeLimitOptions): KanaMeterStore {
  const declared = (store as { timeoutMs?: unknown }).timeoutMs;
  const limitMs = storeTimeoutOf(store) + (typeof declared === 'number' ? OWN_LIMIT_MARGIN_MS : 0);
  let stalled = false;

  const settled = () => {
    stalled = false;
  };
  const limit = (value: unknown, what: string): unknown => {
    if (!isPromise(value)) return value;
    const limited = withTimeLimit(value as PromiseLike<unknown>, limitMs, what);
    limited.then(settled, (error: unknown) => {
      if ((error as { code?: unknown } | null)?.code !== 'KANA_METER_TIME_LIMIT') {
        settled();
        return;
      }
      counters.storeTimeouts++;
      if (stalled) return;
      stalled = true;
      logger.error(
        { code: logCodes.storeTimeout, call: what, limitMs },
        `kana-meter: a store call (${what}) did not settle within ${limitMs} ms; requests are decided per instance until the store answers again (logged once per stall)`,
      );
    });
    return limited;
  };
  const wrapMethods = <T extends object>(target: T, prefix: string): T =>
    new Proxy(target, {
      get(object, property) {
        if (property === 'available' && object === (store as object)) return !stalled && store.available;
        const value = Reflect.get(object, property, object) as unknown;
        if (typeof value !== 'function' || property === 'constructor') return value;
        // An announcement is bounded by its caller, and is no sign of a stalled store (announcePresence).
        if (property === 'announce' && object === (store as object)) return value.bind(object);
        const name = `${prefix}${String(property)}`;
        if (property === 'idempotencyWindow' && object === (store as object)) {
          return (...args: unknown[]) => {
            const window = (value as (...a: unknown[]) => unknown).apply(object, args);
            return typeof window === 'object' && window !== null ? wrapMethods(window, 'idempotencyWindow.') : window;
          };
        }
        return (...args: unknown[]) => limit((value as (...a: unknown[]) => unknown).apply(object, args), name);
      },
    });
  return wrapMethods(store, 'store.');
}
