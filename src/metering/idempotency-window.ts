// Idempotency-Key: which (user, feature, key) were billed within a TTL, behind a small interface a shared store can implement, and a request's key.

import type { Request } from 'express';
import { isPromise } from '../config/thenable.js';

/**
 * The keys billed recently. Each method may answer at once or with a promise (a shared store
 * answers over the network). A key is `windowKey(userId, featureId, idempotencyKey)`.
 */
export interface IdempotencyWindow {
  /** Marks the key billed and returns true, or returns false when it was billed already within the TTL. Atomic. */
  claim(key: string): boolean | Promise<boolean>;
  /** Whether the key was billed within the TTL. */
  has(key: string): boolean | Promise<boolean>;
}

/**
 * Calls `then` with a window's answer: in the same tick when it answers at once, once its promise
 * resolves otherwise (then the returned promise settles after `then` or `failed` ran).
 */
export function onWindowAnswer(
  answer: boolean | Promise<boolean>,
  then: (value: boolean) => void,
  failed: (error: unknown) => void,
): Promise<void> | undefined {
  if (!isPromise(answer)) {
    then(answer);
    return undefined;
  }
  return answer.then(then, failed);
}

/** Longest Idempotency-Key value honoured (longer ones are ignored: the request is billed as usual). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;

/** The request's idempotency key, from the header named `header` (lower case); undefined without a usable one. */
export function idempotencyKeyOf(req: Request, header: string): string | undefined {
  const value = req.headers[header];
  if (typeof value !== 'string') return undefined;
  const key = value.trim();
  return key.length > 0 && key.length <= MAX_IDEMPOTENCY_KEY_LENGTH ? key : undefined;
}

/**
 * One entry per user and feature: the same key from two users, or for two features, is two
 * requests. Each part is URI-encoded, so ':' cannot make two keys collide (a Redis key name too).
 */
export function windowKey(userId: string, featureId: string, key: string): string {
  return `${encodeURIComponent(userId)}:${encodeURIComponent(featureId)}:${encodeURIComponent(key)}`;
}

/**
 * The window in this process's memory: at most `maxKeys` keys; when full, the oldest goes first
 * (`onEvict` counts it: a retry of that request would be billed again). Every key lives the same
 * TTL, so insertion order is expiry order and expired keys are dropped from the front.
 */
export class MemoryIdempotencyWindow implements IdempotencyWindow {
  readonly #expiries = new Map<string, number>();
  readonly #ttlMs: number;
  readonly #maxKeys: number;
  readonly #onEvict: () => void;
  readonly #now: () => number;

  constructor(options: { ttlMs: number; maxKeys: number; onEvict: () => void; now?: () => number }) {
    this.#ttlMs = options.ttlMs;
    this.#maxKeys = options.maxKeys;
    this.#onEvict = options.onEvict;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#expiries.size;
  }

  claim(key: string): boolean {
    const now = this.#now();
    this.#dropExpired(now);
    const expiry = this.#expiries.get(key);
    if (expiry !== undefined && expiry > now) return false;
    this.#expiries.delete(key);
    if (this.#expiries.size >= this.#maxKeys) {
      const oldest = this.#expiries.keys().next().value as string;
      this.#expiries.delete(oldest);
      this.#onEvict();
    }
    this.#expiries.set(key, now + this.#ttlMs);
    return true;
  }

  has(key: string): boolean {
    const expiry = this.#expiries.get(key);
    return expiry !== undefined && expiry > this.#now();
  }

  #dropExpired(now: number): void {
    for (const [key, expiry] of this.#expiries) {
      if (expiry > now) return;
      this.#expiries.delete(key);
    }
  }
}
