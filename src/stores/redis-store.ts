// kana-meter/redis: RedisStore, the store several kanaMeter processes share, over the user's own Redis client (node-redis, ioredis, Valkey).

import { checkInteger, knownKeys, optionError, rejectUnknownKeys } from '../config/option-checks.js';
import type { IdempotencyWindow } from '../metering/idempotency-window.js';
import { checkEvictionPolicy } from './eviction-policy.js';
import { beginCheckScript, reportScript, reserveScript, storeAnswerScript } from './ledger-scripts.js';
import type { LuaScript } from './lua-script.js';
import { presenceScript } from './presence-script.js';
import { RedisCommands, type SendCommand } from './redis-commands.js';
import { RedisIdempotencyWindow } from './redis-idempotency-window.js';
import { normaliseReply, type RedisReply, readArray, readInteger } from './redis-reply.js';
import type {
  AnswerReceipt,
  AnswerRequest,
  CheckRequest,
  CheckTicket,
  IdempotencyWindowOptions,
  KanaMeterStore,
  LeaseState,
  ReportRequest,
  ReserveRequest,
  StoreContext,
  StoredAnswer,
  StoreKey,
  StoreStats,
} from './store.js';
import { rebuildMs } from './store.js';

export { firstKey } from './first-key.js';
export type { SendCommand } from './redis-commands.js';

export interface RedisStoreOptions {
  /**
   * Sends one raw command to Redis and resolves with its reply: kana-meter depends on no Redis
   * client. Commands are plain strings (`EVALSHA`, `SET` ... `NX` `PX`, `EXISTS`).
   * @default none: required
   * @example (...args: string[]) => redis.sendCommand(args) // node-redis
   * @example (command: string, ...args: string[]) => redis.call(command, ...args) // ioredis, and ioredis's Cluster
   * @example (...args: string[]) => cluster.sendCommand(firstKey(args), false, args) // node-redis's createCluster
   */
  sendCommand: SendCommand;
  /**
   * Put before every key the store writes (`<prefix>l:{...}` ledgers, `<prefix>{i}:...` idempotency keys, `<prefix>fleet`).
   * On Redis Cluster, a `{hash tag}` in it puts every key in one slot (works, but on one node).
   * @default 'kana-meter:'
   * @example 'billing:kana:'
   */
  prefix?: string;
  /**
   * Time limit of one Redis command, in milliseconds. A command without an answer by then fails
   * (the request is decided per instance), and Redis counts as unreachable until one answers.
   * @default 500
   * @example 200
   */
  timeoutMs?: number;
  /**
   * How long an instance's lease on units lasts without being renewed, in milliseconds: the units
   * it reserved and the units its requests in flight hold. A live instance renews it while it uses
   * it; one that dies (SIGKILL, crash, lost network) gives its units back this long after its last
   * renewal. Shorter gives units back sooner, longer tolerates longer pauses (GC, a slow Redis).
   * @default 10000
   * @example 5000
   */
  leaseMs?: number;
  /**
   * Most units an instance may have reserved and not spent per key, its requests in flight and
   * holds included: the size of a block while the allowance is far from used up (blocks shrink as
   * it runs low, down to one unit at the very end), and the most an instance that dies locks away
   * until its lease ends. A burst past it waits (at most a second) for units to be spent; one
   * request bigger than it gets its own units when nothing else is reserved. Larger means fewer
   * Redis round trips, and more locked away by a dead instance.
   * @default 64
   * @example 256
   */
  maxBlock?: number;
  /**
   * How long a (user, feature) ledger is kept after its last write, in milliseconds, and how long
   * an instance that stopped reporting is remembered: after that its usage Kana has not confirmed
   * stops counting (it died, and its usage was lost or is replayed from its spool by another).
   * @default 3600000 (1 hour)
   * @example 86_400_000
   */
  retainMs?: number;
}

/** The answer fields the scripts reply with, in order. */
const ANSWER_FIELDS = 9;

/**
 * The store for several kanaMeter processes: Kana's answers, leases on allowances and idempotency
 * keys in Redis (or Valkey), through your own client's `sendCommand`. Each ledger step is one Lua
 * script on the keys of one ledger (`<prefix>l:{<user>:<feature>}`, a hash), which share a hash tag:
 * one slot, so it works on Redis Cluster too.
 * Pass it to one kanaMeter() (`store` option); every key it writes expires.
 * @example new RedisStore({ sendCommand: (...args: string[]) => redis.sendCommand(args) })
 */
export class RedisStore implements KanaMeterStore {
  readonly #sendCommand: SendCommand;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #leaseMs: number;
  readonly #maxBlock: number;
  readonly #retainMs: number;
  #commands: RedisCommands | undefined;

  constructor(options: RedisStoreOptions) {
    if (typeof options !== 'object' || options === null) {
      throw optionError('RedisStore', options, 'an object such as { sendCommand }');
    }
    rejectUnknownKeys('RedisStore.', options, KNOWN_OPTIONS);
    if (typeof options.sendCommand !== 'function') {
      throw optionError(
        'RedisStore.sendCommand',
        options.sendCommand,
        'a function sending one command, e.g. (...args) => redis.sendCommand(args) for node-redis',
      );
    }
    const prefix = options.prefix ?? 'kana-meter:';
    if (typeof prefix !== 'string') throw optionError('RedisStore.prefix', prefix, 'a string');
    this.#sendCommand = options.sendCommand;
    this.#prefix = prefix;
    this.#timeoutMs = checkInteger('RedisStore.timeoutMs', options.timeoutMs, 500, 1);
    this.#leaseMs = checkInteger('RedisStore.leaseMs', options.leaseMs, 10_000, 100);
    this.#maxBlock = checkInteger('RedisStore.maxBlock', options.maxBlock, 64, 1);
    this.#retainMs = checkInteger('RedisStore.retainMs', options.retainMs, 3_600_000, this.#leaseMs);
  }

  bind(context: StoreContext): void {
    if (this.#commands) {
      throw new TypeError(
        'kana-meter: option `store` must be a store no other kanaMeter() uses; got a RedisStore already bound to one (create one RedisStore per kanaMeter(); they may share one Redis client).',
      );
    }
    this.#commands = new RedisCommands({
      sendCommand: this.#sendCommand,
      timeoutMs: this.#timeoutMs,
      logger: context.logger,
    });
    // Once, at start, in the background: a Redis that may evict the ledgers is worth a warning.
    void checkEvictionPolicy({ sendCommand: this.#sendCommand, timeoutMs: this.#timeoutMs, logger: context.logger });
  }

  /** The time limit of one command (the `timeoutMs` option): kanaMeter bounds its waits on this store by it. */
  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  get available(): boolean {
    return this.#commands?.available ?? true;
  }

  async reserve(key: StoreKey, request: ReserveRequest): Promise<LeaseState> {
    const reply = await this.#runLedger(reserveScript, key, request, [
      request.epoch,
      request.want,
      request.need,
      this.#maxBlock,
      request.lastEpoch ?? 0,
      rebuildMs(this.#leaseMs),
    ]);
    return leaseState(reply, 'reserve');
  }

  async report(key: StoreKey, request: ReportRequest): Promise<LeaseState> {
    return leaseState(await this.#runLedger(reportScript, key, request, [request.mode]), 'report');
  }

  async beginCheck(key: StoreKey, request: CheckRequest): Promise<CheckTicket> {
    const reply = readArray(
      await this.#run(beginCheckScript, key, [request.instance, request.lockMs, this.#retainMs]),
      'begin-check',
      2,
    );
    switch (reply[0]) {
      case 'fresh':
        return { status: 'fresh', answer: storedAnswer(reply, 1, 'begin-check') };
      case 'wait':
        return { status: 'wait', waitMs: readInteger(reply[1] ?? null, 'begin-check') };
      case 'failed':
        return { status: 'failed', code: String(reply[1]) };
      default:
        return { status: 'check', epoch: readInteger(reply[1] ?? null, 'begin-check') };
    }
  }

  async storeAnswer(key: StoreKey, request: AnswerRequest): Promise<AnswerReceipt> {
    const { outcome } = request;
    const args: (string | number)[] =
      'failed' in outcome
        ? [request.instance, request.epoch, outcome.failed, 0, 0, 0, 0, 0, 0, 0, 0]
        : [
            request.instance,
            request.epoch,
            '',
            outcome.access ? 1 : 0,
            outcome.consumable ? 1 : 0,
            outcome.used,
            outcome.budget ?? -1,
            outcome.overageEnabled ? 1 : 0,
            outcome.periodStart ?? 0,
            outcome.periodEnd ?? 0,
            outcome.ttlMs,
          ];
    const reply = readArray(await this.#run(storeAnswerScript, key, [...args, this.#retainMs]), 'store-answer', 1);
    if (reply[0] === 'stored') return { status: 'stored', answer: storedAnswer(reply, 1, 'store-answer') };
    return { status: reply[0] === 'failed' ? 'failed' : 'stale' };
  }

  idempotencyWindow(options: IdempotencyWindowOptions): IdempotencyWindow {
    // One hash tag for every idempotency key: a script that stores a response also evicts others (Redis Cluster: one slot).
    return new RedisIdempotencyWindow({ ...options, commands: this.#bound(), prefix: `${this.#prefix}{i}:` });
  }

  /**
   * Records the instance in `<prefix>fleet` (a sorted set) for `ttlMs` (0: removes it); resolves with how many
   * instances are in it.
   * Sent beside the ledger's commands, as one EVAL a second: a slow or failed announcement (Redis busy while
   * the app starts) changes neither whether Redis counts as reachable nor the store's counters; the next one retries.
   */
  async announce(instance: string, ttlMs: number): Promise<number> {
    const key = `${this.#prefix}fleet`;
    const reply = await this.#sendCommand('EVAL', presenceScript.source, '1', key, instance, String(ttlMs));
    return readInteger(normaliseReply(reply, 'announce'), 'announce');
  }

  stats(): StoreStats {
    const stats = this.#commands?.stats();
    return {
      available: stats?.available ?? true,
      commands: stats?.commands ?? 0,
      failures: stats?.failures ?? 0,
      outages: stats?.outages ?? 0,
    };
  }

  /** The ledger's hash for a key. */
  ledgerKey(key: StoreKey): string {
    return `${this.#prefix}l:${ledgerTag(key)}`;
  }

  #bound(): RedisCommands {
    if (!this.#commands) throw new Error('kana-meter: this RedisStore is not used by a kanaMeter() yet');
    return this.#commands;
  }

  #run(script: LuaScript, key: StoreKey, args: (string | number)[]): Promise<RedisReply> {
    return this.#bound().runScript(script, [this.ledgerKey(key)], args);
  }

  /** A ledger script (reserve, report): the instance, its totals, leaseMs and retainMs first (ledger-scripts.ts LEDGER_PROLOGUE), then `more`. */
  #runLedger(
    script: LuaScript,
    key: StoreKey,
    { instance, totals }: ReserveRequest | ReportRequest,
    more: (string | number)[],
  ): Promise<RedisReply> {
    const args = [
      instance,
      totals.spent,
      totals.returned,
      totals.confirmed,
      totals.held,
      this.#leaseMs,
      this.#retainMs,
    ];
    for (const value of more) args.push(value);
    return this.#run(script, key, args);
  }
}

/**
 * The hash tag every key of one (user, feature) ledger carries, `{<user>:<feature>}`: Redis Cluster
 * puts them in one slot, so a script may touch several. Ids are URI-encoded: one with ':' cannot
 * collide with another, and '{' '}' in an id cannot end the tag.
 */
function ledgerTag(key: StoreKey): string {
  return `{${encodeURIComponent(key.userId)}:${encodeURIComponent(key.featureId)}}`;
}

const KNOWN_OPTIONS = knownKeys<RedisStoreOptions>({
  sendCommand: true,
  prefix: true,
  timeoutMs: true,
  leaseMs: true,
  maxBlock: true,
  retainMs: true,
});

function leaseState(raw: RedisReply, command: string): LeaseState {
  const reply = readArray(raw, command, 6);
  return {
    status: reply[0] as LeaseState['status'],
    granted: readInteger(reply[1] ?? null, command),
    returned: readInteger(reply[2] ?? null, command),
    leaseMs: readInteger(reply[3] ?? null, command),
    remaining: readInteger(reply[4] ?? null, command),
    answer: reply.length >= 6 + ANSWER_FIELDS ? storedAnswer(reply, 6, command) : undefined,
    leases: readInteger(reply[5] ?? null, command),
  };
}

/** The 9 answer fields from `offset`: epoch, access, consumable, used, budget, overage, period start and end, ms left. */
function storedAnswer(reply: RedisReply[], offset: number, command: string): StoredAnswer {
  const field = (i: number) => readInteger(reply[offset + i] ?? null, command);
  const budget = field(4);
  return {
    epoch: field(0),
    access: field(1) === 1,
    consumable: field(2) === 1,
    used: field(3),
    budget: budget < 0 ? null : budget,
    overageEnabled: field(5) === 1,
    periodStart: field(6) || null,
    periodEnd: field(7) || null,
    ttlMs: field(8),
  };
}
