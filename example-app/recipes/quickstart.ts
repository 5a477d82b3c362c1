// app.ts: searches billed to Kana and refused once the user's plan is used up; reports billed.
// Run: KANA_API_KEY=prv_... node --import tsx app.ts (KANA_ENDPOINT=... for `npx kana-emulator`).

import type { AddressInfo } from 'node:net';
import express from 'express';
import { kanaMeter, meter } from 'kana-meter';

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY, // your Kana private key
  endpoint: process.env.KANA_ENDPOINT, // unset: Kana itself
  userId: (req) => req.get('x-user-id'), // who is billed: in your app, the user your authentication found
  routes: { 'POST /api/search': { feature: 'api-calls', enforce: true } }, // billed, and checked first
});

const app = express();
app.use(kana);
app.post('/api/search', (req, res) => {
  res.json({ hits: [], remaining: req.kana?.remaining }); // what the plan has left
});
app.get('/api/reports/:id', meter('reports'), (req, res) => {
  res.json({ id: req.params.id }); // billed as 'reports' (not enforced)
});

const server = app.listen(Number(process.env.PORT ?? 3000), (error) => {
  if (error) throw error;
  console.log(`listening on port ${(server.address() as AddressInfo).port}`);
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, async () => {
    setTimeout(() => server.closeAllConnections(), 10_000).unref(); // requests in flight get 10 s
    await new Promise((done) => server.close(done)); // stops accepting; resolves once those requests have finished
    await kana.close(); // then delivers their usage
    process.exit(0);
  });
}
