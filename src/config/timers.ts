// Unref'd timers: waits that never keep a process alive on their own.

/**
 * Resolves when `promise` settles or `ms` have passed, whichever comes first. The timer keeps the
 * process alive meanwhile: `await kana.close()` in a SIGTERM handler must not be cut short because
 * every other handle is gone.
 */
export async function raceTimeout(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  await Promise.race([promise, timeout]);
  clearTimeout(timer);
}

/** Keeps the process alive until `promise` settles (the queue's own timers are unref()'d). */
export async function keepAliveUntil<T>(promise: Promise<T>): Promise<T> {
  const handle = setInterval(() => {}, 2 ** 30);
  try {
    return await promise;
  } finally {
    clearInterval(handle);
  }
}

/** Waits `ms`; rejects with the signal's reason if it aborts first. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref();
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
