// The exponential backoff with jitter that spaces out probes while Kana is unavailable (p-retry's formula; p-retry does not export it).

/** `retry`'s backoff settings, as p-retry reads them. */
export interface BackoffSettings {
  readonly minTimeout: number;
  readonly maxTimeout: number;
  readonly factor: number;
  readonly randomize: boolean;
}

/**
 * The wait before try number `attempt` + 1, counting from 0: `minTimeout × factor^attempt`, times a
 * random factor in [1, 2) when `randomize`, at most `maxTimeout`. p-retry waits the same, rounded.
 */
export function backoffDelay(settings: BackoffSettings, attempt: number): number {
  const { minTimeout, maxTimeout, factor, randomize } = settings;
  return Math.min(minTimeout * factor ** attempt * (randomize ? 1 + Math.random() : 1), maxTimeout);
}
