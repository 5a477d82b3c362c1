// Type-checked inside the temporary project (CommonJS resolution, index.d.cts): req.kana is typed on Express's Request.

import express, { type Request, type Response } from 'express';
import { type EntitlementDecision, kanaMeter, meter } from 'kana-meter';

const app = express();
app.use(kanaMeter({ apiKey: 'prv_test_x', userId: (req) => req.get('x-user'), enforce: true }));
app.get('/docs/:id', meter('docs', { enforce: true }), (req: Request, res: Response) => {
  const decision: EntitlementDecision | undefined = req.kana;
  const remaining: number | null | undefined = req.kana?.remaining;
  // @ts-expect-error: remaining is a number or null, so req.kana is typed (not any)
  const wrong: string | undefined = req.kana?.remaining;
  res.json({ allowed: decision?.allowed, remaining, wrong });
});
