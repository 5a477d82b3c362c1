// withTimeLimit: a promise that never settles becomes a rejection, and an answer that came while the event loop was
// blocked past the limit is still an answer (it is read before the limit rejects).

import { connect } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { TimeLimitError, withTimeLimit } from '../../src/config/time-limit.js';
import { type RedisServer, redisSkipReason, startRedisServer } from '../helpers/redis.js';

let redis: RedisServer | undefined;
beforeAll(async () => {
  if (!redisSkipReason) redis = await startRedisServer();
});
afterAll(async () => {
  await redis?.stop();
});

it('rejects with a TimeLimitError naming the call when the promise does not settle in time', async () => {
  const error = await withTimeLimit(new Promise(() => {}), 20, 'the userId hook').catch((reason: unknown) => reason);
  expect(error).toBeInstanceOf(TimeLimitError);
  expect(error).toMatchObject({ code: 'KANA_METER_TIME_LIMIT', what: 'the userId hook', limitMs: 20 });
});

it.skipIf(redisSkipReason)(
  'resolves with a reply that came over a socket while the event loop was blocked past the limit',
  async () => {
    const socket = connect((redis as RedisServer).port, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    try {
      const reply = new Promise<string>((resolve) => socket.once('data', (data) => resolve(String(data))));
      socket.write('PING\r\n');
      const limited = withTimeLimit(reply, 20, 'a PING');
      // The app keeps the event loop for 200 ms: Redis answers meanwhile, unread.
      const until = Date.now() + 200;
      while (Date.now() < until) {}
      expect(await limited).toBe('+PONG\r\n');
    } finally {
      socket.destroy();
    }
  },
);
