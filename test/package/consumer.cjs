// Runs inside a temporary project where the packed tarball is installed: CommonJS require of the main entry and
// kana-meter/emulator, which it starts itself and scripts one 503 on; then a check in shadow mode with a KanaClient.
const express = require('express');
const { kanaMeter, meter, KanaClient } = require('kana-meter');
const { startKanaEmulator } = require('kana-meter/emulator');
const drive = require('./drive.cjs');

(async () => {
  const emulator = await startKanaEmulator({
    seed: { users: [{ id: 'u1' }], features: ['api-calls', 'reports'].map((id) => ({ id, type: 'CONSUMABLE' })) },
  });
  emulator.failNext({ status: 503 }, { operation: 'createUsageEvent' });
  const { apiKey, url: endpoint } = emulator;
  const { served, stats } = await drive({ express, kanaMeter, meter, endpoint, apiKey, user: 'u1' });
  const client = new KanaClient({ apiKey, endpoint });
  const kana = kanaMeter({ client, userId: () => 'u1', enforce: 'shadow', idempotencyKey: true });
  const { status } = await kana.check('u1', 'api-calls'); // u1 has no plan with api-calls
  await kana.close();
  const usage = { 'api-calls': emulator.usage('u1', 'api-calls'), reports: emulator.usage('u1', 'reports') };
  console.log(JSON.stringify({ cjs: true, served, usage, retries: stats.retries, check: status }));
  await emulator.close();
})();
