// example-app/recipes/typescript.ts in its own process: authentication on req.user, enforcement with its typed onDenied, a computed delta.

import { beforeEach, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { authAs, seedPlan, startRecipe } from './run-recipe.js';

const env = useEmulator();

beforeEach(() => seedPlan(env.emulator, { 'api-calls': 2, exports: null }));

it('bills the user authentication found, refuses past the plan with its onDenied body, and bills exported rows', async () => {
  const recipe = await startRecipe('typescript.ts', env.emulator);
  const post = (path: string, body: unknown, token?: string) =>
    fetch(recipe.url + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? authAs(token) : {}) },
      body: JSON.stringify(body),
    });

  expect((await post('/api/search', { q: 'a' })).status).toBe(401); // no user: refused by authentication
  expect(await (await post('/api/search', { q: 'a' }, 'u1')).json()).toEqual({ hits: [], remaining: 1 });
  expect(await (await post('/api/search', { q: 'b' }, 'u1')).json()).toEqual({ hits: [], remaining: 0 });
  const refused = await post('/api/search', { q: 'c' }, 'u1');
  expect(refused.status).toBe(429);
  const body = (await refused.json()) as { error: string; resetsAt: string };
  expect(body.error).toBe('limit-reached');
  expect(Date.parse(body.resetsAt)).toBeGreaterThan(Date.now());
  expect(await (await post('/api/export', { rows: 250 }, 'u1')).json()).toEqual({ exported: 250 });

  expect(await recipe.stop()).toMatchObject({ code: 0, stderr: '' });
  expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
  expect(env.emulator.usage('u1', 'exports')).toBe(250);
});
