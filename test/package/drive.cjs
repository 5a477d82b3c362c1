// Shared by the packed-tarball consumers (whatever loads kana-meter): an Express app metered the way apps are, driven by real requests.
// kanaMeter on the app and again on a sub-app; a route map entry (3 requests) and meter() in the sub-app (2 requests).

/** Returns the 2xx responses served and kana.stats() once close() has delivered everything. */
module.exports = async function drive({ express, kanaMeter, meter, endpoint, apiKey, user, metrics }) {
  const kana = kanaMeter({
    apiKey,
    endpoint,
    userId: () => user,
    routes: { 'GET /api/search': 'api-calls' },
    retry: { minTimeout: 10, maxTimeout: 50 },
    metrics,
  });
  const v1 = express();
  v1.use(kana);
  v1.get('/reports/:id', meter('reports'), (req, res) => res.json({ id: req.params.id }));
  const app = express();
  app.use(kana);
  app.get('/api/search', (_req, res) => res.json({ hits: [] }));
  app.use('/v1', v1);
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  let served = 0;
  for (const path of ['/api/search', '/api/search', '/api/search', '/v1/reports/1', '/v1/reports/2']) {
    const response = await fetch(base + path);
    await response.arrayBuffer();
    if (response.ok) served++;
  }
  await kana.close();
  server.close();
  return { served, stats: kana.stats() };
};
