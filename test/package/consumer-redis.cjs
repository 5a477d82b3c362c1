// Runs inside a temporary project where the packed tarball is installed: kana-meter/redis through require(), two instances
// over ioredis against REDIS_URL (a real redis-server the test started) and the emulator; prints what Kana recorded.
const express = require('express');
const { kanaMeter } = require('kana-meter');
const { startKanaEmulator } = require('kana-meter/emulator');
const { RedisStore } = require('kana-meter/redis');
const { Redis } = require('ioredis');

(async () => {
  const emulator = await startKanaEmulator({
    seed: {
      users: [{ id: 'u1' }],
      features: [{ id: 'reports', type: 'CONSUMABLE' }],
      packages: [{ id: 'p', features: [{ id: 'reports', limit: 4 }] }],
      subscriptions: [{ userId: 'u1', packageId: 'p' }],
    },
  });
  const redis = new Redis(process.env.REDIS_URL);
  const instances = [];
  for (let i = 0; i < 2; i++) {
    const kana = kanaMeter({
      apiKey: emulator.apiKey,
      endpoint: emulator.url,
      userId: () => 'u1',
      routes: { 'GET /r': 'reports' },
      enforce: true,
      store: new RedisStore({
        sendCommand: (command, ...args) => redis.call(command, ...args),
        prefix: 'cjs-consumer:',
      }),
    });
    const app = express();
    app.use(kana);
    app.get('/r', (_req, res) => res.json({}));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    instances.push({ kana, server, url: `http://127.0.0.1:${server.address().port}/r` });
  }
  const statuses = [];
  for (let i = 0; i < 6; i++) statuses.push((await fetch(instances[i % 2].url)).status);
  for (const { kana, server } of instances) {
    await kana.close();
    server.close();
  }
  const checks = emulator.requests().filter((sent) => sent.fieldNames.includes('canUseFeature')).length;
  console.log(JSON.stringify({ cjs: true, statuses, usage: emulator.usage('u1', 'reports'), checks }));
  redis.disconnect();
  await emulator.close();
})();
