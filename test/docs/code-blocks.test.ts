// Every TypeScript block of README.md and docs/**/*.md type-checks against the package's public types (the rules: docs/CONTRIBUTING-DOCS.md).

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { transformSync } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { type CodeBlock, markdownCodeBlocks } from './markdown-blocks.js';
import { BlockTypeChecker } from './typecheck-blocks.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
/** Info strings of the blocks that are compiled; every other language (sh, json, http, text...) is not. */
const TYPESCRIPT = new Set(['ts', 'typescript']);
/** Compiler codes of a name used but not declared: the sign of a fragment without its context. */
const UNDECLARED_NAME = new Set([2304, 2552, 2580, 18004]);

const documents = [
  'README.md',
  ...readdirSync(join(root, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.md'))
    .map((file) => join('docs', file))
    .sort(),
];
const parsed = documents.map((file) => ({ file, ...markdownCodeBlocks(readFileSync(join(root, file), 'utf8')) }));
const typescriptBlocks = parsed.flatMap(({ file, blocks }) =>
  blocks.filter((block) => TYPESCRIPT.has(block.language)).map((block) => ({ file, block })),
);
const checker = new BlockTypeChecker(root);

/** The compiler's messages for a block, with a hint when it looks like a fragment without its context. */
function problems(file: string, block: CodeBlock): string[] {
  const diagnostics = checker.check(file, block);
  const messages = diagnostics.map((diagnostic) => diagnostic.text);
  if (block.context.length === 0 && diagnostics.some((diagnostic) => UNDECLARED_NAME.has(diagnostic.code))) {
    messages.push(
      'hint: import what the block uses, or, for a fragment, name its context on the line before the fence: ' +
        '<!-- ts-context: docs/contexts/app.d.ts --> (see docs/CONTRIBUTING-DOCS.md)',
    );
  }
  return messages;
}

describe('TypeScript blocks in the docs', () => {
  it('are found in README.md and docs/', () => {
    expect(typescriptBlocks.filter(({ file }) => file === 'README.md').length).toBeGreaterThan(0);
  });

  it.each(typescriptBlocks.map(({ file, block }) => [`${file}:${block.firstLine}`, file, block] as const))(
    '%s type-checks',
    (_name, file, block) => {
      expect(problems(file, block)).toEqual([]);
    },
  );

  // A quick-start project is CommonJS and runs app.ts through tsx (esbuild): top-level await fails there.
  it('compile as CommonJS too, as tsx runs them in a quick-start project (no top-level await)', () => {
    const failing = typescriptBlocks.flatMap(({ file, block }) => {
      try {
        transformSync(block.code, { loader: 'ts', format: 'cjs' });
        return [];
      } catch (error) {
        return [`${file}:${block.firstLine}: ${(error as Error).message.split('\n')[1]}`];
      }
    });
    expect(failing).toEqual([]);
  });

  it('name their context only right before a TypeScript block, and only declaration files under docs/contexts/', () => {
    const misplaced = parsed.flatMap(({ file, blocks, strayMarkers }) => [
      ...strayMarkers.map((line) => `${file}:${line}: a ts-context marker not followed by a code block`),
      ...blocks
        .filter((block) => block.context.length > 0 && !TYPESCRIPT.has(block.language))
        .map((block) => `${file}:${block.markerLine}: a ts-context marker before a ${block.language || 'plain'} block`),
      ...blocks.flatMap((block) =>
        block.context
          .filter((context) => !/^docs\/contexts\/[a-z0-9-]+\.d\.ts$/.test(context))
          .map((context) => `${file}:${block.markerLine}: ${context} is not docs/contexts/<name>.d.ts`),
      ),
    ]);
    expect(misplaced).toEqual([]);
  });

  it("import kana-meter's entries as they are published: every export of package.json is mapped, and only those", () => {
    const exports = Object.keys(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).exports as object)
      .filter((subpath) => subpath !== './package.json')
      .map((subpath) => subpath.replace(/^\./, 'kana-meter'));
    expect(Object.keys(checker.entries).sort()).toEqual(exports.sort());
  });
});

describe('the block checker', () => {
  const checkMarkdown = (markdown: string) =>
    markdownCodeBlocks(markdown).blocks.map((block) => checker.check('docs/example.md', block).map((d) => d.text));

  it("reports a block that does not compile with the Markdown file's line and the compiler's message", () => {
    const markdown = [
      '# Title',
      '',
      '```ts',
      "import { kanaMeter } from 'kana-meter';",
      '',
      "kanaMeter({ apiKey: 'k', userId: () => 'u1', flushInterval: '1s' });",
      '```',
    ].join('\n');
    const [messages] = checkMarkdown(markdown);
    expect(messages).toHaveLength(1);
    expect(messages?.[0]).toMatch(
      /^docs\/example\.md:6:\d+ - error TS2322: Type 'string' is not assignable to type 'number'/,
    );
  });

  it('compiles a fragment with the globals of the context named before it, and without them fails', () => {
    const fragment = "app.get('/reports/:id', meter('reports'), handler);";
    const [withContext, withoutContext] = checkMarkdown(
      `<!-- ts-context: docs/contexts/app.d.ts -->\n\`\`\`ts\n${fragment}\n\`\`\`\n\n\`\`\`ts\n${fragment}\n\`\`\`\n`,
    );
    expect(withContext).toEqual([]);
    expect(withoutContext?.join('\n')).toContain("docs/example.md:7:1 - error TS2304: Cannot find name 'app'.");
  });

  it('keeps blocks apart: what one block declares globally, the next does not see', () => {
    const declaring = 'declare global {\n  var billingRegion: string;\n}\nexport const region: string = billingRegion;';
    const [first, second] = checkMarkdown(
      `\`\`\`ts\n${declaring}\n\`\`\`\n\n\`\`\`typescript\nexport const region: string = billingRegion;\n\`\`\`\n`,
    );
    expect(first).toEqual([]);
    expect(second?.join('\n')).toContain("Cannot find name 'billingRegion'");
  });

  it('finds indented fences (in list items), ~~~ fences, and markers one blank line above', () => {
    const { blocks, strayMarkers } = markdownCodeBlocks(
      [
        '- an item:',
        '',
        '  ```ts',
        '  const a: number = 1;',
        '  ```',
        '<!-- ts-context: docs/contexts/app.d.ts -->',
        '',
        '~~~typescript title="x"',
        '```not a fence end',
        '~~~',
        '<!-- ts-context: docs/contexts/app.d.ts -->',
        'some text',
      ].join('\n'),
    );
    expect(blocks).toEqual([
      { language: 'ts', firstLine: 4, code: 'const a: number = 1;', context: [], markerLine: undefined },
      {
        language: 'typescript',
        firstLine: 9,
        code: '```not a fence end',
        context: ['docs/contexts/app.d.ts'],
        markerLine: 6,
      },
    ]);
    expect(strayMarkers).toEqual([11]);
  });
});
