// A TypeScript consumer of the packed tarball, compiled by tsc (module commonjs as app.ts, NodeNext as app.mts) and run with node.
import type { AddressInfo } from 'node:net';
import express, { type Request, type Response } from 'express';
import { type KanaMeterStats, kanaMeter, meter } from 'kana-meter';

async function main(): Promise<{ served: number; stats: KanaMeterStats }> {
  const kana = kanaMeter({
    apiKey: process.env.KANA_API_KEY,
    endpoint: process.env.KANA_ENDPOINT,
    userId: () => process.env.KANA_USER,
    routes: { 'GET /api/search': 'api-calls' },
    retry: { minTimeout: 10, maxTimeout: 50 },
  });
  const v1 = express();
  v1.use(kana);
  v1.get('/reports/:id', meter('reports'), (req: Request, res: Response) => {
    res.json({ id: req.params.id });
  });
  const app = express();
  app.use(kana);
  app.get('/api/search', (_req: Request, res: Response) => {
    res.json({ hits: [] });
  });
  app.use('/v1', v1);
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let served = 0;
  for (const path of ['/api/search', '/api/search', '/api/search', '/v1/reports/1', '/v1/reports/2']) {
    const response = await fetch(base + path);
    await response.arrayBuffer();
    if (response.ok) served++;
  }
  await kana.close();
  server.close();
  return { served, stats: kana.stats() };
}

main().then((result) => console.log(JSON.stringify(result)));
