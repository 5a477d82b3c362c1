// example-app/recipes/queue-worker.ts in its own process: jobs held with kana.hold(), committed once done, delivered by close() when the input ends or on SIGTERM.

import { beforeEach, expect, it } from 'vitest';
import { runTypeScript } from '../helpers/child-process.js';
import { useEmulator } from '../helpers/emulator.js';
import { seedPlan } from './run-recipe.js';

const env = useEmulator();

beforeEach(() => seedPlan(env.emulator, { exports: 1000 }, ['u2']));

const startWorker = () =>
  runTypeScript('example-app/recipes/queue-worker.ts', {
    env: { KANA_API_KEY: env.emulator.apiKey, KANA_ENDPOINT: env.emulator.url },
  });
const job = (id: string, userId: string, rows: number) => `${JSON.stringify({ id, userId, rows })}\n`;

it("holds each job's units, commits them once done, refuses those the plan does not allow, and delivers at the end of input", async () => {
  const worker = startWorker();
  worker.child.stdin?.write(job('1', 'u1', 250) + job('2', 'u1', 100) + job('3', 'u2', 10));
  // 350 of 1000 committed, not yet in Kana: hold() counts them, so 900 more is refused.
  worker.child.stdin?.end(job('4', 'u1', 900) + job('5', 'u1', 650));

  const exited = await worker.exited;
  expect(exited).toMatchObject({ code: 0, stderr: '' });
  expect(exited.stdout.split('\n').filter((line) => line.startsWith('job '))).toEqual([
    'job 1: 250 rows exported',
    'job 2: 100 rows exported',
    'job 3: refused (not-in-plan)',
    'job 4: refused (limit-reached)',
    'job 5: 650 rows exported',
  ]);
  expect(env.emulator.usage('u1', 'exports')).toBe(1000);
});

it('on SIGTERM, stops reading jobs (its input still open) and delivers before exiting', async () => {
  const worker = startWorker();
  worker.child.stdin?.write(job('1', 'u1', 40));
  await worker.waitFor(/^job 1: 40 rows exported$/m);
  worker.child.kill('SIGTERM');
  const exited = await worker.exited;
  expect(exited).toMatchObject({ code: 0, signal: null, stderr: '' });
  expect(env.emulator.usage('u1', 'exports')).toBe(40);
});
