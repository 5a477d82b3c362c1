// npm run example on a machine where port 3000 is taken (a frontend dev server, say): the next free port, said in one line; a busy PORT is one line and exit 1.

import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { runTypeScript } from '../helpers/child-process.js';

const execFileAsync = promisify(execFile);
const held: Server[] = [];
afterEach(async () => {
  await Promise.all(held.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/** Holds `port` on 127.0.0.1 as another program would (0: a free one); resolves with the port, busy either way. */
async function holdPort(port: number): Promise<number> {
  const server = createServer();
  held.push(server);
  return new Promise((resolve) => {
    // Already held by something else on this machine: just as busy.
    server.once('error', () => resolve(port));
    server.listen(port, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
}

const runExample = (env: Record<string, string | undefined> = {}) =>
  runTypeScript('example-app/server.ts', { env: { PORT: undefined, ...env } });

describe('npm run example, the first run', () => {
  it('takes the next free port when 3000 is in use, says so in one line, and runs the demo', async () => {
    await holdPort(3000);
    const example = runExample();
    const [, port] = await example.waitFor(/^Example API listening on http:\/\/127\.0\.0\.1:(\d+)$/m);
    expect(Number(port)).toBeGreaterThan(3000);
    expect(example.stdout()).toContain(`Port 3000 is in use: listening on ${port} instead (PORT chooses one).\n`);

    await example.waitFor(/^Press Ctrl-C to stop/m);
    expect(example.stdout()).toMatch(/^ {2}api-calls {2}5$/m);
    const searched = await fetch(`http://127.0.0.1:${port}/api/search`, {
      method: 'POST',
      headers: { authorization: 'Bearer demo-user' },
    });
    expect(searched.status).toBe(429); // the demo used up the allowance: the same server, still serving

    // The curl it prints works as printed: a user with searches left.
    const [, curl] = /^Try it: (curl .+)$/m.exec(example.stdout()) ?? [];
    expect(curl).toMatch(new RegExp(`^curl -X POST http://127\\.0\\.0\\.1:${port}/api/search `));
    const { stdout: tried } = await execFileAsync('sh', ['-c', `${curl} -s -w ' %{http_code}'`]);
    expect(tried).toMatch(/^\{.*\} 2\d\d$/);
    // And where to see it billed: the embedded emulator's dashboard, printed and serving.
    const [, dashboard] = /^Then see it billed: (http:\/\/\S+)$/m.exec(example.stdout()) ?? [];
    expect(example.stdout()).toContain(`Emulator dashboard (usage by user and feature): ${dashboard}\n`);
    const page = await fetch(dashboard as string);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toMatch(/kana/i);
    example.child.kill('SIGTERM');
    expect(await example.exited).toMatchObject({ code: 0, stderr: '' });
  });

  it('stops with one line and exit code 1 when the PORT asked for is in use', async () => {
    const port = await holdPort(0);
    const exited = await runExample({ PORT: String(port) }).exited;
    expect(exited.code).toBe(1);
    expect(exited.stderr).toBe(
      `Port ${port} (PORT) is in use: choose another, e.g. PORT=${port + 1} npm run example, or PORT=0 for any free one.\n`,
    );
    expect(exited.stdout).not.toContain('Example API listening');
  });

  it('stops with one line before starting anything when PORT is not a port number', async () => {
    const exited = await runExample({ PORT: '3000abc' }).exited;
    expect(exited).toMatchObject({
      code: 1,
      stdout: '',
      stderr: 'PORT must be a port number (0 for any free one), got "3000abc".\n',
    });
  });
});
