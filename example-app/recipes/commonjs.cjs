// A CommonJS app: require('kana-meter') gives the same API as import, with its own CommonJS build.
// Run: KANA_API_KEY=prv_... node commonjs.cjs (KANA_ENDPOINT=... to use `npx kana-emulator` instead of Kana).

const express = require('express');
const { kanaMeter, meter } = require('kana-meter');

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT, // unset: Kana itself
  userId: (req) => req.get('x-user-id'), // in your app, the user your authentication found: (req) => req.user?.id
  routes: { 'POST /api/search': 'api-calls' },
});

const app = express();
app.use(kana);
app.post('/api/search', (_req, res) => res.json({ hits: [] }));
app.get('/api/reports/:id', meter('reports'), (req, res) => res.json({ id: req.params.id }));

const server = app.listen(Number(process.env.PORT ?? 3000), (error) => {
  if (error) throw error;
  console.log(`listening on port ${server.address().port}`);
});

process.once('SIGTERM', async () => {
  setTimeout(() => server.closeAllConnections(), 10_000).unref(); // requests in flight get 10 s
  await new Promise((done) => server.close(done)); // stops accepting; resolves once those requests have finished
  await kana.close(); // then delivers their usage
  process.exit(0);
});
