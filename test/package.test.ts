// The published artefact: npm pack, install the tarball in a fresh project; every way an app loads it (ESM, CommonJS, TypeScript
// compiled to either, Express 4 and 5, bundled by esbuild) delivers real usage, each consumer in its own process against an
// emulator; type-checks TS consumers; the main entry without prom-client nor @opentelemetry/api (optional peers), kana-meter/prometheus with it;
// kana-meter/redis from ESM (node-redis) and CommonJS (ioredis) against a real redis-server; kana-meter/opentelemetry
// (its optional peer @opentelemetry/api installed with the SDK) from ESM and CommonJS.

import { type ExecFileOptions, execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useEmulator } from './helpers/emulator.js';
import { type RedisServer, redisSkipReason, startRedisServer } from './helpers/redis.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const tsc = join(root, 'node_modules/typescript/bin/tsc');
const esbuild = join(root, 'node_modules/.bin/esbuild');
const env = useEmulator();
let project: string;
/** Where esbuild writes the bundled apps: outside the project, so they cannot load anything from its node_modules. */
let bundles: string;
let tarballFiles: string[];
/** What without-prom-client.mjs printed, run before prom-client was installed in the project. */
let withoutPromClient: unknown;

/** Runs a command to its end without throwing: the exit code is part of the result. */
async function runToEnd(file: string, args: string[], options: ExecFileOptions = {}) {
  try {
    const { stdout, stderr } = await run(file, args, { ...options, encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: unknown; stdout?: string; stderr?: string };
    return {
      code: typeof failed.code === 'number' ? failed.code : -1,
      stdout: failed.stdout ?? '',
      stderr: failed.stderr ?? String(error),
    };
  }
}

beforeAll(async () => {
  project = await mkdtemp(join(tmpdir(), 'kana-meter-pack-'));
  bundles = await mkdtemp(join(tmpdir(), 'kana-meter-bundles-'));
  // prepack builds dist/ first, so the tarball is always fresh.
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', project], { cwd: root });
  const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  tarballFiles = packed?.files.map((file) => file.path) ?? [];
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  await run(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      join(project, packed?.filename as string),
      'express@5',
      'express4@npm:express@4',
      '@types/express@5',
      '@types/node@20',
      // The Redis clients a user brings: kana-meter depends on neither.
      'redis@6',
      'ioredis@6',
    ],
    { cwd: project },
  );
  for (const file of await readdir(join(root, 'test/package'))) {
    await copyFile(join(root, 'test/package', file), join(project, file));
  }
  // prom-client is an optional peer: npm did not install it. Try the package without it, then add it.
  withoutPromClient = JSON.parse((await run('node', ['without-prom-client.mjs'], { cwd: project })).stdout);
  await run(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--prefer-offline',
      'prom-client@15',
      // The OpenTelemetry API (an optional peer) and the SDK a user brings.
      '@opentelemetry/api@~1.9.0',
      '@opentelemetry/sdk-metrics@^2.12.0',
      '@opentelemetry/sdk-trace-base@^2.12.0',
    ],
    { cwd: project },
  );
}, 180_000);

afterAll(async () => {
  await rm(project, { recursive: true, force: true });
  await rm(bundles, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('holds the build, the emulator schema and the docs, and no sources or tests', () => {
    expect(tarballFiles).toEqual(
      expect.arrayContaining([
        'dist/index.js',
        'dist/index.cjs',
        'dist/index.d.ts',
        'dist/index.d.cts',
        'dist/emulator/schema.graphql',
        'dist/emulator/cli.js',
        'dist/prometheus.js',
        'dist/prometheus.cjs',
        'dist/prometheus.d.ts',
        'dist/prometheus.d.cts',
        'dist/redis.js',
        'dist/redis.cjs',
        'dist/redis.d.ts',
        'dist/redis.d.cts',
        'dist/opentelemetry.js',
        'dist/opentelemetry.cjs',
        'dist/opentelemetry.d.ts',
        'dist/opentelemetry.d.cts',
        'README.md',
        'package.json',
      ]),
    );
    expect(tarballFiles.filter((file) => file.startsWith('src/') || file.startsWith('test/'))).toEqual([]);
  });

  it('embeds in each source map the sources it names (src/ is not shipped, so a stack trace can still be read)', async () => {
    const maps = tarballFiles.filter((file) => file.endsWith('.map'));
    expect(maps).toEqual(
      expect.arrayContaining(['dist/index.js.map', 'dist/index.cjs.map', 'dist/emulator/cli.js.map']),
    );
    const installed = join(project, 'node_modules/kana-meter');
    for (const file of maps) {
      const map = JSON.parse(await readFile(join(installed, file), 'utf8')) as {
        sources: string[];
        sourcesContent?: (string | null)[];
      };
      const missing = map.sources.filter((_source, i) => typeof map.sourcesContent?.[i] !== 'string');
      expect({ file, missing }).toEqual({ file, missing: [] });
      // What a stack trace names: the source as it was built.
      const middleware = map.sources.indexOf('../src/middleware.ts');
      if (middleware !== -1) {
        expect(map.sourcesContent?.[middleware]).toBe(await readFile(join(root, 'src/middleware.ts'), 'utf8'));
      }
    }
  });

  it('loads without prom-client installed, as ESM and CommonJS; only kana-meter/prometheus needs it', async () => {
    expect(withoutPromClient).toEqual({
      promClient: { code: 'MODULE_NOT_FOUND', namesPromClient: true },
      esm: 'function',
      cjs: 'function',
      prometheusEsm: { code: 'ERR_MODULE_NOT_FOUND', namesPromClient: true },
      prometheusCjs: { code: 'MODULE_NOT_FOUND', namesPromClient: true },
      openTelemetryApi: { code: 'MODULE_NOT_FOUND', namesOpenTelemetry: true },
      openTelemetryEsm: { code: 'ERR_MODULE_NOT_FOUND', namesOpenTelemetry: true },
      openTelemetryCjs: { code: 'MODULE_NOT_FOUND', namesOpenTelemetry: true },
    });
    const installed = join(project, 'node_modules/kana-meter/dist');
    for (const bundle of ['index.js', 'index.cjs', 'emulator/index.js', 'emulator/index.cjs']) {
      expect(await readFile(join(installed, bundle), 'utf8')).not.toContain('prom-client');
      expect(await readFile(join(installed, bundle), 'utf8')).not.toContain('@opentelemetry');
    }
  });
});

/** Each test/package/app* consumer: 3 requests on a route map entry, 2 on meter() in a sub-app, kanaMeter on both apps. */
const SERVED = 5;
const BILLED = { 'api-calls': 3, reports: 2 };
/**
 * Both keys go in the first usage call, answered 503. Each is retried after its own jittered
 * delay: together in one call, or in two.
 */
const RETRIES = [1, 2];

/**
 * Runs a consumer in its own process against the test's emulator, as Kana user `user`, after
 * scripting a 503 for the first usage call (so its usage is retried). Resolves with what it printed.
 */
async function consume(user: string, args: string[]) {
  env.emulator.seed({ users: [{ id: user }] });
  env.emulator.failNext({ status: 503 }, { operation: 'createUsageEvent' });
  const { stdout, stderr } = await run(process.execPath, args, {
    cwd: project,
    env: { ...process.env, KANA_ENDPOINT: env.emulator.url, KANA_API_KEY: env.emulator.apiKey, KANA_USER: user },
  });
  return { printed: lastLine(stdout), stderr };
}

/** What a consumer printed last, as JSON (kana-meter's default logger writes its lines to stdout before it). */
function lastLine(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split('\n').at(-1) as string);
}

/** What Kana recorded for `user`. */
function billedTo(user: string) {
  return { 'api-calls': env.emulator.usage(user, 'api-calls'), reports: env.emulator.usage(user, 'reports') };
}

describe('every way an app loads the packed tarball delivers its usage (its first call retried after a 503)', () => {
  beforeAll(() => {
    env.emulator.seed({ features: ['api-calls', 'reports'].map((id) => ({ id, type: 'CONSUMABLE' as const })) });
  });

  /** Builds what a row runs (compiles, bundles); returns the node arguments. */
  const rows: [name: string, user: string, prepare: () => Promise<string[]>][] = [
    ['ESM import (Express 5)', 'esm', async () => ['app.mjs']],
    ['CommonJS require (Express 5)', 'cjs', async () => ['app.cjs']],
    [
      'an ESM and a CommonJS copy in one process: kanaMeter() required, meter() imported',
      'dual',
      async () => ['app-dual.mjs'],
    ],
    // No require(esm) at all: what tools without it (Jest, older loaders) get.
    [
      'CommonJS require, node --no-experimental-require-module',
      'cjs-no-require-esm',
      async () => ['--no-experimental-require-module', 'app.cjs'],
    ],
    ['CommonJS require on Express 4', 'cjs-express4', async () => ['app-express4.cjs']],
    [
      'TypeScript module commonjs, compiled by tsc, run with plain node',
      'ts-commonjs',
      async () => {
        await compile('commonjs', { module: 'commonjs', esModuleInterop: true }, 'app.ts');
        return ['out-commonjs/app.js'];
      },
    ],
    [
      'TypeScript NodeNext (ESM), compiled by tsc, run with plain node',
      'ts-nodenext',
      async () => {
        await copyFile(join(project, 'app.ts'), join(project, 'app.mts'));
        await compile('nodenext', { module: 'NodeNext', moduleResolution: 'NodeNext' }, 'app.mts');
        return ['out-nodenext/app.mjs'];
      },
    ],
    [
      'bundled into one file by esbuild --bundle --platform=node --format=cjs',
      'esbuild-cjs',
      async () => {
        await run(
          esbuild,
          ['app.mjs', '--bundle', '--platform=node', '--format=cjs', `--outfile=${join(bundles, 'app.cjs')}`],
          { cwd: project },
        );
        return [join(bundles, 'app.cjs')];
      },
    ],
    [
      'bundled into one file by esbuild --bundle --platform=node --format=esm',
      'esbuild-esm',
      async () => {
        await run(
          esbuild,
          [
            'app.mjs',
            '--bundle',
            '--platform=node',
            '--format=esm',
            `--outfile=${join(bundles, 'app.mjs')}`,
            ESM_BANNER,
          ],
          { cwd: project },
        );
        return [join(bundles, 'app.mjs')];
      },
    ],
  ];

  it.each(rows)(
    '%s',
    async (_name, user, prepare) => {
      const { printed, stderr } = await consume(user, await prepare());

      expect(printed).toMatchObject({
        served: SERVED,
        stats: { delivered: SERVED, failed: 0, internalErrors: 0 },
      });
      expect(RETRIES).toContain((printed.stats as { retries: number }).retries);
      expect(billedTo(user)).toEqual(BILLED);
      expect(stderr).toBe('');
    },
    120_000,
  );

  it('kana-meter/prometheus, imported as ESM, counts the retry and the deliveries', async () => {
    const { printed } = await consume('prometheus-esm', ['consumer-prometheus.mjs']);
    expect(printed).toEqual({
      esm: true,
      served: SERVED,
      delivered: String(SERVED),
      retries: expect.any(String),
      calls503: '1',
    });
    expect(RETRIES).toContain(Number(printed.retries));
    expect(billedTo('prometheus-esm')).toEqual(BILLED);
  });

  it("kana-meter/prometheus, required as CommonJS, on prom-client's global registry", async () => {
    const { printed } = await consume('prometheus-cjs', ['consumer-prometheus.cjs']);
    expect(printed).toEqual({
      cjs: true,
      served: SERVED,
      delivered: String(SERVED),
      retries: expect.any(String),
      available: '1',
    });
    expect(RETRIES).toContain(Number(printed.retries));
    expect(billedTo('prometheus-cjs')).toEqual(BILLED);
  });

  it('kana-meter/opentelemetry, imported as ESM, reports the units delivered and one span per attempt', async () => {
    const { printed } = await consume('opentelemetry-esm', ['consumer-opentelemetry.mjs']);
    expect(printed).toEqual({
      esm: true,
      served: SERVED,
      units: BILLED,
      retries: expect.any(Number),
      // Each key's first attempt was in the call answered 503.
      attempts: [503, 503, 'ok', 'ok'],
    });
    expect(RETRIES).toContain(printed.retries);
    expect(billedTo('opentelemetry-esm')).toEqual(BILLED);
  });

  it("kana-meter/opentelemetry, required as CommonJS, on the SDK's global providers", async () => {
    const { printed } = await consume('opentelemetry-cjs', ['consumer-opentelemetry.cjs']);
    expect(printed).toEqual({ cjs: true, served: SERVED, delivered: SERVED, available: 1, deliveries: true });
    expect(billedTo('opentelemetry-cjs')).toEqual(BILLED);
  });

  it('kana-meter/emulator, imported as ESM, records what the app sent', async () => {
    const { stdout } = await run('node', ['consumer.mjs'], { cwd: project });
    const printed = lastLine(stdout);
    expect(RETRIES).toContain(printed.retries);
    expect(printed).toEqual({
      esm: true,
      served: SERVED,
      usage: BILLED,
      retries: expect.any(Number),
      recorded: 2,
      check: 'kana',
      kanaError: 'function',
    });
  });

  it('kana-meter/emulator, required as CommonJS, records what the app sent', async () => {
    const { stdout, stderr } = await run('node', ['consumer.cjs'], { cwd: project });
    const printed = lastLine(stdout);
    expect(printed).toEqual({ cjs: true, served: SERVED, usage: BILLED, retries: expect.any(Number), check: 402 });
    expect(RETRIES).toContain(printed.retries);
    expect(stderr).not.toMatch(/ExperimentalWarning/);
  });
});

describe.skipIf(redisSkipReason)('kana-meter/redis against a real redis-server', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  const withRedis = () => ({ cwd: project, env: { ...process.env, REDIS_URL: redis.url } });

  it('imported as ESM, with node-redis: two instances pass the allowance once, with one Kana check', async () => {
    const { stdout } = await run('node', ['consumer-redis.mjs'], withRedis());
    const printed = JSON.parse(stdout);
    expect(printed).toMatchObject({ esm: true, statuses: [200, 200, 200, 429, 429, 429], usage: 3, checks: 1 });
    // The ledger, and the instances' announcements while they ran (entries last 3 s).
    expect(printed.redisKeys.filter((key: string) => key !== 'esm-consumer:fleet')).toEqual([
      'esm-consumer:l:{u1:reports}',
    ]);
  });

  it('required as CommonJS, with ioredis: the same', async () => {
    const { stdout } = await run('node', ['consumer-redis.cjs'], withRedis());
    expect(JSON.parse(stdout)).toEqual({ cjs: true, statuses: [200, 200, 200, 200, 429, 429], usage: 4, checks: 1 });
  });
});

describe('kana-meter/redis depends on no Redis client', () => {
  it('takes your sendCommand: neither client is a dependency, and no bundle loads one', async () => {
    const installed = join(project, 'node_modules/kana-meter');
    const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8'));
    const dependencies = Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies });
    expect(dependencies).not.toContain('redis');
    expect(dependencies).not.toContain('ioredis');
    for (const bundle of ['redis.js', 'redis.cjs', 'index.js', 'index.cjs']) {
      expect(await readFile(join(installed, 'dist', bundle), 'utf8')).not.toMatch(
        /require\("(redis|ioredis)"\)|from "(redis|ioredis)"/,
      );
    }
  });
});

/**
 * esbuild's ESM output keeps the `require()` calls of the CommonJS packages it bundles (Express
 * requires Node's built-ins): they need a `require`, which ESM does not have. The usual banner.
 */
const ESM_BANNER =
  "--banner:js=import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);";

/** Compiles `file` with the repository's tsc into out-<name>/; fails the test with tsc's output unless tsc exits 0. */
async function compile(name: string, options: Record<string, unknown>, file: string): Promise<void> {
  // skipLibCheck, as most apps set it: the declarations themselves are checked by the type-check rows below.
  const compilerOptions = {
    target: 'ES2022',
    strict: true,
    skipLibCheck: true,
    types: ['node'],
    outDir: `out-${name}`,
    ...options,
  };
  await writeFile(join(project, `tsconfig.${name}.json`), JSON.stringify({ compilerOptions, files: [file] }));
  const { code, stdout } = await runToEnd(process.execPath, [tsc, '-p', `tsconfig.${name}.json`], { cwd: project });
  expect({ code, stdout }).toEqual({ code: 0, stdout: '' });
}

describe('the packed tarball: types, package checks, the kana-emulator bin', () => {
  it.each([
    ['NodeNext', '5', { module: 'NodeNext', moduleResolution: 'NodeNext' }, ['consumer.mts', 'consumer.cts']],
    ['Bundler', '5', { module: 'ESNext', moduleResolution: 'Bundler' }, ['consumer.mts']],
    ['NodeNext', '4', { module: 'NodeNext', moduleResolution: 'NodeNext' }, ['consumer.mts', 'consumer.cts']],
    ['Bundler', '4', { module: 'ESNext', moduleResolution: 'Bundler' }, ['consumer.mts']],
  ])(
    'type-checks from TypeScript, moduleResolution %s, @types/express %s',
    async (_name, major, resolution, files) => {
      await run(
        'npm',
        ['install', '--no-audit', '--no-fund', '--prefer-offline', '--no-save', `@types/express@${major}`],
        {
          cwd: project,
        },
      );
      const compilerOptions = { ...resolution, target: 'ES2022', strict: true, noEmit: true, types: ['node'] };
      await writeFile(join(project, 'tsconfig.json'), JSON.stringify({ compilerOptions, files }));
      // The repository's TypeScript, so the check does not depend on what the consumer installed.
      const { code, stdout } = await runToEnd(process.execPath, [tsc, '-p', '.'], { cwd: project });
      expect({ code, stdout }).toEqual({ code: 0, stdout: '' });
    },
    120_000,
  );

  it('passes publint and arethetypeswrong without a single remark', async () => {
    const installed = join(project, 'node_modules/kana-meter');
    const publint = await run(process.execPath, [join(root, 'node_modules/publint/src/cli.js'), '--pack', 'false'], {
      cwd: installed,
    });
    expect(publint.stdout).toMatch(/All good!/);
    const tarball = join(project, (await readdir(project)).find((file) => file.endsWith('.tgz')) as string);
    const attw = await run(process.execPath, [
      join(root, 'node_modules/@arethetypeswrong/cli/dist/index.js'),
      tarball,
      '--format',
      'json',
    ]);
    expect(JSON.parse(attw.stdout).analysis.problems).toEqual([]);
  });

  it('installs the kana-emulator bin: npx kana-emulator --help', async () => {
    const { stdout } = await run('npx', ['kana-emulator', '--help'], { cwd: project });
    expect(stdout).toMatch(/^Usage: kana-emulator \[options\]/);
  });

  it('installs the kana-meter bin: npx kana-meter reconcile --help', async () => {
    const { stdout } = await run('npx', ['kana-meter', 'reconcile', '--help'], { cwd: project });
    expect(stdout).toMatch(/^Usage: kana-meter reconcile --audit <file\|folder>/);
  });

  it('runs the kana-emulator bin with a seed file, serves GraphQL with the printed key, and stops on SIGTERM', async () => {
    await copyFile(join(root, 'example-app/seed.json'), join(project, 'seed.json'));
    const child = spawn(join(project, 'node_modules/.bin/kana-emulator'), ['--port', '0', '--seed', 'seed.json'], {
      cwd: project,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    try {
      let stdout = '';
      child.stdout.setEncoding('utf8');
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (chunk: string) => {
          stdout += chunk;
          if (stdout.includes('Press Ctrl-C to stop.')) resolve();
        });
        void exited.then((code) => reject(new Error(`kana-emulator exited with ${code}`)));
      });
      const [, apiKey, url] = /KANA_API_KEY=(\S+) KANA_ENDPOINT=(\S+)\n/.exec(stdout) ?? [];
      const response = await fetch(url as string, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: apiKey as string },
        body: JSON.stringify({ query: '{ user(id: "demo-user") { name } }' }),
      });
      expect(await response.json()).toEqual({ data: { user: { name: 'Demo User' } } });
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
