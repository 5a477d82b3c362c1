// The store's command layer against a real redis-server, through node-redis (RESP2, RESP3) and ioredis:
// normalised replies, scripts by SHA with NOSCRIPT recovery, the time limit, reachability logged once each way.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { logCodes } from '../../src/config/errors.js';
import { defineLuaScript } from '../../src/stores/lua-script.js';
import { RedisCommands } from '../../src/stores/redis-commands.js';
import { readArray, readInteger } from '../../src/stores/redis-reply.js';
import { StoreError } from '../../src/stores/store-error.js';
import { createLogSink } from '../helpers/app.js';
import {
  type RedisServer,
  type RedisTestClient,
  redisClients,
  redisIsExternal,
  redisSkipReason,
  startRedisServer,
} from '../helpers/redis.js';

// Adds ARGV[1] to KEYS[1] and returns the new value: a script whose effect shows how often it ran.
const incrementBy = defineLuaScript('increment-by', "return redis.call('INCRBY', KEYS[1], ARGV[1])");
// Every reply type a script can produce.
const shapes = defineLuaScript(
  'shapes',
  "return { 7, 'text', false, { 1, { 'nested' } }, true, redis.call('GET', KEYS[1]), 3.99 }",
);
const failing = defineLuaScript('failing', "return redis.call('NO-SUCH-COMMAND')");

const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown) => unhandled.push(reason);

async function rejection(promise: Promise<unknown>): Promise<StoreError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(StoreError);
  return error as StoreError;
}

describe.skipIf(redisSkipReason)('store commands against redis-server', () => {
  let redis: RedisServer;

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
    process.off('unhandledRejection', onUnhandled);
    expect(unhandled).toEqual([]);
  });

  describe.each(redisClients)('with %s', (_name, connect) => {
    let client: RedisTestClient;
    let sink: ReturnType<typeof createLogSink>;
    let commands: RedisCommands;

    beforeEach(async () => {
      await redis.flush();
      client = await connect(redis.url);
      sink = createLogSink();
      commands = new RedisCommands({ sendCommand: client.sendCommand, timeoutMs: 2000, logger: sink.logger });
    });
    afterEach(() => client.close());

    it('gives integers, strings, nil and arrays the same shape whatever the client', async () => {
      expect(await commands.command('SET', 'k:string', 'héllo')).toBe('OK');
      expect(await commands.command('GET', 'k:string')).toBe('héllo');
      expect(await commands.command('INCRBY', 'k:int', '41')).toBe(41);
      expect(await commands.command('GET', 'k:missing')).toBeNull();
      await commands.command('RPUSH', 'k:list', 'a', 'b');
      expect(await commands.command('LRANGE', 'k:list', '0', '-1')).toEqual(['a', 'b']);
      // RESP3 sends a map here; RESP2 a flat array: both come out flat.
      await commands.command('HSET', 'k:hash', 'used', '3');
      expect(await commands.command('HGETALL', 'k:hash')).toEqual(['used', '3']);
      const reply = await commands.runScript(shapes, ['k:string'], []);
      expect(reply).toEqual([7, 'text', null, [1, ['nested']], 1, 'héllo', 3]);
      expect(readInteger(readArray(reply, 'shapes', 7)[0] ?? null, 'shapes')).toBe(7);
      expect(readInteger('-12', 'shapes')).toBe(-12);
      expect(() => readInteger('1.5', 'shapes')).toThrow(expect.objectContaining({ code: 'STORE_BAD_REPLY' }));
      expect(() => readArray('x', 'shapes')).toThrow(expect.objectContaining({ code: 'STORE_BAD_REPLY' }));
    });

    it('rejects an error reply with STORE_COMMAND_FAILED: Redis answered, so it stays available', async () => {
      await commands.command('SET', 'k:string', 'x');
      const wrongType = await rejection(commands.command('HGET', 'k:string', 'field'));
      expect(wrongType.code).toBe('STORE_COMMAND_FAILED');
      expect(wrongType.message).toContain('WRONGTYPE');
      const scriptError = await rejection(commands.runScript(failing, [], []));
      expect(scriptError.code).toBe('STORE_COMMAND_FAILED');
      expect(scriptError.command).toBe('EVALSHA failing');
      expect(commands.stats()).toMatchObject({ available: true, failures: 2, outages: 0 });
      expect(sink.withCode(logCodes.storeUnavailable)).toEqual([]);
    });

    it('runs a script by SHA, and again in full (once) after SCRIPT FLUSH', async () => {
      expect(await redis.command('SCRIPT', 'LOAD', incrementBy.source)).toBe(incrementBy.sha);
      await redis.command('SCRIPT', 'FLUSH');
      // Fresh server: NOSCRIPT, then EVAL, which loads it.
      expect(await commands.runScript(incrementBy, ['k:count'], [5])).toBe(5);
      expect(await commands.runScript(incrementBy, ['k:count'], [1])).toBe(6);
      expect(commands.stats().scriptLoads).toBe(1);
      expect(await redis.command('SCRIPT', 'EXISTS', incrementBy.sha)).toEqual([1]);

      await redis.command('SCRIPT', 'FLUSH');
      expect(await commands.runScript(incrementBy, ['k:count'], [10])).toBe(16);
      expect(await commands.runScript(incrementBy, ['k:count'], [1])).toBe(17);
      // Each call applied exactly once, the recovery included.
      expect(await redis.command('GET', 'k:count')).toBe('17');
      expect(commands.stats()).toMatchObject({ scriptLoads: 2, commands: 4, failures: 0, available: true });
    });

    it('many concurrent calls after SCRIPT FLUSH each run exactly once', async () => {
      await commands.runScript(incrementBy, ['k:count'], [0]);
      await redis.command('SCRIPT', 'FLUSH');
      const replies = await Promise.all(
        Array.from({ length: 50 }, () => commands.runScript(incrementBy, ['k:count'], [1])),
      );
      expect(new Set(replies).size).toBe(50);
      expect(await redis.command('GET', 'k:count')).toBe('50');
    });

    it.skipIf(redisIsExternal)(
      'recovers after a restart: reconnects, reloads the script, logs one warning and one info line',
      async () => {
        const quick = new RedisCommands({ sendCommand: client.sendCommand, timeoutMs: 1000, logger: sink.logger });
        expect(await quick.runScript(incrementBy, ['k:count'], [1])).toBe(1);
        const reconnected = client.nextReady();
        await redis.kill();
        // The client queues it while reconnecting (a timeout) or refuses it: either way Redis is unreachable.
        const down = await rejection(quick.runScript(incrementBy, ['k:count'], [1]));
        expect(down.unreachable).toBe(true);
        expect(quick.stats().available).toBe(false);
        // More calls while it is down: no second warning.
        await Promise.allSettled([quick.command('PING'), quick.command('PING')]);
        await redis.restart();
        await reconnected;

        // No persistence: the data and the script cache are gone, and the script is sent again in full
        // (its second load: the first was on this fresh server). The call that timed out above reaches
        // the new server first, finds no script, and stops there.
        expect(await quick.runScript(incrementBy, ['k:count'], [1])).toBe(1);
        expect(await redis.command('GET', 'k:count')).toBe('1');
        expect(quick.stats()).toMatchObject({ available: true, outages: 1, scriptLoads: 2 });
        expect(sink.withCode(logCodes.storeUnavailable)).toHaveLength(1);
        expect(sink.withCode(logCodes.storeAvailable)).toHaveLength(1);
        expect(sink.withCode(logCodes.storeUnavailable)[0]).toMatchObject({ level: 40 });
        expect(sink.withCode(logCodes.storeAvailable)[0]).toMatchObject({ level: 30 });
      },
    );

    it('a reply that came while the event loop was blocked past timeoutMs is an answer, not a timeout', async () => {
      const quick = new RedisCommands({ sendCommand: client.sendCommand, timeoutMs: 100, logger: sink.logger });
      expect(await quick.command('PING')).toBe('PONG');
      const reply = quick.command('PING');
      // node-redis writes a command on the loop's next check phase: on the wire before the loop is kept.
      await new Promise((resolve) => setImmediate(resolve));
      // The app keeps the event loop for 300 ms (a slow start-up): Redis answers meanwhile, unread.
      const until = Date.now() + 300;
      while (Date.now() < until) {}
      expect(await reply).toBe('PONG');
      expect(quick.stats()).toMatchObject({ available: true, timeouts: 0, failures: 0 });
      expect(sink.withCode(logCodes.storeUnavailable)).toEqual([]);
    });

    it.skipIf(redisIsExternal)(
      'a hung Redis is a timeout, not a hung call; while it hangs one call probes and the rest fail fast',
      async () => {
        const quick = new RedisCommands({ sendCommand: client.sendCommand, timeoutMs: 1000, logger: sink.logger });
        expect(await quick.runScript(incrementBy, ['k:count'], [1])).toBe(1);
        redis.pause();
        try {
          const started = Date.now();
          const timedOut = await rejection(quick.runScript(incrementBy, ['k:count'], [1]));
          expect(timedOut.code).toBe('STORE_TIMEOUT');
          expect(Date.now() - started).toBeLessThan(5000);
          expect(quick.stats()).toMatchObject({ available: false, timeouts: 1, outages: 1 });

          // Down: the first call probes (and times out), the others are not sent at all.
          const probe = quick.command('PING');
          const skipped = await rejection(quick.command('PING'));
          expect(skipped.code).toBe('STORE_DOWN');
          expect((await rejection(probe)).code).toBe('STORE_TIMEOUT');
          expect(quick.stats()).toMatchObject({ skipped: 1, timeouts: 2, commands: 3, outages: 1 });
        } finally {
          redis.resume();
        }
        // A call that timed out may still apply once Redis runs again (the client had sent it): the
        // ledger's scripts must be safe to land late.
        expect(await quick.command('PING')).toBe('PONG');
        expect(await quick.command('GET', 'k:count')).toBe('2');
        expect(quick.stats()).toMatchObject({ available: true, outages: 1 });
        expect(sink.withCode(logCodes.storeUnavailable)).toHaveLength(1);
        expect(sink.withCode(logCodes.storeUnavailable)[0]?.err).toMatchObject({ code: 'STORE_TIMEOUT' });
        expect(sink.withCode(logCodes.storeAvailable)).toHaveLength(1);
      },
    );

    it('logs each outage once, and each recovery once', async () => {
      let fail = false;
      const flaky = new RedisCommands({
        sendCommand: (...args) =>
          fail ? Promise.reject(new Error('Connection is closed.')) : client.sendCommand(...args),
        timeoutMs: 2000,
        logger: sink.logger,
      });
      for (const outage of [1, 2]) {
        fail = true;
        for (let i = 0; i < 3; i++) expect((await rejection(flaky.command('PING'))).code).toBe('STORE_UNREACHABLE');
        fail = false;
        expect(await flaky.command('PING')).toBe('PONG');
        expect(await flaky.command('PING')).toBe('PONG');
        expect(sink.withCode(logCodes.storeUnavailable)).toHaveLength(outage);
        expect(sink.withCode(logCodes.storeAvailable)).toHaveLength(outage);
      }
      expect(flaky.stats()).toMatchObject({ outages: 2, failures: 6, available: true });
    });
  });

  it('a client closed under a timed-out command leaves no unhandled rejection', async () => {
    const [, connect] = redisClients.find(([name]) => name === 'ioredis')!;
    const client = await connect(redis.url);
    const commands = new RedisCommands({
      sendCommand: client.sendCommand,
      timeoutMs: 50,
      logger: createLogSink().logger,
    });
    // BLPOP on an empty list answers after 10 s: the call times out long before.
    expect((await rejection(commands.command('BLPOP', 'k:never', '10'))).code).toBe('STORE_TIMEOUT');
    client.close(); // ioredis now rejects the BLPOP it still holds
    expect((await rejection(commands.command('PING'))).code).toBe('STORE_UNREACHABLE');
  });
});

describe('store commands: what reaches the caller', () => {
  it('never throws synchronously: a sendCommand that throws gives a rejected promise', async () => {
    const sink = createLogSink();
    const commands = new RedisCommands({
      sendCommand: () => {
        throw new Error('not connected');
      },
      timeoutMs: 100,
      logger: sink.logger,
    });
    let pending: Promise<unknown> | undefined;
    expect(() => {
      pending = commands.command('PING');
    }).not.toThrow();
    const error = await rejection(pending!);
    expect(error).toMatchObject({ code: 'STORE_UNREACHABLE', command: 'PING', unreachable: true });
    expect(error.cause).toBeInstanceOf(Error);
    expect(sink.withCode(logCodes.storeUnavailable)).toHaveLength(1);
  });

  it('takes a sendCommand that returns a plain value, and rejects replies it cannot read', async () => {
    const replies: unknown[] = [Buffer.from('bytes'), 12n, new Map([['a', 1]]), () => 1];
    const commands = new RedisCommands({
      sendCommand: () => replies.shift(),
      timeoutMs: 100,
      logger: createLogSink().logger,
    });
    expect(await commands.command('GET', 'k')).toBe('bytes');
    expect(await commands.command('GET', 'k')).toBe(12);
    expect(await commands.command('HGETALL', 'k')).toEqual(['a', 1]);
    expect((await rejection(commands.command('GET', 'k'))).code).toBe('STORE_BAD_REPLY');
    expect(commands.stats()).toMatchObject({ available: true, failures: 1 });
  });
});
