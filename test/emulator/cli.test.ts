// The kana-emulator command, run from source in a child process: output, seed files, errors, signals.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startKanaEmulator } from '../../src/emulator/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const exampleSeed = join(root, 'example-app/seed.json');
let dir: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kana-emulator-cli-'));
});
afterEach(() => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
});
afterAll(() => rm(dir, { recursive: true, force: true }));

interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Spawns the CLI from source (one node process: signals reach it directly). */
function spawnCli(args: string[]) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/emulator/cli.ts', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<Exited>((resolve) => {
    child.once('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
  /** Resolves with stdout once the emulator says it is ready; rejects if the process exits first. */
  const ready = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', () => {
      if (stdout.includes('Press Ctrl-C to stop.')) resolve(stdout);
    });
    void exited.then((result) => reject(new Error(`exited early with ${result.code}: ${result.stderr}`)));
  });
  ready.catch(() => {}); // only a failure for the tests that wait for it

  return { child, exited, ready, stderr: () => stderr };
}

/**
 * Holds `port` on 127.0.0.1 as another program would. When something else on this machine holds it
 * already, the port is just as busy: the server returned then listens nowhere.
 */
async function holdPort(port: number): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve) => {
    server.once('error', () => resolve());
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return server;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
}

function runCli(args: string[]): Promise<Exited> {
  return spawnCli(args).exited;
}

/** The GraphQL URL, dashboard URL and key the CLI printed. */
function printed(stdout: string) {
  const url = /GraphQL API {2}(http:\/\/\S+\/graphql)\n/.exec(stdout)?.[1];
  const dashboardUrl = /Dashboard {4}(http:\/\/\S+\/)\n/.exec(stdout)?.[1];
  const apiKey = /API key {6}(prv_test_[A-Za-z0-9]+)\n/.exec(stdout)?.[1];
  if (url === undefined || dashboardUrl === undefined || apiKey === undefined) {
    throw new Error(`unexpected output:\n${stdout}`);
  }
  return { url, dashboardUrl, apiKey };
}

async function graphql(url: string, apiKey: string, query: string): Promise<any> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: apiKey },
    body: JSON.stringify({ query }),
  });
  return response.json();
}

async function writeSeed(name: string, content: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

describe('kana-emulator', () => {
  it('--help prints the usage, --version the package version', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: kana-emulator \[options\]/);
    for (const option of ['--port <port>', '--host <host>', '--seed <file>', '--api-key <key>', '(default: 4000, or']) {
      expect(help.stdout).toContain(option);
    }
    const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8'));
    const version = await runCli(['-v']);
    expect(version).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
  });

  it('serves the seed file on GraphQL with the key it prints, and stops on SIGTERM', async () => {
    const cli = spawnCli(['--port', '0', '--seed', exampleSeed]);
    const stdout = await cli.ready;
    const { url, dashboardUrl, apiKey } = printed(stdout);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/graphql$/);
    expect(dashboardUrl).toBe(url.replace(/graphql$/, ''));
    expect(stdout).toContain('(this machine only)');
    expect(stdout).toContain(`KANA_API_KEY=${apiKey} KANA_ENDPOINT=${url}\n`);
    expect(stdout).toContain(`Seed         ${exampleSeed}: 2 users, 4 features, 3 packages, 2 subscriptions`);
    expect(cli.stderr()).toBe('');

    const users = await graphql(url, apiKey, '{ users { id } }');
    expect(users).toEqual({ data: { users: [{ id: 'demo-user' }, { id: 'free-user' }] } });
    const refused = await graphql(url, 'prv_test_wrongKey', '{ users { id } }');
    expect(refused.errors[0].message).toMatch(/^Unauthenticated/);
    const page = await fetch(dashboardUrl);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<title>Kana emulator</title>');

    cli.child.kill('SIGTERM');
    const exited = await cli.exited;
    expect(exited).toMatchObject({ code: 0, signal: null });
    expect(exited.stderr).toContain('Received SIGTERM: stopping the Kana emulator.');
    await expect(fetch(url, { method: 'POST' })).rejects.toThrow();
  });

  it('uses the --api-key given, and stops on SIGINT', async () => {
    const cli = spawnCli(['-p', '0', '--api-key', 'prv_test_localDev123']);
    const { url, apiKey } = printed(await cli.ready);
    expect(apiKey).toBe('prv_test_localDev123');
    expect(await graphql(url, 'prv_test_localDev123', '{ users { id } }')).toEqual({ data: { users: [] } });
    cli.child.kill('SIGINT');
    expect((await cli.exited).code).toBe(0);
  });

  it("keeps an app's key across restarts with --api-key: kana.ready() resolves against each run, and refuses another run's key", async () => {
    const { kanaMeter } = await import('../../src/index.js');
    const quiet = { warn() {}, error() {}, info() {}, debug() {} };
    const apiKey = 'prv_test_quickstart';
    for (let run = 0; run < 2; run++) {
      const cli = spawnCli(['-p', '0', '--api-key', apiKey]);
      const { url } = printed(await cli.ready);
      const kana = kanaMeter({ apiKey, endpoint: url, userId: () => undefined, logger: quiet });
      await expect(kana.ready()).resolves.toBeUndefined();
      await kana.close();
      cli.child.kill('SIGTERM');
      expect((await cli.exited).code).toBe(0);
    }
    // Without --api-key, each start makes a new key: the last run's is refused, loudly.
    const cli = spawnCli(['-p', '0']);
    const { url } = printed(await cli.ready);
    const stale = kanaMeter({ apiKey, endpoint: url, userId: () => undefined, logger: quiet });
    await expect(stale.ready()).rejects.toMatchObject({ code: 'KANA_UNAUTHENTICATED' });
    await stale.close();
    cli.child.kill('SIGTERM');
    expect((await cli.exited).code).toBe(0);
  });

  it('listens on port 4000 by default', async () => {
    const cli = spawnCli([]);
    const { url } = printed(await cli.ready);
    if (url === 'http://127.0.0.1:4000/graphql') {
      expect(cli.stderr()).toBe('');
    } else {
      // Something else on this machine holds 4000 (the next test's case).
      expect(cli.stderr()).toMatch(/^kana-emulator: port 4000 is in use: listening on \d+ instead/);
    }
    cli.child.kill('SIGTERM');
    expect((await cli.exited).code).toBe(0);
  });

  it('takes the next free port when 4000 is in use, and says so in one line', async () => {
    const held = await holdPort(4000);
    try {
      const cli = spawnCli(['--seed', exampleSeed]);
      const stdout = await cli.ready;
      const { url, apiKey } = printed(stdout);
      const port = Number(new URL(url).port);
      expect(port).toBeGreaterThan(4000);
      expect(cli.stderr()).toBe(
        `kana-emulator: port 4000 is in use: listening on ${port} instead (choose one with --port)\n`,
      );
      expect(stdout).toContain(`listening on 127.0.0.1:${port} (this machine only)`);
      expect(stdout).toContain(`KANA_API_KEY=${apiKey} KANA_ENDPOINT=http://127.0.0.1:${port}/graphql\n`);
      expect(await graphql(url, apiKey, '{ users { id } }')).toEqual({
        data: { users: [{ id: 'demo-user' }, { id: 'free-user' }] },
      });
      cli.child.kill('SIGTERM');
      expect((await cli.exited).code).toBe(0);
    } finally {
      await closeServer(held);
    }
  });

  it('warns when --host binds beyond loopback', async () => {
    // 0.0.0.0 is every interface; the test connects through loopback only, and stops at once.
    const cli = spawnCli(['--port', '0', '--host', '0.0.0.0']);
    const stdout = await cli.ready;
    expect(stdout).not.toContain('(this machine only)');
    await expect.poll(() => cli.stderr()).toMatch(/^Warning: listening on 0\.0\.0\.0, beyond this machine/);
    const { url, apiKey } = printed(stdout);
    expect(await graphql(url, apiKey, '{ users { id } }')).toEqual({ data: { users: [] } });
    cli.child.kill('SIGTERM');
    expect((await cli.exited).code).toBe(0);
  });

  it.each([['4000'], ['a free port']])('refuses a --port (%s) that is in use, saying which', async (which) => {
    const other = which === '4000' ? await holdPort(4000) : undefined;
    const emulator = other ? undefined : await startKanaEmulator();
    const port = emulator?.port ?? 4000;
    try {
      const exited = await runCli(['--port', String(port)]);
      expect(exited.code).toBe(1);
      expect(exited.stderr).toBe(
        `kana-emulator: cannot listen on 127.0.0.1:${port}: the port is in use (choose another with --port)\n`,
      );
      expect(exited.stdout).toBe('');
    } finally {
      await emulator?.close();
      if (other) await closeServer(other);
    }
  });
});

describe('a seed file that cannot be used', () => {
  it.each([
    [
      'a string limit',
      '{ "features": [{ "id": "f", "type": "CONSUMABLE" }], "packages": [{ "id": "p", "features": [{ "id": "f", "limit": "10" }] }] }',
      'is invalid at packages[0].features[0].limit: must be a non-negative integer or null (a GraphQL Int), got "10"',
    ],
    [
      'a subscription to an unknown package',
      '{ "users": [{ "id": "u1" }], "subscriptions": [{ "userId": "u1", "packageId": "gold" }] }',
      'is invalid at subscriptions[0].packageId: names an unknown package "gold"',
    ],
    ['a misspelt top-level field', '{ "user": [] }', 'is invalid at seed.user: is not a known field'],
    ['an array at the top', '[]', 'is invalid at seed: must be an object, got []'],
    [
      'a JSON syntax error',
      '{\n  "users": [\n    { "id": "u1", }\n  ]\n}\n',
      /is not valid JSON: .* \(line 3, column 19\)$/,
    ],
    ['an empty file', '', 'is not valid JSON: Unexpected end of JSON input'],
  ])('is refused (%s) in one line naming the file and the field', async (_label, content, expected) => {
    const path = await writeSeed('seed.json', content);
    const exited = await runCli(['--port', '0', '--seed', path]);
    expect(exited.code).toBe(1);
    expect(exited.stdout).toBe('');
    const lines = exited.stderr.split('\n');
    expect(lines).toHaveLength(2); // one line, then the final newline
    expect(lines[0]).toContain(`kana-emulator: the seed file ${path} `);
    if (typeof expected === 'string') expect(lines[0]).toContain(expected);
    else expect(lines[0]).toMatch(expected);
  });

  it('is refused when it does not exist', async () => {
    const path = join(dir, 'missing.json');
    const exited = await runCli(['--seed', path]);
    expect(exited).toMatchObject({ code: 1, stdout: '' });
    expect(exited.stderr).toBe(`kana-emulator: cannot read the seed file ${path}: no such file\n`);
  });
});

describe('command-line mistakes', () => {
  it.each([
    [['--port', 'http'], '--port must be an integer from 0 to 65535, got "http"'],
    [['--port', '70000'], '--port must be an integer from 0 to 65535, got "70000"'],
    [['--api-key', 'sk_not_kana'], '--api-key must be a Kana test key: prv_test_ followed by letters and digits'],
    [['--frobnicate'], "Unknown option '--frobnicate'"],
    [['seed.json'], "Unexpected argument 'seed.json'"],
    [['--seed'], "Option '-s, --seed <value>' argument missing"],
  ])('%j exits with 2 and says what is wrong', async (args, message) => {
    const exited = await runCli(args);
    expect(exited).toMatchObject({ code: 2, stdout: '' });
    expect(exited.stderr).toBe(`kana-emulator: ${message} (see kana-emulator --help)\n`);
  });

  it('refuses a prv_live_ key without printing it: the emulator prints its key, and it may be a real one', async () => {
    const exited = await runCli(['--port', '0', '--api-key', 'prv_live_maybeReal42']);
    expect(exited.code).toBe(2);
    expect(exited.stderr).toContain('--api-key must be a Kana test key');
    expect(exited.stderr + exited.stdout).not.toContain('maybeReal42');
  });
});
