// Type-checked against the installed tarball under NodeNext: a CommonJS consumer, resolved through "require".
import express = require('express');
import kanaMeterModule = require('kana-meter');
import emulatorModule = require('kana-meter/emulator');
import openTelemetryModule = require('kana-meter/opentelemetry');
import prometheusModule = require('kana-meter/prometheus');
import redisModule = require('kana-meter/redis');

const kana = kanaMeterModule.kanaMeter({
  apiKey: 'prv_test_x',
  userId: () => 'u1',
  enforce: true,
  metrics: prometheusModule.prometheusMetrics({ prefix: 'api_kana_' }),
  store: new redisModule.RedisStore({ sendCommand: (command: string, ...args: string[]) => [command, ...args] }),
});
kanaMeterModule.kanaMeter({ apiKey: 'prv_test_x', userId: () => 'u1', metrics: openTelemetryModule.openTelemetry() });
const app = express();
app.get('/docs/:id', kanaMeterModule.meter('docs'), (req, res) => {
  const remaining: number | null | undefined = req.kana?.remaining;
  res.json({ remaining });
});
const flushed: Promise<void> = kana.flush();
const started = emulatorModule.startKanaEmulator();
export = { flushed, started };
