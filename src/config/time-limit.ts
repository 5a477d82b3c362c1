// Time limits on what the host passes in (the userId hook, a store's calls, onDenied): a promise that never settles becomes a rejection.

/** The error a call that did not settle in time rejects with; `what` names the call. */
export class TimeLimitError extends Error {
  override readonly name = 'TimeLimitError';
  readonly code = 'KANA_METER_TIME_LIMIT';

  constructor(
    readonly what: string,
    readonly limitMs: number,
  ) {
    super(`kana-meter: ${what} did not settle within ${limitMs} ms`);
  }
}

/**
 * `promise`, or a rejection with a TimeLimitError once `ms` have passed. The timer is unref()'d
 * (a wait never keeps the process alive) and cleared when the promise settles first.
 */
export function withTimeLimit<T>(promise: PromiseLike<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    // Rejected after this turn's poll phase: an answer that came while the app blocked the event loop is read first.
    const timer = setTimeout(() => setImmediate(() => reject(new TimeLimitError(what, ms))), ms);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
