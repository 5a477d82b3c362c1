// Leases at rest: far from the end of the allowance, with nothing to report before their renewal; woken then, not visited every report interval.

/**
 * Entries waiting for a time (their lease's renewal), woken in the order they came to rest. Leases
 * all last as long, so that order is the order of their times; an entry that rests again, or is
 * taken out meanwhile (a request came), wakes only for its latest time.
 */
export class RestingLeases<T> {
  /** Each entry's latest wake time: the record that counts. */
  readonly #wakeAt = new Map<T, number>();
  #queue: { entry: T; wakeAt: number }[] = [];
  #head = 0;

  get size(): number {
    return this.#wakeAt.size;
  }

  /** Rests `entry` until `wakeAt` (replacing an earlier time). */
  add(entry: T, wakeAt: number): void {
    this.#wakeAt.set(entry, wakeAt);
    this.#queue.push({ entry, wakeAt });
  }

  /** Takes `entry` out, if it rests. */
  delete(entry: T): void {
    this.#wakeAt.delete(entry);
  }

  /** Takes out and returns the entries whose time has come by `now`. */
  wake(now: number): T[] {
    const woken: T[] = [];
    while (this.#head < this.#queue.length) {
      const { entry, wakeAt } = this.#queue[this.#head] as { entry: T; wakeAt: number };
      if (wakeAt > now) break;
      this.#head++;
      if (this.#wakeAt.get(entry) !== wakeAt) continue; // taken out, or resting again until later
      this.#wakeAt.delete(entry);
      woken.push(entry);
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return woken;
  }

  /** Every resting entry. */
  entries(): IterableIterator<T> {
    return this.#wakeAt.keys();
  }

  clear(): void {
    this.#wakeAt.clear();
    this.#queue = [];
    this.#head = 0;
  }
}
