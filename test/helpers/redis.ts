// A real Redis for tests and the bench: Debian's redis-server on a free port with a fresh data dir, or REDIS_URL.

import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Redis } from 'ioredis';
import { createClient } from 'redis';

/** How to get redis-server on Debian (and this project's machines). */
export const REDIS_INSTALL = 'apt-get install -y redis-server';

/** Under CI (or with KANA_METER_REQUIRE_REDIS=1, which .ci/run exports) the Redis tests never skip: they fail. */
export const redisRequired = process.env.CI === 'true' || process.env.KANA_METER_REQUIRE_REDIS === '1';

const externalUrl = process.env.REDIS_URL || undefined;
/** REDIS_URL is set: tests use that server, and skip what needs to kill, pause or restart it. */
export const redisIsExternal = externalUrl !== undefined;

function findOnPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

const redisServerBinary = findOnPath('redis-server');

/** Why the Redis tests skip on this machine, or undefined when they run (always undefined under CI). */
export const redisSkipReason: string | undefined =
  redisServerBinary || externalUrl || redisRequired
    ? undefined
    : `Redis tests skipped: no redis-server on PATH and no REDIS_URL (install it: ${REDIS_INSTALL})`;

/** vitest globalSetup: the one line that says the Redis tests are skipped, and how to run them. */
export default function printRedisSkipLine(): void {
  if (redisSkipReason) console.warn(redisSkipReason);
}

export interface RedisServerOptions {
  /** Keep data across kill()/restart() (append-only file, fsync on every write). Default: no persistence. */
  persistence?: boolean;
  /** More redis-server arguments, e.g. `['--maxmemory-policy', 'allkeys-lru']` (not with REDIS_URL). */
  args?: readonly string[];
}

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** False with REDIS_URL: that server is not ours to kill, pause or restart. */
  readonly ownProcess: boolean;
  /** The redis-server process id while it runs (undefined with REDIS_URL). */
  readonly pid: number | undefined;
  /** Sends one command on a fresh connection (so it works right after a restart). */
  command(...args: string[]): Promise<unknown>;
  /** Empties the database (FLUSHDB) and the script cache (SCRIPT FLUSH). */
  flush(): Promise<void>;
  /** SIGKILL: no shutdown, no save. Resolves when the process is gone. */
  kill(): Promise<void>;
  /** Starts redis-server again on the same port and data dir (kills it first if it is running). */
  restart(): Promise<void>;
  /** SIGSTOP: the server holds connections open and answers nothing, as a hung Redis does. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Kills the server and removes its data dir. Idempotent. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** Spawns redis-server and resolves once it logs that it accepts connections (or rejects with its output). */
function spawnRedis(
  port: number,
  dir: string,
  persistence: boolean,
  extraArgs: readonly string[] = [],
): Promise<ChildProcess> {
  if (!redisServerBinary) {
    return Promise.reject(new Error(`redis-server is not on PATH and REDIS_URL is not set: ${REDIS_INSTALL}`));
  }
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--logfile', '', '--save', ''];
  args.push(...(persistence ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
  args.push(...extraArgs);
  const child = spawn(redisServerBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  return new Promise((resolve, reject) => {
    let output = '';
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('Ready to accept connections')) {
        child.stdout?.off('data', onData);
        child.stdout?.resume();
        child.off('exit', onExit);
        resolve(child);
      }
    };
    const onExit = (code: number | null) =>
      reject(new Error(`redis-server exited (${code}) on port ${port}:\n${output}`));
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.once('exit', onExit);
  });
}

async function sendOnce(url: string, args: string[]): Promise<unknown> {
  const client = createClient({ url, socket: { reconnectStrategy: false } });
  client.on('error', () => {}); // a failed connect rejects connect() below
  await client.connect();
  try {
    return await client.sendCommand(args);
  } finally {
    client.destroy();
  }
}

/** One database per vitest worker on a shared REDIS_URL server, so parallel test files do not flush each other. */
function externalServer(url: string): RedisServer {
  const target = new URL(url);
  const database = 1 + (Number(process.env.VITEST_POOL_ID ?? 0) % 15);
  target.pathname = `/${database}`;
  const notOurs = () => {
    throw new Error('REDIS_URL points to a server these tests did not start: it cannot be killed, paused or restarted');
  };
  const server: RedisServer = {
    url: target.toString(),
    port: Number(target.port || 6379),
    ownProcess: false,
    pid: undefined,
    command: (...args) => sendOnce(server.url, args),
    async flush() {
      await server.command('FLUSHDB');
      await server.command('SCRIPT', 'FLUSH');
    },
    kill: async () => notOurs(),
    restart: async () => notOurs(),
    pause: notOurs,
    resume: notOurs,
    async stop() {},
  };
  return server;
}

/** A redis-server of the caller's own (or the REDIS_URL server). Call stop() when done. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  if (externalUrl) return externalServer(externalUrl);
  const persistence = options.persistence ?? false;
  const dir = mkdtempSync(join(tmpdir(), 'kana-meter-redis-'));
  let port = 0;
  let child: ChildProcess | undefined;
  // The free port may be taken between the probe and redis-server's bind: try a few.
  for (let attempt = 1; !child; attempt++) {
    port = await freePort();
    try {
      child = await spawnRedis(port, dir, persistence, options.args);
    } catch (error) {
      if (attempt === 3 || !String(error).includes('in use')) {
        rmSync(dir, { recursive: true, force: true });
        throw error;
      }
    }
  }
  const url = `redis://127.0.0.1:${port}`;
  let serverProcess: ChildProcess | undefined = child;
  let stopped = false;

  async function kill() {
    const current = serverProcess;
    serverProcess = undefined;
    if (!current || current.exitCode !== null || current.signalCode !== null) return;
    const exited = new Promise((resolve) => current.once('exit', resolve));
    current.kill('SIGCONT'); // a paused server must still die
    current.kill('SIGKILL');
    await exited;
  }
  const server: RedisServer = {
    url,
    port,
    ownProcess: true,
    get pid() {
      return serverProcess?.pid;
    },
    command: (...args) => sendOnce(url, args),
    async flush() {
      await server.command('FLUSHALL');
      await server.command('SCRIPT', 'FLUSH');
    },
    kill,
    async restart() {
      await kill();
      serverProcess = await spawnRedis(port, dir, persistence, options.args);
    },
    pause() {
      serverProcess?.kill('SIGSTOP');
    },
    resume() {
      serverProcess?.kill('SIGCONT');
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/** A connected Redis client, seen through the `sendCommand` a user passes to kana-meter. */
export interface RedisTestClient {
  readonly sendCommand: (...args: string[]) => Promise<unknown>;
  /** Resolves on the client's next 'ready' event: after a restart, once it has reconnected. */
  nextReady(): Promise<void>;
  close(): void;
}

/** The clients kana-meter supports, each as a user wires it: node-redis (RESP2 and RESP3) and ioredis. */
export const redisClients: ReadonlyArray<readonly [string, (url: string) => Promise<RedisTestClient>]> = [
  ['node-redis', (url) => connectNodeRedis(url, 2)],
  ['node-redis RESP3', (url) => connectNodeRedis(url, 3)],
  [
    'ioredis',
    async (url) => {
      const client = new Redis(url, { lazyConnect: true });
      client.on('error', () => {}); // reconnects by itself; kana-meter sees failures as rejected commands
      await client.connect();
      return {
        sendCommand: (command, ...args) => client.call(command as string, ...args),
        nextReady: () => new Promise((resolve) => client.once('ready', () => resolve())),
        close: () => client.disconnect(),
      };
    },
  ],
];

async function connectNodeRedis(url: string, resp: 2 | 3): Promise<RedisTestClient> {
  const client = createClient({ url, RESP: resp });
  client.on('error', () => {}); // reconnects by itself; kana-meter sees failures as rejected commands
  await client.connect();
  return {
    sendCommand: (...args) => client.sendCommand(args),
    nextReady: () => new Promise((resolve) => client.once('ready', () => resolve())),
    close: () => client.destroy(),
  };
}
