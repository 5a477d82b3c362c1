// Runs inside a temporary project where the packed tarball is installed: CommonJS require of both entries.
const { kanaMeter, meter, KanaClient } = require('kana-meter');
const { startKanaEmulator } = require('kana-meter/emulator');

(async () => {
  const emulator = await startKanaEmulator();
  emulator.seed({ users: [{ id: 'u1' }], features: [{ id: 'f', type: 'BINARY' }] });
  const client = new KanaClient({ apiKey: emulator.apiKey, endpoint: emulator.url });
  await client.recordUsage({ userId: 'u1', featureId: 'f', delta: 2 });
  const kana = kanaMeter({ client, userId: () => 'u1', enforce: 'shadow', idempotencyKey: true });
  const { status } = await kana.check('u1', 'f'); // u1 has no plan with f
  await kana.close();
  console.log(JSON.stringify({ cjs: true, usage: emulator.usage('u1', 'f'), meter: typeof meter('f'), check: status }));
  await emulator.close();
})();
