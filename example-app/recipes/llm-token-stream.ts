// Bill the tokens of a streamed LLM response: their number is known only when the stream ends, or when the client leaves.
// Run: KANA_API_KEY=prv_... node --import tsx llm-token-stream.ts (KANA_ENDPOINT=... for `npx kana-emulator`).

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { kanaMeter } from 'kana-meter';

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT,
  userId: (_req, res) => res.locals.userId, // the user authenticate() found
});

// A stand-in for your authentication: the API key a client sends says who it is (never a header it picks).
const apiKeys = new Map([['demo-key-u1', 'u1']]); // in your app: your users' keys, or your sessions
function authenticate(req: express.Request, res: express.Response, next: express.NextFunction): void {
  res.locals.userId = apiKeys.get(req.get('authorization')?.replace(/^Bearer /, '') ?? '');
  next();
}

const app = express();
app.use(express.json());
app.use(authenticate);
app.use(kana);

// kana.hold() keeps max_tokens aside before generating: streams running at once, on every instance
// sharing the store, can never take more than the allowance together. A user who may not use that many
// is refused before anything is generated. commit() bills the tokens the client was sent, when the
// stream ends or when the client abandons it (generation stops there); the rest of the hold comes back.
app.post('/v1/completions', async (req, res) => {
  const { prompt = '', max_tokens: maxTokens = 256 } = req.body ?? {};
  const userId = res.locals.userId as string | undefined;
  if (!userId) {
    res.status(401).json({ error: 'unauthenticated' });
    return;
  }
  const hold = await kana.hold(userId, 'llm-tokens', Number(maxTokens));
  if (!hold.allowed) {
    res.status(hold.decision.status ?? 429).json(hold.decision);
    return;
  }
  const clientLeft = new AbortController();
  res.on('close', () => clientLeft.abort());
  res.setHeader('content-type', 'text/event-stream');
  let tokensSent = 0;
  for await (const token of streamCompletion(String(prompt), Number(maxTokens), clientLeft.signal)) {
    if (clientLeft.signal.aborted) break; // not sent, not billed
    res.write(`data: ${JSON.stringify({ token })}\n\n`);
    tokensSent++;
  }
  // Finished or abandoned: the tokens sent were generated and delivered, and are billed (0 bills nothing).
  hold.commit(tokensSent);
  if (clientLeft.signal.aborted) return;
  res.end('data: [DONE]\n\n');
});

/** A stand-in for your model's streaming API: one token every 20 ms, until maxTokens or the signal. */
async function* streamCompletion(prompt: string, maxTokens: number, signal: AbortSignal): AsyncGenerator<string> {
  const words = `You asked: ${prompt}`.split(' ');
  for (let i = 0; i < maxTokens && !signal.aborted; i++) {
    await sleep(20);
    yield words[i % words.length] as string;
  }
}

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
