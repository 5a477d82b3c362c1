// The published artefact: npm pack, install the tarball in a fresh project, load it as ESM and as CommonJS, type-check a TS consumer;
// the main entry without prom-client (an optional peer), kana-meter/prometheus with it.

import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
let project: string;
let tarballFiles: string[];
/** What without-prom-client.mjs printed, run before prom-client was installed in the project. */
let withoutPromClient: unknown;

beforeAll(async () => {
  project = await mkdtemp(join(tmpdir(), 'kana-meter-pack-'));
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
      '@types/express@5',
      '@types/node@20',
    ],
    { cwd: project },
  );
  for (const file of await readdir(join(root, 'test/package'))) {
    await copyFile(join(root, 'test/package', file), join(project, file));
  }
  // prom-client is an optional peer: npm did not install it. Try the package without it, then add it.
  withoutPromClient = JSON.parse((await run('node', ['without-prom-client.mjs'], { cwd: project })).stdout);
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', 'prom-client@15'], { cwd: project });
}, 180_000);

afterAll(async () => {
  await rm(project, { recursive: true, force: true });
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
        'README.md',
        'package.json',
      ]),
    );
    expect(tarballFiles.filter((file) => file.startsWith('src/') || file.startsWith('test/'))).toEqual([]);
  });

  it('loads without prom-client installed, as ESM and CommonJS; only kana-meter/prometheus needs it', async () => {
    expect(withoutPromClient).toEqual({
      promClient: { code: 'MODULE_NOT_FOUND', namesPromClient: true },
      esm: 'function',
      cjs: 'function',
      prometheusEsm: { code: 'ERR_MODULE_NOT_FOUND', namesPromClient: true },
      prometheusCjs: { code: 'MODULE_NOT_FOUND', namesPromClient: true },
    });
    const installed = join(project, 'node_modules/kana-meter/dist');
    for (const bundle of ['index.js', 'index.cjs', 'emulator/index.js', 'emulator/index.cjs']) {
      expect(await readFile(join(installed, bundle), 'utf8')).not.toContain('prom-client');
    }
  });

  it('kana-meter/prometheus works once prom-client is installed, as ESM and as CommonJS', async () => {
    const esm = await run('node', ['consumer-prometheus.mjs'], { cwd: project });
    expect(JSON.parse(esm.stdout)).toEqual({ esm: true, delivered: '2', calls: '1' });
    const cjs = await run('node', ['consumer-prometheus.cjs'], { cwd: project });
    expect(JSON.parse(cjs.stdout)).toEqual({ cjs: true, available: '1' });
  });

  it('works when imported as ESM (main entry and ./emulator)', async () => {
    const { stdout } = await run('node', ['consumer.mjs'], { cwd: project });
    expect(JSON.parse(stdout)).toEqual({ esm: true, usage: 3, check: 'kana', kanaError: 'function' });
  });

  it('works when required as CommonJS (main entry and ./emulator)', async () => {
    const { stdout, stderr } = await run('node', ['consumer.cjs'], { cwd: project });
    expect(JSON.parse(stdout)).toEqual({ cjs: true, usage: 2, meter: 'function', check: 402 });
    expect(stderr).not.toMatch(/ExperimentalWarning/);
  });

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
      const { stdout } = await run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], {
        cwd: project,
      }).catch((error: { stdout: string }) => ({ stdout: error.stdout }));
      expect(stdout).toBe('');
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
