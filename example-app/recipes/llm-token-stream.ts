// Bill the tokens of a streamed LLM response: their number is known only when the stream ends, or when the client leaves.
// Run: KANA_API_KEY=prv_... node --import tsx llm-token-stream.ts (KANA_ENDPOINT=... for `npx kana-emulator`).

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { kanaMeter, meter } from 'kana-meter';

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

// meter() reads the delta once the response has finished: the tokens streamed. enforce refuses a user
// whose allowance is used up before generating anything (checked as 1 token: a stream may end past it).
// billAborted: a stream the client abandons is billed too, for the tokens sent before it left (generation stops).
const billTokens = meter('llm-tokens', {
  delta: (_req, res) => res.locals.tokensSent,
  billAborted: true,
  enforce: true,
});

app.post('/v1/completions', billTokens, async (req, res) => {
  const { prompt = '', max_tokens: maxTokens = 256 } = req.body ?? {};
  const clientLeft = new AbortController();
  res.on('close', () => clientLeft.abort());
  res.setHeader('content-type', 'text/event-stream');
  res.locals.tokensSent = 0; // read on finish, or when the client leaves
  for await (const token of streamCompletion(String(prompt), Number(maxTokens), clientLeft.signal)) {
    if (clientLeft.signal.aborted) break; // not sent, not billed
    res.write(`data: ${JSON.stringify({ token })}\n\n`);
    res.locals.tokensSent++;
  }
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
