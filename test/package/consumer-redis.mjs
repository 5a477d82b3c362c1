// Runs inside a temporary project where the packed tarball is installed: kana-meter/redis as ESM, two instances over
// node-redis against REDIS_URL (a real redis-server the test started) and the emulator; prints what Kana recorded.

import express from 'express';
import { kanaMeter } from 'kana-meter';
import { startKanaEmulator } from 'kana-meter/emulator';
import { RedisStore } from 'kana-meter/redis';
import { createClient } from 'redis';

const emulator = await startKanaEmulator({
  seed: {
    users: [{ id: 'u1' }],
    features: [{ id: 'reports', type: 'CONSUMABLE' }],
    packages: [{ id: 'p', features: [{ id: 'reports', limit: 3 }] }],
    subscriptions: [{ userId: 'u1', packageId: 'p' }],
  },
});
const redis = createClient({ url: process.env.REDIS_URL });
await redis.connect();
const servers = [];
const instances = [];
for (let i = 0; i < 2; i++) {
  const kana = kanaMeter({
    apiKey: emulator.apiKey,
    endpoint: emulator.url,
    userId: () => 'u1',
    routes: { 'GET /r': 'reports' },
    enforce: true,
    store: new RedisStore({ sendCommand: (...args) => redis.sendCommand(args), prefix: 'esm-consumer:' }),
  });
  const app = express();
  app.use(kana);
  app.get('/r', (_req, res) => res.json({}));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  servers.push(server);
  instances.push({ kana, url: `http://127.0.0.1:${server.address().port}/r` });
}
const statuses = [];
for (let i = 0; i < 6; i++) statuses.push((await fetch(instances[i % 2].url)).status);
for (const { kana } of instances) await kana.close();
for (const server of servers) server.close();
const checks = emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature')).length;
console.log(
  JSON.stringify({
    esm: true,
    statuses,
    usage: emulator.usage('u1', 'reports'),
    checks,
    redisKeys: await redis.keys('esm-consumer:*'),
  }),
);
redis.destroy();
await emulator.close();
