// Type-checked against the installed tarball (NodeNext and Bundler resolution): ESM consumer of both entries.
import express from 'express';
import { type KanaMeterOptions, type KanaMeterStats, kanaMeter, meter } from 'kana-meter';
import { type KanaEmulator, startKanaEmulator } from 'kana-meter/emulator';

const options: KanaMeterOptions = {
  apiKey: 'prv_test_x',
  userId: (req) => req.get('x-user'),
  routes: { 'POST /api/search': 'api-calls', 'GET /api/items/:id': { feature: 'item-reads', delta: 2 } },
};
const kana = kanaMeter(options);
const app = express();
app.use(kana);
app.get('/r', meter('reports', { delta: (_req, res) => Number(res.locals.rows) }), (_req, res) => {
  res.json({});
});
const stats: KanaMeterStats = kana.stats();
const delivered: number = stats.delivered;
const emulator: Promise<KanaEmulator> = startKanaEmulator({ port: 0 });

export { delivered, emulator };
