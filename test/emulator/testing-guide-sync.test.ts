// The testing guide (docs/testing.md) shows what the code does: its vitest example and the CLI's --help.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const guide = () => readFile(new URL('docs/testing.md', `file://${root}`), 'utf8');

describe('docs/testing.md', () => {
  it('holds testing-guide-example.test.ts verbatim as its vitest example', async () => {
    const example = await readFile(new URL('testing-guide-example.test.ts', import.meta.url), 'utf8');
    expect(await guide()).toContain(`\`\`\`ts\n${example}\`\`\``);
  });

  it("holds kana-emulator's --help text", async () => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/emulator/cli.ts', '--help'], { cwd: root });
    const usage = stdout.slice(0, stdout.indexOf('\n\nExample:'));
    expect(usage).toMatch(/^Usage: kana-emulator/);
    expect(await guide()).toContain(`\`\`\`text\n${usage}\n\`\`\``);
  });
});
