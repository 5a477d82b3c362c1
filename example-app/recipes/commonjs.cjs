// A CommonJS app: require('kana-meter') gives the same API as import, with its own CommonJS build.
// Run: KANA_API_KEY=prv_... node commonjs.cjs (KANA_ENDPOINT=... to use `npx kana-emulator` instead of Kana).

const { createServer } = require('node:http');
const express = require('express');
const { kanaMeter, meter } = require('kana-meter');

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT, // unset: Kana itself
  userId: (_req, res) => res.locals.userId, // the user the authentication below found
  routes: { 'POST /api/search': 'api-calls' },
});

// A stand-in for your authentication: the API key a client sends says who it is (never a header it picks).
const apiKeys = new Map([['demo-key-u1', 'u1']]); // in your app: your users' keys, or your sessions
const app = express();
app.use((req, res, next) => {
  res.locals.userId = apiKeys.get(req.get('authorization')?.replace(/^Bearer /, '') ?? '');
  next();
});
app.use(kana);
app.post('/api/search', (_req, res) => res.json({ hits: [] }));
app.get('/api/reports/:id', meter('reports'), (req, res) => res.json({ id: req.params.id }));

const server = createServer(app);
// Listens once Kana has accepted the key; a wrong key stops here with KANA_UNAUTHENTICATED.
kana.ready().then(() => {
  server.listen(Number(process.env.PORT ?? 3000), () => {
    console.log(`listening on port ${server.address().port}`);
  });
});

process.once('SIGTERM', async () => {
  setTimeout(() => server.closeAllConnections(), 10_000).unref(); // requests in flight get 10 s
  await new Promise((done) => server.close(done)); // stops accepting; resolves once those requests have finished
  await kana.close(); // then delivers their usage
  process.exit(0);
});
