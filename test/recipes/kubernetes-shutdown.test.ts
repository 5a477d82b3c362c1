// example-app/recipes/kubernetes-shutdown.ts sent SIGTERM as Kubernetes does: readiness fails first, requests in flight and during the drain are served and billed, and it exits within the grace period, Kana answering or not.

import { request } from 'node:http';
import { beforeEach, expect, it } from 'vitest';
import { useEmulator } from '../helpers/emulator.js';
import { authAs, call, seedPlan, startRecipe } from './run-recipe.js';

const env = useEmulator();

beforeEach(() => seedPlan(env.emulator, { 'api-calls': null }));

/** A search whose body is still uploading: it is in flight until `finish()` sends the rest. */
function slowUpload(url: string) {
  const body = JSON.stringify({ q: 'slow upload' });
  const req = request(`${url}/api/search`, {
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': body.length, ...authAs('u1') },
  });
  const status = new Promise<number>((resolve, reject) => {
    req.once('response', (response) => {
      response.resume();
      resolve(response.statusCode as number);
    });
    req.once('error', reject);
  });
  req.write(body.slice(0, 5));
  return {
    status,
    finish: () => req.end(body.slice(5)),
  };
}

it('fails readiness, serves what is in flight and what arrives while draining, delivers it all, and exits in time', async () => {
  const gracePeriodMs = 10_000;
  const recipe = await startRecipe('kubernetes-shutdown.ts', env.emulator, {
    // The drain must outlast the two requests the test sends once it sees readiness fail.
    env: { GRACE_PERIOD_SECONDS: String(gracePeriodMs / 1000), DRAIN_SECONDS: '2' },
  });
  expect((await fetch(`${recipe.url}/ready`)).status).toBe(200);
  for (const q of ['a', 'b', 'c']) expect((await call(`${recipe.url}/api/search`, 'u1', { q })).status).toBe(200);
  const inFlight = slowUpload(recipe.url);

  const sent = Date.now();
  recipe.child.kill('SIGTERM');
  await recipe.waitFor(/^SIGTERM: not ready/m);
  expect((await fetch(`${recipe.url}/ready`)).status).toBe(503);
  expect((await call(`${recipe.url}/api/search`, 'u1', { q: 'while draining' })).status).toBe(200);
  inFlight.finish();
  expect(await inFlight.status).toBe(200);

  const exited = await recipe.exited;
  expect(exited).toMatchObject({ code: 0, signal: null, stderr: '' });
  expect(Date.now() - sent).toBeLessThan(gracePeriodMs);
  expect(env.emulator.usage('u1', 'api-calls')).toBe(5);
});

it('exits before the grace period ends when Kana hangs, and logs the usage it could not deliver', async () => {
  env.emulator.failNext({ hang: true }, { times: Infinity });
  const gracePeriodMs = 5000;
  const recipe = await startRecipe('kubernetes-shutdown.ts', env.emulator, {
    env: { GRACE_PERIOD_SECONDS: String(gracePeriodMs / 1000), DRAIN_SECONDS: '0.2' },
  });
  for (const q of ['a', 'b']) expect((await call(`${recipe.url}/api/search`, 'u1', { q })).status).toBe(200);

  const sent = Date.now();
  const exited = await recipe.stop();
  const took = Date.now() - sent;
  expect(exited).toMatchObject({ code: 0, signal: null });
  expect(took).toBeLessThan(gracePeriodMs);
  const undelivered = exited.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { code: string; undelivered?: unknown[] })
    .find((line) => line.code === 'KANA_METER_UNDELIVERED_AT_CLOSE');
  expect(undelivered?.undelivered).toEqual([
    expect.objectContaining({ userId: 'u1', featureId: 'api-calls', delta: 2 }),
  ]);
  expect(env.emulator.usage('u1', 'api-calls')).toBe(0);
});
