// example-app/recipes/shadow-mode.ts in its own process: shadow mode serves and bills everything while counting what it would refuse; KANA_ENFORCE=true refuses it.

import { beforeEach, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { call, seedPlan, startRecipe } from './run-recipe.js';

const env = useEmulator();

beforeEach(() => seedPlan(env.emulator, { 'api-calls': 2 }));

/** Three searches against an allowance of two: the statuses and Plan-Warning headers, then the internal stats. */
async function searchThreeTimes(recipeEnv: Record<string, string> = {}) {
  const recipe = await startRecipe('shadow-mode.ts', env.emulator, { env: recipeEnv });
  const responses = [];
  for (const q of ['a', 'b', 'c']) {
    const response = await call(`${recipe.url}/api/search`, 'u1', { q });
    responses.push([response.status, response.headers.get('plan-warning')]);
  }
  const stats = await (await fetch(`${recipe.url}/internal/enforcement`)).json();
  return { responses, stats, exited: await recipe.stop() };
}

it('in shadow mode, serves and bills every search, warns the client past its plan, and counts it in shadowDenied', async () => {
  const { responses, stats, exited } = await searchThreeTimes();
  expect(responses).toEqual([
    [200, null],
    [200, null],
    [200, 'api-calls: limit-reached'],
  ]);
  expect(stats).toEqual({ enforce: 'shadow', allowed: 2, denied: 0, shadowDenied: 1 });
  expect(exited.code).toBe(0);
  expect(env.emulator.usage('u1', 'api-calls')).toBe(3);
});

it('with KANA_ENFORCE=true, refuses the search past the plan and bills only what it served', async () => {
  const { responses, stats, exited } = await searchThreeTimes({ KANA_ENFORCE: 'true' });
  expect(responses).toEqual([
    [200, null],
    [200, null],
    [429, null],
  ]);
  expect(stats).toEqual({ enforce: true, allowed: 2, denied: 1, shadowDenied: 0 });
  expect(exited.code).toBe(0);
  expect(env.emulator.usage('u1', 'api-calls')).toBe(2);
});
