// example-app/recipes/llm-token-stream.ts in its own process: max_tokens held with kana.hold(), the tokens streamed committed, an abandoned stream billed for the tokens sent before the client left, a completion that may go past the allowance refused before generating.

import { request } from 'node:http';
import { beforeEach, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { authAs, call, seedPlan, startRecipe } from './run-recipe.js';

const env = useEmulator();

beforeEach(() => seedPlan(env.emulator, { 'llm-tokens': 60 }));

/** The tokens of a server-sent event stream, read to its end. */
async function tokensOf(response: Response): Promise<string[]> {
  const events = (await response.text()).split('\n\n').filter((event) => event.startsWith('data: {'));
  return events.map((event) => (JSON.parse(event.slice('data: '.length)) as { token: string }).token);
}

/** Asks for a completion of `maxTokens` and destroys the connection once `after` tokens have arrived; resolves with the tokens received. */
function abandonCompletion(url: string, maxTokens: number, after: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/v1/completions`, {
      method: 'POST',
      headers: { ...authAs('u1'), 'content-type': 'application/json' },
    });
    req.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'ECONNRESET') reject(error);
    });
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
        const received = text.split('data: {').length - 1;
        if (received >= after) {
          req.destroy();
          resolve(received);
        }
      });
    });
    req.end(JSON.stringify({ prompt: 'tell me everything', max_tokens: maxTokens }));
  });
}

it('holds max_tokens before generating, bills the tokens streamed, an abandoned stream for the tokens sent, and refuses a completion that may go past the allowance', async () => {
  const recipe = await startRecipe('llm-token-stream.ts', env.emulator);
  const complete = (body: unknown) =>
    fetch(`${recipe.url}/v1/completions`, {
      method: 'POST',
      headers: { ...authAs('u1'), 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  // A completion of 50 tokens the client abandons near its end, after 45: the stream never finishes.
  expect(await abandonCompletion(recipe.url, 50, 45)).toBe(45);

  const first = await complete({ prompt: 'hello there', max_tokens: 7 });
  expect(first.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(await tokensOf(first)).toEqual(['You', 'asked:', 'hello', 'there', 'You', 'asked:', 'hello']);
  // 45 + 7 of 60 used: a hold of 5 fits.
  expect(await tokensOf(await complete({ prompt: 'again', max_tokens: 5 }))).toHaveLength(5);
  // 57 of 60 used: 10 more tokens could go past the allowance, refused before generating.
  const refused = await call(`${recipe.url}/v1/completions`, 'u1', { prompt: 'more', max_tokens: 10 });
  expect(refused.status).toBe(429);
  const { used } = (await refused.json()) as { used: number };

  expect(await recipe.stop()).toMatchObject({ code: 0, stderr: '' });
  const billed = env.emulator.usage('u1', 'llm-tokens');
  expect(used).toBe(billed);
  // The abandoned stream: the 45 tokens the client got, or 46 if the next was written before the server saw it leave.
  expect(billed - 12).toBeGreaterThanOrEqual(45);
  expect(billed - 12).toBeLessThanOrEqual(46);
});
