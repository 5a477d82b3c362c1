// Runs inside the temporary project once prom-client is installed: kana-meter/prometheus as ESM, scraped over HTTP.

import express from 'express';
import { kanaMeter } from 'kana-meter';
import { startKanaEmulator } from 'kana-meter/emulator';
import { prometheusMetrics } from 'kana-meter/prometheus';
import { Registry } from 'prom-client';

const emulator = await startKanaEmulator({
  seed: { users: [{ id: 'u1' }], features: [{ id: 'reports', type: 'CONSUMABLE' }] },
});
const register = new Registry();
const kana = kanaMeter({
  apiKey: emulator.apiKey,
  endpoint: emulator.url,
  userId: () => 'u1',
  routes: { 'GET /r': 'reports' },
  metrics: prometheusMetrics({ register }),
});
const app = express();
app.use(kana);
app.get('/r', (_req, res) => res.json({}));
app.get('/metrics', async (_req, res) => {
  res.type(register.contentType).send(await register.metrics());
});
const server = app.listen(0, '127.0.0.1');
await new Promise((resolve) => server.once('listening', resolve));
const base = `http://127.0.0.1:${server.address().port}`;
await fetch(`${base}/r`);
await fetch(`${base}/r`);
await kana.flush();
const text = await (await fetch(`${base}/metrics`)).text();
await kana.close();
server.close();
await emulator.close();
console.log(
  JSON.stringify({
    esm: true,
    delivered: /^kana_meter_events_delivered_total (\d+)$/m.exec(text)?.[1],
    calls: /^kana_meter_kana_call_duration_seconds_count\{operation="usage",outcome="ok"\} (\d+)$/m.exec(text)?.[1],
  }),
);
