// Bill the tokens of a streamed LLM response: their number is known only when the stream ends.
// Run: KANA_API_KEY=prv_... npx tsx llm-token-stream.ts (KANA_ENDPOINT=... for `npx kana-emulator`).

import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import express from 'express';
import { kanaMeter } from 'kana-meter';

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT,
  userId: (req) => req.get('x-user-id'), // in your app, the user your authentication found
});

const app = express();
app.use(express.json());
app.use(kana);

// kana.hold() keeps max_tokens aside before generating: streams running at once, on every instance
// sharing the store, can never take more than the allowance together. A user who may not use that many
// is refused before anything is generated. commit() bills the tokens streamed; the rest comes back.
// A stream the client abandons never finishes: generation stops, and release() bills nothing.
app.post('/v1/completions', async (req, res) => {
  const { prompt = '', max_tokens: maxTokens = 256 } = req.body ?? {};
  const userId = req.get('x-user-id');
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
  let tokens = 0;
  for await (const token of streamCompletion(String(prompt), Number(maxTokens), clientLeft.signal)) {
    res.write(`data: ${JSON.stringify({ token })}\n\n`);
    tokens++;
  }
  if (clientLeft.signal.aborted) {
    hold.release();
    return;
  }
  hold.commit(tokens);
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

const server = app.listen(Number(process.env.PORT ?? 3000), (error) => {
  if (error) throw error;
  console.log(`listening on port ${(server.address() as AddressInfo).port}`);
});

process.once('SIGTERM', async () => {
  server.close();
  await kana.close(); // delivers the usage still waiting
  process.exit(0);
});
