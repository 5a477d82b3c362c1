// Graceful shutdown in Kubernetes: on SIGTERM the readiness probe fails first, the requests in flight finish,
// then close() delivers the usage still waiting, all before terminationGracePeriodSeconds ends in SIGKILL.
//
//   spec:
//     terminationGracePeriodSeconds: 30                      # GRACE_PERIOD_SECONDS below
//     containers:
//       - readinessProbe: { httpGet: { path: /ready, port: 3000 }, periodSeconds: 2, failureThreshold: 1 }
//
// Run: KANA_API_KEY=prv_... node --import tsx kubernetes-shutdown.ts (KANA_ENDPOINT=... for `npx kana-emulator`).

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { kanaMeter } from 'kana-meter';

/** terminationGracePeriodSeconds: Kubernetes sends SIGKILL this long after SIGTERM. */
const GRACE_PERIOD_MS = Number(process.env.GRACE_PERIOD_SECONDS ?? 30) * 1000;
/** How long readiness fails before the server stops accepting: at least periodSeconds × failureThreshold. */
const DRAIN_MS = Number(process.env.DRAIN_SECONDS ?? 5) * 1000;
/** Kept for close() to deliver usage: requests still running this close to SIGKILL are cut off. */
const CLOSE_BUDGET_MS = 5000;

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT,
  userId: (_req, res) => res.locals.userId, // the user authenticate() found
  routes: { 'POST /api/search': 'api-calls' },
});

// A stand-in for your authentication: the API key a client sends says who it is (never a header it picks).
const apiKeys = new Map([['demo-key-u1', 'u1']]); // in your app: your users' keys, or your sessions
function authenticate(req: express.Request, res: express.Response, next: express.NextFunction): void {
  res.locals.userId = apiKeys.get(req.get('authorization')?.replace(/^Bearer /, '') ?? '');
  next();
}

let ready = true;
const app = express();
app.get('/ready', (_req, res) => {
  res.sendStatus(ready ? 200 : 503);
});
app.use(express.json());
app.use(authenticate);
app.use(kana);
app.post('/api/search', (req, res) => {
  res.json({ query: req.body?.q ?? '', hits: [] });
});

const server = createServer(app);
// Listens once Kana has accepted the key: a wrong key stops the pod here (KANA_UNAUTHENTICATED). Kana
// unreachable for 5 s is an outage, not a wrong key: the pod starts anyway and onKanaError decides.
const kanaReady = kana.ready({ timeoutMs: 5000 }).catch((error) => {
  if (!error.retryable) throw error;
  console.error(`kana-meter: Kana not reachable yet (${error.code}); starting anyway`);
});
kanaReady.then(() => {
  server.listen(Number(process.env.PORT ?? 3000), () => {
    console.log(`listening on port ${(server.address() as AddressInfo).port}`);
  });
});

process.once('SIGTERM', async () => {
  const deadline = Date.now() + GRACE_PERIOD_MS - 1000; // a second to spare before SIGKILL
  // 1. Fail readiness: Kubernetes takes the pod out of its Services; requests still arriving are served.
  ready = false;
  console.log(`SIGTERM: not ready, draining for ${DRAIN_MS} ms`);
  await sleep(DRAIN_MS);
  // 2. Stop accepting and let the requests in flight finish (their usage is captured as they do).
  const cutOff = setTimeout(() => server.closeAllConnections(), deadline - CLOSE_BUDGET_MS - Date.now());
  await new Promise((resolve) => server.close(resolve));
  clearTimeout(cutOff);
  // 3. Deliver the usage still waiting within what is left. What Kana has not taken by then is logged
  //    (KANA_METER_UNDELIVERED_AT_CLOSE), or kept for the next start with a `spool` on a persistent volume.
  await kana.close({ timeoutMs: Math.max(0, deadline - Date.now()) });
  process.exit(0);
});
