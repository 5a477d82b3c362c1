// app.ts: searches billed to Kana and refused once the user's plan is used up; reports billed.
// Run: KANA_API_KEY=prv_... node --import tsx app.ts (KANA_ENDPOINT=... for `npx kana-emulator`).

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { kanaMeter, meter } from 'kana-meter';

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY, // your Kana private key
  endpoint: process.env.KANA_ENDPOINT, // unset: Kana itself
  userId: (_req, res) => res.locals.userId, // who is billed: the user your authentication found
  routes: { 'POST /api/search': { feature: 'api-calls', enforce: true } }, // billed, and checked first
});

// A stand-in for your authentication: the API key a client sends says who it is, not a header it sets.
const apiKeys = new Map([['demo-key-u1', 'u1']]); // in your app: your users' keys, or your sessions
const app = express();
app.use((req, res, next) => {
  res.locals.userId = apiKeys.get(req.get('authorization')?.replace(/^Bearer /, '') ?? '');
  next();
});
app.use(kana);
app.post('/api/search', (req, res) => {
  res.json({ hits: [], remaining: req.kana?.remaining }); // what the plan has left
});
app.get('/api/reports/:id', meter('reports'), (req, res) => {
  res.json({ id: req.params.id }); // billed as 'reports' (not enforced)
});

const server = createServer(app);
// Listens once Kana has accepted the key; a wrong key stops here with KANA_UNAUTHENTICATED.
kana.ready().then(() => {
  server.listen(Number(process.env.PORT ?? 3000), () => {
    console.log(`listening on port ${(server.address() as AddressInfo).port}`);
  });
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, async () => {
    setTimeout(() => server.closeAllConnections(), 10_000).unref(); // requests in flight get 10 s
    await new Promise((done) => server.close(done)); // stops accepting; resolves once those requests have finished
    await kana.close(); // then delivers their usage
    process.exit(0);
  });
}
