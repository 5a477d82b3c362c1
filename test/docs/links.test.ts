// Every relative link of README.md, docs/ and the recipes' README leads somewhere: the file exists, and an #anchor is a heading of it.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { headings, withoutFencedCode } from '../../scripts/heading-anchors.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const pages = [
  'README.md',
  'example-app/recipes/README.md',
  ...readdirSync(join(root, 'docs'))
    .filter((file) => file.endsWith('.md'))
    .map((file) => `docs/${file}`),
];

/** `[text](target)` links outside code; absolute URLs and mailto: are not ours to check. */
function relativeLinks(markdown: string): string[] {
  const prose = withoutFencedCode(markdown).replace(/`[^`\n]*`/g, '');
  return [...prose.matchAll(/\]\(([^)\s]+)\)/g)]
    .map(([, target]) => target as string)
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/i.test(target));
}

describe('links in the docs', () => {
  it.each(pages)('%s: every relative link and anchor resolves', (page) => {
    const markdown = readFileSync(join(root, page), 'utf8');
    const broken: string[] = [];
    for (const link of relativeLinks(markdown)) {
      const [path, anchor] = link.split('#') as [string, string | undefined];
      const file = path === '' ? join(root, page) : join(root, dirname(page), path);
      if (!existsSync(file)) {
        broken.push(`${link}: no ${relative(root, file)}`);
        continue;
      }
      if (anchor !== undefined && (statSync(file).isDirectory() || !file.endsWith('.md'))) {
        broken.push(`${link}: an anchor into a file that is not Markdown`);
      } else if (
        anchor !== undefined &&
        !headings(readFileSync(file, 'utf8')).some((heading) => heading.anchor === anchor)
      ) {
        broken.push(`${link}: no heading #${anchor} in ${relative(root, file)}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('finds the links it checks', () => {
    const readme = relativeLinks(readFileSync(join(root, 'README.md'), 'utf8'));
    expect(readme).toContain('docs/options.md');
    expect(readme.filter((link) => link.includes('#')).length).toBeGreaterThan(10);
  });
});
