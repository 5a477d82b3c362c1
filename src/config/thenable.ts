// Whether a value returned by a user's hook is a promise (or any thenable) to await.

export function isPromise<T>(value: unknown): value is Promise<T> {
  return typeof (value as Promise<T> | null)?.then === 'function';
}
