// Whether a value returned by a user's hook is a promise (or any thenable) to await, and adopting it safely.

/** True for a promise or any thenable; also for a value whose `then` cannot even be read (adopting it rejects). */
export function isPromise<T>(value: unknown): value is Promise<T> {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  try {
    return typeof (value as { then?: unknown }).then === 'function';
  } catch {
    return true;
  }
}

/**
 * A real promise for a hook's value: a thenable is adopted once, as a promise would (a `then` that
 * throws, or calls back twice, or cannot be read, becomes a rejection or is ignored), never run
 * synchronously inside our listener.
 */
export function toPromise<T>(value: T | PromiseLike<T>): Promise<T> {
  return new Promise<T>((resolve) => resolve(value));
}
