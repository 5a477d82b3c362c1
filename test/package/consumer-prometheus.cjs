// Runs inside the temporary project once prom-client is installed: kana-meter/prometheus required as CommonJS.
const { kanaMeter, KanaClient } = require('kana-meter');
const { startKanaEmulator } = require('kana-meter/emulator');
const { prometheusMetrics } = require('kana-meter/prometheus');
const { register } = require('prom-client');

(async () => {
  const emulator = await startKanaEmulator();
  const client = new KanaClient({ apiKey: emulator.apiKey, endpoint: emulator.url });
  // The default registry: prom-client's global one, shared with the consumer's require('prom-client').
  const kana = kanaMeter({ client, userId: () => 'u1', metrics: prometheusMetrics() });
  const text = await register.metrics();
  await kana.close();
  console.log(JSON.stringify({ cjs: true, available: /^kana_meter_kana_available (\d)$/m.exec(text)?.[1] }));
  await emulator.close();
})();
