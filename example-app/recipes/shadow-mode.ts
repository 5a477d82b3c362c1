// Turning enforcement on safely: run in shadow mode (every decision made, none enforced), watch what it would
// refuse, then switch it on. KANA_ENFORCE=true is the switch: requests over the plan then get 402 or 429.
// Run: KANA_API_KEY=prv_... node --import tsx shadow-mode.ts (KANA_ENDPOINT=... for `npx kana-emulator`).

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { kanaMeter } from 'kana-meter';

const enforce = process.env.KANA_ENFORCE === 'true' ? true : 'shadow';
const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT,
  userId: (_req, res) => res.locals.userId, // the user authenticate() found
  routes: { 'POST /api/search': 'api-calls' },
  enforce,
});

// A stand-in for your authentication: the API key a client sends says who it is (never a header it picks).
const apiKeys = new Map([['demo-key-u1', 'u1']]); // in your app: your users' keys, or your sessions
function authenticate(req: express.Request, res: express.Response, next: express.NextFunction): void {
  res.locals.userId = apiKeys.get(req.get('authorization')?.replace(/^Bearer /, '') ?? '');
  next();
}

const app = express();
app.use(authenticate);
app.use(kana);
app.post('/api/search', (req, res) => {
  // In shadow mode the handler also runs for a request enforcement would refuse; req.kana says so,
  // so the client can hear about its plan before refusals start.
  if (req.kana && !req.kana.allowed) res.set('Plan-Warning', `${req.kana.featureId}: ${req.kana.reason}`);
  res.json({ hits: [] });
});

// What enforcement refused, or would have (keep this internal). The same numbers are in the logs
// (KANA_METER_SHADOW_DENIED) and in Prometheus (kana_meter_enforcement_shadow_denied_total).
app.get('/internal/enforcement', (_req, res) => {
  const { allowed, denied, shadowDenied } = kana.stats();
  res.json({ enforce, allowed, denied, shadowDenied });
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
