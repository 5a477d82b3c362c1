// A TypeScript app: your user typed on req.user, options checked by the compiler, req.kana typed on enforced routes.
// Run: KANA_API_KEY=prv_... node --import tsx typescript.ts (KANA_ENDPOINT=... for `npx kana-emulator`).
// tsconfig: "strict": true and "module": "NodeNext" (or "Bundler"); CommonJS projects get the same types.
// Plain tsc with "module": "commonjs" needs `npm install --save-dev @types/express @types/node` and
// "esModuleInterop": true (for `import express from 'express'`); tsx runs it without either.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import { type KanaMeterOptions, kanaMeter, meter } from 'kana-meter';

// What your authentication puts on the request (passport and others declare it the same way).
declare global {
  namespace Express {
    interface Request {
      user?: { kanaId: string };
    }
  }
}

/** Your users' API keys (in your app: your database); a client picks its key, never its user. */
const apiKeys = new Map([['demo-key-u1', { kanaId: 'u1' }]]);

/** A stand-in for your authentication: `Authorization: Bearer <API key>`. */
function authenticate(req: Request, res: Response, next: NextFunction): void {
  const user = apiKeys.get(req.get('authorization')?.replace(/^Bearer /, '') ?? '');
  if (!user) {
    res.status(401).json({ error: 'missing or unknown API key' });
    return;
  }
  req.user = user;
  next();
}

const options = {
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT,
  userId: (req) => req.user?.kanaId, // req is Express's Request: a typo here is a compile error
  routes: { 'POST /api/search': { feature: 'api-calls', enforce: true } },
  // decision.status is 402 | 429 | 503, decision.resetAt a Date or null.
  onDenied: (_req, res, decision) => {
    res.status(decision.status).json({ error: decision.reason, resetsAt: decision.resetAt?.toISOString() ?? null });
  },
  // error.code is a KanaErrorCode: 'KANA_UNAUTHENTICATED', 'KANA_REJECTED', ...
  onDeliveryFailure: (usage, error) => console.error(`not billed: ${usage.delta} ${usage.featureId} (${error.code})`),
} satisfies KanaMeterOptions;
const kana = kanaMeter(options);

const app = express();
app.use(express.json());
app.use(authenticate);
app.use(kana);

// req.kana is the entitlement decision of an enforced request, typed as soon as you import kana-meter.
app.post('/api/search', (req, res) => {
  res.json({ hits: [], remaining: req.kana?.remaining ?? null });
});

// A delta computed from the finished response: one unit per exported row.
app.post('/api/export', meter('exports', { delta: (_req, res) => res.locals.rows }), (req, res) => {
  const rows: number = Math.min(Number(req.body?.rows ?? 10), 1000);
  res.locals.rows = rows;
  res.json({ exported: rows });
});

const server = createServer(app);
// Listens once Kana has accepted the key; a wrong key stops here with KANA_UNAUTHENTICATED.
kana.ready().then(() => {
  server.listen(Number(process.env.PORT ?? 3000), () => {
    console.log(`listening on port ${(server.address() as AddressInfo).port}`);
  });
});

process.once('SIGTERM', async () => {
  setTimeout(() => server.closeAllConnections(), 10_000).unref(); // requests in flight get 10 s
  await new Promise((done) => server.close(done)); // stops accepting; resolves once those requests have finished
  await kana.close(); // then delivers their usage
  process.exit(0);
});
