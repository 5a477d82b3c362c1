// The command layer under RedisStore: the user's sendCommand with a time limit, Lua by SHA (reloaded on NOSCRIPT), normalised replies, reachability.

import type { KanaLogger } from '../config/logger.js';
import { TimeLimitError, withTimeLimit } from '../config/time-limit.js';
import type { LuaScript } from './lua-script.js';
import { normaliseReply, type RedisReply } from './redis-reply.js';
import { redisErrorCode, StoreError, toStoreError } from './store-error.js';
import { StoreReachability } from './store-reachability.js';

/**
 * Sends one raw command to Redis and resolves with its reply (the rate-limit-redis convention), e.g.
 * node-redis: `(...args: string[]) => client.sendCommand(args)`;
 * ioredis: `(command: string, ...args: string[]) => client.call(command, ...args)`.
 */
export type SendCommand = (...args: string[]) => unknown;

export interface RedisCommandsOptions {
  sendCommand: SendCommand;
  /** Time limit of one call in milliseconds (a script call and its NOSCRIPT fallback share it). */
  timeoutMs: number;
  logger: KanaLogger;
}

/** What the command layer has done (counters) and whether Redis answers now. */
export interface RedisCommandStats {
  /** False from a failure or timeout until Redis answers again. */
  available: boolean;
  /** Calls sent to Redis (a script call counts once, with or without its NOSCRIPT fallback). */
  commands: number;
  /** Calls that failed: timeouts, connection failures, error replies. */
  failures: number;
  /** Calls with no answer within the time limit (counted in `failures` too). */
  timeouts: number;
  /** Calls not sent because Redis was unreachable and another call was already probing it. */
  skipped: number;
  /** Times Redis went from available to unreachable. */
  outages: number;
  /** Scripts Redis had lost (restart, SCRIPT FLUSH, failover) and that ran again in full with EVAL, which reloads them. */
  scriptLoads: number;
}

type Counts = Omit<RedisCommandStats, 'available' | 'outages'>;
type Send = (args: string[]) => Promise<unknown>;

export class RedisCommands {
  readonly #sendCommand: SendCommand;
  readonly #timeoutMs: number;
  readonly #reachability: StoreReachability;
  readonly #counts: Counts = { commands: 0, failures: 0, timeouts: 0, skipped: 0, scriptLoads: 0 };
  /** While Redis is unreachable, one call at a time goes through to find out whether it is back. */
  #probing = false;

  constructor(options: RedisCommandsOptions) {
    this.#sendCommand = options.sendCommand;
    this.#timeoutMs = options.timeoutMs;
    this.#reachability = new StoreReachability(options.logger);
  }

  /** Sends one command, e.g. `command('PTTL', key)`. Rejects with a StoreError only. */
  command(...args: string[]): Promise<RedisReply> {
    return this.#call(args[0] ?? '', (send) => send(args));
  }

  /**
   * Runs `script` with EVALSHA. If Redis lost it (restart, SCRIPT FLUSH, failover), runs it with EVAL,
   * which also loads it again. Rejects with a StoreError only.
   */
  runScript(script: LuaScript, keys: readonly string[], args: readonly (string | number)[]): Promise<RedisReply> {
    const tail = [String(keys.length), ...keys, ...args.map(String)];
    return this.#call(`EVALSHA ${script.name}`, async (send) => {
      try {
        return await send(['EVALSHA', script.sha, ...tail]);
      } catch (error) {
        // NOSCRIPT means the script did not run: sending it again cannot apply it twice. Any other
        // error may come after the script ran (a timeout, a lost connection), so it is never retried here.
        if (redisErrorCode(error) !== 'NOSCRIPT') throw error;
        const reply = await send(['EVAL', script.source, ...tail]);
        this.#counts.scriptLoads++;
        return reply;
      }
    });
  }

  /** Whether Redis answers now (false from a failure or timeout until a command gets through). */
  get available(): boolean {
    return this.#reachability.available;
  }

  stats(): RedisCommandStats {
    return { available: this.#reachability.available, outages: this.#reachability.outages, ...this.#counts };
  }

  async #call(command: string, operation: (send: Send) => Promise<unknown>): Promise<RedisReply> {
    const probe = !this.#reachability.available;
    if (probe) {
      if (this.#probing) {
        this.#counts.skipped++;
        throw new StoreError('STORE_DOWN', command, 'not sent: Redis is unreachable and another command is probing it');
      }
      this.#probing = true;
    }
    this.#counts.commands++;
    // Once the call has settled (a timeout), its operation sends nothing more: no late NOSCRIPT fallback.
    let settled = false;
    const send: Send = (args) =>
      settled
        ? Promise.reject(new StoreError('STORE_TIMEOUT', command, 'not sent: the call timed out'))
        : this.#send(args);
    try {
      // A command past its limit may settle later: withTimeLimit has already handled its rejection.
      const reply = normaliseReply(await withTimeLimit(operation(send), this.#timeoutMs, command), command);
      this.#reachability.markAnswered();
      return reply;
    } catch (error) {
      const failure =
        error instanceof TimeLimitError
          ? new StoreError('STORE_TIMEOUT', command, `no answer within ${this.#timeoutMs} ms`)
          : toStoreError(error, command);
      this.#counts.failures++;
      if (failure.code === 'STORE_TIMEOUT') this.#counts.timeouts++;
      if (failure.unreachable) this.#reachability.markUnreachable(failure);
      else this.#reachability.markAnswered();
      throw failure;
    } finally {
      settled = true;
      if (probe) this.#probing = false;
    }
  }

  /** The user's sendCommand, as a promise even if it throws or returns a plain value. */
  readonly #send: Send = (args) => {
    try {
      return Promise.resolve(this.#sendCommand(...args));
    } catch (error) {
      return Promise.reject(error);
    }
  };
}
