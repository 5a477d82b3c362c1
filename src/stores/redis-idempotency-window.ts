// The idempotency window in Redis: one key per billed (user, feature, Idempotency-Key), SET NX PX, shared by every instance; this process's memory answers when Redis cannot.

import { type IdempotencyWindow, MemoryIdempotencyWindow } from '../metering/idempotency-window.js';
import type { RedisCommands } from './redis-commands.js';
import type { IdempotencyWindowOptions } from './store.js';

export interface RedisIdempotencyWindowOptions extends IdempotencyWindowOptions {
  readonly commands: RedisCommands;
  /** Put before each window key: `<store prefix>i:`. */
  readonly prefix: string;
}

/**
 * A key billed by any instance within the TTL is billed; each claim is also kept in this
 * process's memory, so that while Redis cannot answer, a retry reaching this instance is still
 * recognised (one reaching another instance then may be billed again: a refund, never a loss).
 */
export class RedisIdempotencyWindow implements IdempotencyWindow {
  readonly #commands: RedisCommands;
  readonly #prefix: string;
  readonly #ttl: string;
  readonly #local: MemoryIdempotencyWindow;

  constructor(options: RedisIdempotencyWindowOptions) {
    this.#commands = options.commands;
    this.#prefix = options.prefix;
    this.#ttl = String(options.ttlMs);
    this.#local = new MemoryIdempotencyWindow(options);
  }

  async claim(key: string): Promise<boolean> {
    const firstHere = this.#local.claim(key);
    try {
      const reply = await this.#commands.command('SET', this.#prefix + key, '1', 'NX', 'PX', this.#ttl);
      // Billed already if either has seen it (Redis may have lost the key in a restart).
      return firstHere && reply === 'OK';
    } catch {
      return firstHere;
    }
  }

  async has(key: string): Promise<boolean> {
    if (this.#local.has(key)) return true;
    // Before the handler: a request does not wait for an unreachable Redis.
    if (!this.#commands.available) return false;
    try {
      return (await this.#commands.command('EXISTS', this.#prefix + key)) === 1;
    } catch {
      return false;
    }
  }
}
