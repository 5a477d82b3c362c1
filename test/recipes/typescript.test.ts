// example-app/recipes/typescript.ts in its own process: authentication on req.user, enforcement with its typed onDenied, a computed delta.

import { readFile } from 'node:fs/promises';
import ts from 'typescript';
import { beforeEach, expect, it } from 'vitest';
import { readCompilerOptions } from '../../scripts/compiler-options.js';
import { root } from '../helpers/child-process.js';
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

it('compiles with plain tsc and "module": "commonjs" given what its header names: @types/express, @types/node, esModuleInterop', async () => {
  const header = (await readFile(`${root}/example-app/recipes/typescript.ts`, 'utf8')).split('\n\n')[0];
  for (const needed of ['"module": "commonjs"', '@types/express', '@types/node', '"esModuleInterop": true']) {
    expect(header).toContain(needed);
  }
  // A CommonJS project's tsconfig, with and without esModuleInterop (kana-meter from src/, as tsconfig.json maps it).
  const diagnostics = (esModuleInterop: boolean) => {
    const options: ts.CompilerOptions = {
      ...readCompilerOptions(root),
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      verbatimModuleSyntax: false,
      esModuleInterop,
      allowSyntheticDefaultImports: esModuleInterop,
      noEmit: true,
    };
    const program = ts.createProgram({ rootNames: [`${root}/example-app/recipes/typescript.ts`], options });
    return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  };
  expect(diagnostics(true)).toEqual([]);
  expect(diagnostics(false)).toContainEqual(
    expect.stringContaining("can only be default-imported using the 'esModuleInterop' flag"),
  );
}, 180_000);
