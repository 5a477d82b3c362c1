// example-app/recipes/commonjs.cjs, requiring the package's CommonJS build, in its own process against the emulator.

import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'tsup';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { root } from '../helpers/child-process.js';
import { useEmulator } from '../helpers/emulator.js';
import { call, seedPlan, startRecipe } from './run-recipe.js';

const env = useEmulator();
/** A project holding the recipe and, in its node_modules, kana-meter as built by tsup.config.ts. */
let project: string;

beforeAll(async () => {
  // Its own build, not dist/: test/package.test.ts rebuilds dist/ (npm pack) while the tests run.
  // Under the repository's node_modules, so the package finds express, graphql... as installed.
  await mkdir(join(root, 'node_modules/.cache'), { recursive: true });
  project = await mkdtemp(join(root, 'node_modules/.cache/kana-meter-recipe-'));
  const installed = join(project, 'node_modules/kana-meter');
  await build({ outDir: join(installed, 'dist'), dts: false, sourcemap: false, silent: true, onSuccess: undefined });
  await copyFile(join(root, 'package.json'), join(installed, 'package.json'));
  // Without the ESM build, only CommonJS can answer require('kana-meter').
  await rm(join(installed, 'dist/index.js'));
  await copyFile(join(root, 'example-app/recipes/commonjs.cjs'), join(project, 'commonjs.cjs'));
}, 60_000);
afterAll(() => rm(project, { recursive: true, force: true }));

beforeEach(() => seedPlan(env.emulator, { 'api-calls': null, reports: null }));

it('bills the route map and meter() through require("kana-meter"), and delivers what is waiting on SIGTERM', async () => {
  const recipe = await startRecipe('commonjs.cjs', env.emulator, { path: 'commonjs.cjs', cwd: project });
  expect((await call(`${recipe.url}/api/search`, 'u1', { q: 'billing' })).status).toBe(200);
  expect(await (await call(`${recipe.url}/api/reports/q3`, 'u1')).json()).toEqual({ id: 'q3' });
  expect((await call(`${recipe.url}/api/reports/q4`, 'u1')).status).toBe(200);
  expect((await call(`${recipe.url}/api/missing`, 'u1')).status).toBe(404);

  expect(await recipe.stop()).toMatchObject({ code: 0, stderr: '' });
  expect(env.emulator.usage('u1', 'api-calls')).toBe(1);
  expect(env.emulator.usage('u1', 'reports')).toBe(2);
});
