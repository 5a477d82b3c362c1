// Idempotency-Key: the stored responses of keyed requests (claimed while they run, kept for a TTL) behind a small interface a shared store can implement, and a request's key.

import type { Request } from 'express';

/** A value now, or a promise of it (MemoryStore answers at once, a networked store later). */
type Promisable<T> = T | Promise<T>;

/** A finished response as a replay sends it again: status, the headers that matter to a client, and the body bytes. */
export interface StoredResponse {
  readonly status: number;
  /** Header name (lower case) and value, in the order they were set. */
  readonly headers: readonly (readonly [string, string | readonly string[]])[];
  readonly body: Buffer;
}

/**
 * What `begin` found for a key. `claimed`: nobody had it; the caller runs the request and then
 * calls `complete` or `release`. `in-flight`: another request with this key is running.
 * `done`: its response is stored. `fingerprint` is that of the request that claimed the key.
 */
export type IdempotencyClaim =
  | { readonly status: 'claimed' }
  | { readonly status: 'in-flight'; readonly fingerprint: string }
  | { readonly status: 'done'; readonly fingerprint: string; readonly response: StoredResponse };

/**
 * The keys of requests that ran or are running, and their stored responses. Each method may answer
 * at once or with a promise (a shared store answers over the network); a rejection is a store failure.
 * A key is `windowKey(userId, idempotencyKey)`.
 */
export interface IdempotencyWindow {
  /** Claims the key for a request with this fingerprint, or says who has it. Atomic. */
  begin(key: string, fingerprint: string): Promisable<IdempotencyClaim>;
  /** Stores the response of the request that claimed the key (for the TTL); a response over the bounds is not stored and the key is released. */
  complete(key: string, fingerprint: string, response: StoredResponse): Promisable<void>;
  /** Gives the key back (the response was not stored): the next request with it runs. Only the claim of `fingerprint` is released. */
  release(key: string, fingerprint: string): Promisable<void>;
}

/** Longest Idempotency-Key value honoured (longer ones are ignored: the request runs and is billed as usual). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

/**
 * How long a claim lasts while its request runs (at most the TTL): the key of an instance that
 * died with a request in flight is free again after this. Requests end sooner, and release or
 * complete their claim when they do.
 */
export const IDEMPOTENCY_CLAIM_MS = 600_000;

/** How often the memory window looks for expired keys. */
const DROP_INTERVAL_MS = 1000;

/** The request's idempotency key, from the header named `header` (lower case); undefined without a usable one. */
export function idempotencyKeyOf(req: Request, header: string): string | undefined {
  const value = req.headers[header];
  if (typeof value !== 'string') return undefined;
  const key = value.trim();
  return key.length > 0 && key.length <= MAX_IDEMPOTENCY_KEY_LENGTH ? key : undefined;
}

/**
 * One entry per user: the same key from two users is two requests. Each part is URI-encoded, so
 * ':' cannot make two keys collide (a Redis key name too).
 */
export function windowKey(userId: string, key: string): string {
  return `${encodeURIComponent(userId)}:${encodeURIComponent(key)}`;
}

/** Bytes a stored response counts against `maxBytes`: its body, and its headers as sent. */
export function storedSize(response: StoredResponse): number {
  let size = response.body.length;
  for (const [name, value] of response.headers) {
    size += name.length + (typeof value === 'string' ? value.length : value.join(', ').length) + 4;
  }
  return size;
}

interface Entry {
  expiry: number;
  readonly fingerprint: string;
  readonly response: StoredResponse | undefined;
  readonly size: number;
}

/**
 * The window in this process's memory: at most `maxKeys` keys (claims included) and `maxBytes`
 * of stored responses; when full, the oldest go first, 1% of the bounds at a time (`onEvict` counts
 * each: a retry of that request runs, and is billed, again). An expired key is ignored when looked
 * up, and dropped from the front once a second.
 */
export class MemoryIdempotencyWindow implements IdempotencyWindow {
  readonly #entries = new Map<string, Entry>();
  readonly #ttlMs: number;
  readonly #claimMs: number;
  readonly #maxKeys: number;
  readonly #maxBytes: number;
  /** When begin() next drops expired keys. */
  #nextDropAt = 0;
  readonly #onEvict: () => void;
  readonly #now: () => number;
  #bytes = 0;

  constructor(options: {
    ttlMs: number;
    maxKeys: number;
    maxBytes: number;
    onEvict: () => void;
    now?: () => number;
  }) {
    this.#ttlMs = options.ttlMs;
    this.#claimMs = Math.min(options.ttlMs, IDEMPOTENCY_CLAIM_MS);
    this.#maxKeys = options.maxKeys;
    this.#maxBytes = options.maxBytes;
    this.#onEvict = options.onEvict;
    this.#now = options.now ?? Date.now;
  }

  /** Keys kept (claims and stored responses). */
  get size(): number {
    return this.#entries.size;
  }

  /** Bytes of the stored responses kept. */
  get bytes(): number {
    return this.#bytes;
  }

  begin(key: string, fingerprint: string): IdempotencyClaim {
    const now = this.#now();
    this.#dropExpired(now);
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.expiry > now) {
      return entry.response === undefined
        ? { status: 'in-flight', fingerprint: entry.fingerprint }
        : { status: 'done', fingerprint: entry.fingerprint, response: entry.response };
    }
    if (entry !== undefined) this.#delete(key, entry);
    this.#makeRoom(1, 0);
    this.#entries.set(key, { expiry: now + this.#claimMs, fingerprint, response: undefined, size: 0 });
    return { status: 'claimed' };
  }

  complete(key: string, fingerprint: string, response: StoredResponse): void {
    const entry = this.#entries.get(key);
    // Only its own claim: one that expired and was claimed again by another request is not overwritten.
    if (entry === undefined || entry.response !== undefined || entry.fingerprint !== fingerprint) return;
    this.#delete(key, entry);
    const size = storedSize(response);
    if (size > this.#maxBytes) return;
    this.#makeRoom(1, size);
    // Re-inserted at the end: stored responses all live ttlMs, so the map stays in expiry order for them.
    this.#entries.set(key, { expiry: this.#now() + this.#ttlMs, fingerprint, response, size });
    this.#bytes += size;
  }

  release(key: string, fingerprint: string): void {
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.response === undefined && entry.fingerprint === fingerprint) {
      this.#delete(key, entry);
    }
  }

  /**
   * Evicts the oldest keys until `keys` more and `bytes` more fit, and 1% to spare: each pass
   * starts at the front of the Map, over the holes earlier evictions left there until V8 compacts
   * it, so a full window evicts in passes of many keys rather than one key per request.
   */
  #makeRoom(keys: number, bytes: number): void {
    if (this.#entries.size + keys <= this.#maxKeys && this.#bytes + bytes <= this.#maxBytes) return;
    const maxKeys = this.#maxKeys - Math.floor(this.#maxKeys / 100);
    const maxBytes = this.#maxBytes - Math.floor(this.#maxBytes / 100);
    for (const [key, entry] of this.#entries) {
      if (this.#entries.size + keys <= maxKeys && this.#bytes + bytes <= maxBytes) return;
      this.#delete(key, entry);
      this.#onEvict();
    }
  }

  #delete(key: string, entry: Entry): void {
    this.#entries.delete(key);
    this.#bytes -= entry.size;
  }

  /** Drops expired keys from the front, at most once a second (a lookup ignores an expired key anyway). */
  #dropExpired(now: number): void {
    if (now < this.#nextDropAt) return;
    this.#nextDropAt = now + DROP_INTERVAL_MS;
    for (const [key, entry] of this.#entries) {
      if (entry.expiry > now) return;
      this.#delete(key, entry);
    }
  }
}
