// The example API: a search endpoint billed and enforced through the route map, reports and exports billed with meter(), background exports with kana.record().

import express, { type Express as ExpressApp, type NextFunction, type Request, type Response } from 'express';
import { type KanaMeter, meter } from 'kana-meter';

declare global {
  namespace Express {
    interface Request {
      user?: { kanaId: string };
    }
  }
}

/** A stand-in for real authentication: `Authorization: Bearer <user id>`. */
function authenticate(req: Request, res: Response, next: NextFunction): void {
  const token = req.get('authorization')?.replace(/^Bearer /, '');
  if (!token) {
    res.status(401).json({ error: 'missing bearer token' });
    return;
  }
  req.user = { kanaId: token };
  next();
}

export function createApp(kana: KanaMeter): ExpressApp {
  const app = express();
  app.use(express.json());
  app.use(authenticate);
  app.use(kana);

  // Billed as 'api-calls' by the route map given to kanaMeter(), which also enforces it: a user
  // past their allowance gets a 429 before this runs. req.kana tells what is left.
  app.post('/api/search', (req, res) => {
    res.json({ query: req.body?.q ?? '', hits: ['kana', 'meter'], remaining: req.kana?.remaining ?? null });
  });

  // Billed as 'reports', one unit per report.
  app.get('/api/reports/:id', meter('reports'), (req, res) => {
    if (req.params.id === 'missing') {
      res.status(404).json({ error: 'no such report' }); // not billed: not a 2xx
      return;
    }
    res.json({ id: req.params.id, rows: 3 });
  });

  // Billed as 'exports', one unit per exported row: the delta is read once the response is done.
  app.post('/api/export', meter('exports', { delta: (_req, res) => res.locals.rows }), (req, res) => {
    const rows = Math.min(Number(req.body?.rows ?? 10), 1000);
    res.locals.rows = rows;
    res.json({ exported: rows });
  });

  // A background export: the 202 goes out before the work is done, so no response says how many
  // rows were exported. The job bills them with kana.record() when it finishes (same queue,
  // retries and shutdown as the middleware's usage).
  const jobs = new Map<string, { status: 'running' | 'done'; rows: number }>();
  app.post('/api/export-jobs', (req, res) => {
    const userId = req.user?.kanaId as string;
    const rows = Math.min(Number(req.body?.rows ?? 10), 100_000);
    const id = String(jobs.size + 1);
    jobs.set(id, { status: 'running', rows });
    setTimeout(() => {
      jobs.set(id, { status: 'done', rows });
      kana.record(userId, 'exports', rows);
    }, 50);
    res.status(202).json({ id, status: 'running' });
  });
  app.get('/api/export-jobs/:id', (req, res) => {
    const job = jobs.get(req.params.id);
    if (job === undefined) res.status(404).json({ error: 'no such job' });
    else res.json(job);
  });

  return app;
}
