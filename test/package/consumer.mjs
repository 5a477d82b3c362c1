// Runs inside a temporary project where the packed tarball is installed: ESM import of both entries.

import express from 'express';
import { KanaError, kanaMeter, meter } from 'kana-meter';
import { startKanaEmulator } from 'kana-meter/emulator';

const emulator = await startKanaEmulator({
  seed: {
    users: [{ id: 'u1' }],
    features: [{ id: 'reports', type: 'CONSUMABLE' }],
    packages: [{ id: 'p', features: [{ id: 'reports', limit: null }] }],
    subscriptions: [{ userId: 'u1', packageId: 'p' }],
  },
});
const kana = kanaMeter({ apiKey: emulator.apiKey, endpoint: emulator.url, userId: () => 'u1' });
const app = express();
app.use(kana);
app.get('/r', meter('reports'), (_req, res) => res.json({}));
const server = app.listen(0, '127.0.0.1');
await new Promise((resolve) => server.once('listening', resolve));
await fetch(`http://127.0.0.1:${server.address().port}/r`);
kana.record('u1', 'reports', 2); // usage outside a request
const { source } = await kana.check('u1', 'reports');
await kana.close();
server.close();
console.log(
  JSON.stringify({ esm: true, usage: emulator.usage('u1', 'reports'), check: source, kanaError: typeof KanaError }),
);
await emulator.close();
