// Redis for the example's several instances: REDIS_URL if set, else a redis-server of its own on a free port (when one is installed).

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ExampleRedis {
  readonly url: string;
  /** Stops the redis-server started here (nothing for REDIS_URL). */
  stop(): void;
}

/** How to get Redis, in one line, when there is none. */
export const NO_REDIS =
  'Several instances share one Redis: set REDIS_URL (e.g. redis://127.0.0.1:6379), or install redis-server (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis).';

export async function exampleRedis(): Promise<ExampleRedis | undefined> {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL, stop() {} };
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'kana-meter-example-redis-'));
  const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const stop = () => {
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  const ready = await new Promise<boolean>((resolve) => {
    let output = '';
    server.once('error', () => resolve(false)); // not installed
    server.once('exit', () => resolve(false));
    server.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('Ready to accept connections')) resolve(true);
    });
  });
  if (!ready) {
    stop();
    return undefined;
  }
  server.stdout.resume();
  console.log(`Started redis-server at redis://127.0.0.1:${port} (REDIS_URL unset).`);
  return { url: `redis://127.0.0.1:${port}`, stop };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}
