// The README's quick start, as a newcomer runs it: its app.ts (example-app/recipes/quickstart.ts, verbatim) in its own
// process against an emulator seeded with its seed.json; searches pass until the plan is used up, then 429; reports billed.

import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, expect, it, vi } from 'vitest';
import type { EmulatorSeed } from '../../src/emulator/index.js';
import { markdownCodeBlocks } from '../docs/markdown-blocks.js';
import { runTypeScript } from '../helpers/child-process.js';
import { useEmulator } from '../helpers/emulator.js';
import { call, seedPlan, startRecipe } from './run-recipe.js';

const env = useEmulator();
let quickStart: { app: string; seed: string };

beforeAll(async () => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(
    readme.indexOf('\n## Quick start\n'),
    readme.indexOf('\n## ', readme.indexOf('\n## Quick start\n') + 1),
  );
  const blocks = markdownCodeBlocks(section).blocks;
  quickStart = {
    app: blocks.find((block) => block.language === 'ts')?.code ?? '',
    seed: blocks.find((block) => block.language === 'json')?.code ?? '',
  };
});

it("holds example-app/recipes/quickstart.ts verbatim as the README's app.ts", async () => {
  const recipe = await readFile(new URL('../../example-app/recipes/quickstart.ts', import.meta.url), 'utf8');
  expect(`${quickStart.app}\n`).toBe(recipe);
});

it("with the README's seed.json: three searches pass, the fourth is refused with 429 before its handler; searches and reports are billed", async () => {
  env.emulator.reset();
  env.emulator.seed(JSON.parse(quickStart.seed) as EmulatorSeed);
  const recipe = await startRecipe('quickstart.ts', env.emulator);

  const searches = [];
  for (let i = 0; i < 4; i++) {
    const response = await call(`${recipe.url}/api/search`, 'u1', {});
    searches.push([response.status, await response.text()]);
  }
  // The README shows the first answer as curl prints it.
  expect(searches.slice(0, 3)).toEqual([
    [200, '{"hits":[],"remaining":2}'],
    [200, '{"hits":[],"remaining":1}'],
    [200, '{"hits":[],"remaining":0}'],
  ]);
  expect(searches[3]?.[0]).toBe(429);
  expect(JSON.parse(searches[3]?.[1] as string)).toMatchObject({
    status: 429,
    featureId: 'api-calls',
    used: 3,
    budget: 3,
  });
  expect((await call(`${recipe.url}/api/reports/1`, 'u1')).status).toBe(200);

  expect(await recipe.stop()).toMatchObject({ code: 0, stderr: '' });
  expect(env.emulator.usage('u1', 'api-calls')).toBe(3);
  expect(env.emulator.usage('u1', 'reports')).toBe(1);
});

it('on SIGTERM with 20 searches in flight: each is answered 2xx and billed before the process exits', async () => {
  seedPlan(env.emulator, { 'api-calls': null, reports: null });
  // Kana takes 1.5 s to answer the entitlement check: the 20 searches wait in the gate when SIGTERM comes.
  env.emulator.failNext({ delayMs: 1500 }, { operation: 'canUseFeature', times: Number.POSITIVE_INFINITY });
  const recipe = await startRecipe('quickstart.ts', env.emulator);

  const searches = Array.from({ length: 20 }, () =>
    call(`${recipe.url}/api/search`, 'u1', {}).then(
      (response) => response.status,
      (error: Error) => error.message,
    ),
  );
  await vi.waitFor(() =>
    expect(env.emulator.requests().some((r) => r.fieldNames.includes('canUseFeature'))).toBe(true),
  );
  await sleep(500); // the other 19 reach the server too
  recipe.child.kill('SIGTERM');

  const answers = await Promise.all(searches);
  const { code, stderr } = await recipe.exited;
  expect({ answers, billed: env.emulator.usage('u1', 'api-calls'), code, stderr }).toEqual({
    answers: Array(20).fill(200),
    billed: 20,
    code: 0,
    stderr: '',
  });
});

it('gets the user from authentication: without a known API key a search is refused with 401, whatever header names a user', async () => {
  env.emulator.reset();
  env.emulator.seed(JSON.parse(quickStart.seed) as EmulatorSeed);
  const recipe = await startRecipe('quickstart.ts', env.emulator);
  const attempts: Record<string, string>[] = [{}, { 'x-user-id': 'u1' }, { authorization: 'Bearer u1' }];
  for (const headers of attempts) {
    const response = await fetch(`${recipe.url}/api/search`, { method: 'POST', headers });
    expect(response.status).toBe(401);
    expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  }
  expect(await recipe.stop()).toMatchObject({ code: 0, stderr: '' });
  expect(env.emulator.usage('u1', 'api-calls')).toBe(0);
});

it('with a wrong KANA_API_KEY, stops before listening with an error that names the refused key', async () => {
  const app = runTypeScript('example-app/recipes/quickstart.ts', {
    env: { KANA_API_KEY: 'prv_test_NotTheEmulatorsKey', KANA_ENDPOINT: env.emulator.url, PORT: '0' },
  });
  const exited = await app.exited;
  expect(exited.code).not.toBe(0);
  expect(exited.stderr).toMatch(/KANA_UNAUTHENTICATED|Kana refused the API key/);
  expect(exited.stderr).not.toContain('NotTheEmulatorsKey');
  expect(app.stdout()).not.toMatch(/listening on port/);
});
