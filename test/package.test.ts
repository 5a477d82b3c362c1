// The published artefact: npm pack, install the tarball in a fresh project, load it as ESM and as CommonJS.

import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
let project: string;
let tarballFiles: string[];

beforeAll(async () => {
  project = await mkdtemp(join(tmpdir(), 'kana-meter-pack-'));
  // prepack builds dist/ first, so the tarball is always fresh.
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', project], { cwd: root });
  const [packed] = JSON.parse(stdout) as { filename: string; files: { path: string }[] }[];
  tarballFiles = packed?.files.map((file) => file.path) ?? [];
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  await run(
    'npm',
    ['install', '--no-audit', '--no-fund', '--prefer-offline', join(project, packed?.filename as string), 'express@5'],
    { cwd: project },
  );
  for (const file of await readdir(join(root, 'test/package'))) {
    await copyFile(join(root, 'test/package', file), join(project, file));
  }
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
        'README.md',
        'package.json',
      ]),
    );
    expect(tarballFiles.filter((file) => file.startsWith('src/') || file.startsWith('test/'))).toEqual([]);
  });

  it('works when imported as ESM (main entry and ./emulator)', async () => {
    const { stdout } = await run('node', ['consumer.mjs'], { cwd: project });
    expect(JSON.parse(stdout)).toEqual({ esm: true, usage: 1, kanaError: 'function' });
  });

  it('works when required as CommonJS (main entry and ./emulator)', async () => {
    const { stdout, stderr } = await run('node', ['consumer.cjs'], { cwd: project });
    expect(JSON.parse(stdout)).toEqual({ cjs: true, usage: 2, meter: 'function' });
    expect(stderr).not.toMatch(/ExperimentalWarning/);
  });
});
