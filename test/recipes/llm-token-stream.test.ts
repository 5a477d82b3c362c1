// example-app/recipes/llm-token-stream.ts in its own process: max_tokens held with kana.hold(), the tokens streamed committed, an abandoned stream released, a completion that may go past the allowance refused before generating.

import { beforeEach, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { call, seedPlan, startRecipe } from './run-recipe.js';

const env = useEmulator();

beforeEach(() => seedPlan(env.emulator, { 'llm-tokens': 20 }));

/** The tokens of a server-sent event stream, read to its end. */
async function tokensOf(response: Response): Promise<string[]> {
  const events = (await response.text()).split('\n\n').filter((event) => event.startsWith('data: {'));
  return events.map((event) => (JSON.parse(event.slice('data: '.length)) as { token: string }).token);
}

it('holds max_tokens before generating, bills the tokens streamed, not an abandoned stream, and refuses a completion that may go past the allowance', async () => {
  const recipe = await startRecipe('llm-token-stream.ts', env.emulator);
  const complete = (body: unknown, signal?: AbortSignal) =>
    fetch(`${recipe.url}/v1/completions`, {
      method: 'POST',
      headers: { 'x-user-id': 'u1', 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal,
    });

  // A completion (8 tokens held) the client abandons after its first token: the stream never finishes.
  const leaving = new AbortController();
  const abandoned = await complete({ prompt: 'tell me everything', max_tokens: 8 }, leaving.signal);
  await abandoned.body?.getReader().read();
  leaving.abort();

  const first = await complete({ prompt: 'hello there', max_tokens: 7 });
  expect(first.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(await tokensOf(first)).toEqual(['You', 'asked:', 'hello', 'there', 'You', 'asked:', 'hello']);
  expect(await tokensOf(await complete({ prompt: 'again', max_tokens: 5 }))).toHaveLength(5);
  // 12 of 20 used: 10 more tokens could go past the allowance, refused before generating.
  const refused = await call(`${recipe.url}/v1/completions`, 'u1', { prompt: 'more', max_tokens: 10 });
  expect(refused.status).toBe(429);
  expect(await refused.json()).toMatchObject({ featureId: 'llm-tokens', used: 12, budget: 20 });
  expect(await tokensOf(await complete({ prompt: 'last', max_tokens: 8 }))).toHaveLength(8);

  expect(await recipe.stop()).toMatchObject({ code: 0, stderr: '' });
  expect(env.emulator.usage('u1', 'llm-tokens')).toBe(20);
});
