// Runs inside a temporary project where the packed tarball is installed: ESM import of the main entry and kana-meter/emulator,
// which it starts itself and scripts one 503 on; then record() and check() outside a request.
import express from 'express';
import { KanaError, kanaMeter, meter } from 'kana-meter';
import { startKanaEmulator } from 'kana-meter/emulator';
import drive from './drive.cjs';

const features = ['api-calls', 'reports', 'exports'];
const emulator = await startKanaEmulator({
  seed: {
    users: [{ id: 'u1' }],
    features: features.map((id) => ({ id, type: 'CONSUMABLE' })),
    packages: [{ id: 'p', features: features.map((id) => ({ id, limit: null })) }],
    subscriptions: [{ userId: 'u1', packageId: 'p' }],
  },
});
emulator.failNext({ status: 503 }, { operation: 'createUsageEvent' });
const { apiKey, url: endpoint } = emulator;
const { served, stats } = await drive({ express, kanaMeter, meter, endpoint, apiKey, user: 'u1' });
const kana = kanaMeter({ apiKey, endpoint, userId: () => 'u1' });
kana.record('u1', 'exports', 2); // usage outside a request
const { source } = await kana.check('u1', 'reports');
await kana.close();
const usage = { 'api-calls': emulator.usage('u1', 'api-calls'), reports: emulator.usage('u1', 'reports') };
const recorded = emulator.usage('u1', 'exports');
console.log(
  JSON.stringify({
    esm: true,
    served,
    usage,
    retries: stats.retries,
    recorded,
    check: source,
    kanaError: typeof KanaError,
  }),
);
await emulator.close();
