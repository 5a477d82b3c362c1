// docs/options.md is generated from the TSDoc (npm run docs:options): it must be what the generator writes now, and every option must be fully documented.

import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { headings } from '../../scripts/heading-anchors.js';
import {
  OPTIONS_REFERENCE,
  OPTIONS_SUMMARY_MARKERS,
  type OptionsReference,
  renderOptionsReference,
  withOptionsSummary,
} from '../../scripts/options-reference.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * What the TSDoc or the option checks lack today. A new gap fails this test; so does a gap that was
 * closed (then remove it here and run npm run docs:options).
 */
const KNOWN_GAPS: string[] = [];

describe(OPTIONS_REFERENCE, () => {
  let reference: OptionsReference;
  const rendered = async () => {
    reference ??= await renderOptionsReference();
    return reference;
  };

  it('is what npm run docs:options writes from the TSDoc', async () => {
    const { markdown } = await rendered();
    const onDisk = await readFile(`${root}/${OPTIONS_REFERENCE}`, 'utf8');
    expect(onDisk, `${OPTIONS_REFERENCE} is out of date with the TSDoc: run npm run docs:options`).toBe(markdown);
  });

  it('is summed up in the README: every option with its default, as npm run docs:options writes it', async () => {
    const { summary, markdown } = await rendered();
    const readme = await readFile(`${root}/${OPTIONS_SUMMARY_MARKERS.file}`, 'utf8');
    expect(readme, "the README's options table is out of date with the TSDoc: run npm run docs:options").toBe(
      withOptionsSummary(readme, summary),
    );
    // One link per option of the reference, each to that option's own heading there.
    const anchors = [...summary.matchAll(new RegExp(`\\]\\(${OPTIONS_REFERENCE}#([\\w-]+)\\)`, 'g'))].map(
      ([, anchor]) => anchor,
    );
    expect(anchors).toEqual(
      headings(markdown)
        .filter((heading) => heading.level === 3)
        .map((heading) => heading.anchor),
    );
  });

  it('gives every option a description, a default, an example and the TypeError of a bad value, but for the known gaps', async () => {
    expect((await rendered()).gaps).toEqual(KNOWN_GAPS);
  });

  it('shows for each option the message of a bad value of that option, as kanaMeter() throws it', async () => {
    const { markdown } = await rendered();
    const sections = markdown.split(/^### /m).slice(1);
    expect(sections.length).toBeGreaterThan(40);
    for (const section of sections) {
      const name = /^`([\w.]+)`/.exec(section)?.[1] as string;
      const badValue = /^- \*\*A bad value:\*\* (.*)$/m.exec(section)?.[1];
      expect(badValue, name).toBeDefined();
      if (badValue?.includes('is accepted')) continue;
      expect(badValue, name).toMatch(
        new RegExp(`throws \`\`TypeError: kana-meter: option \`[^\`]*${name.split('.').pop()}`),
      );
    }
    expect(markdown).toContain(
      '- **A bad value:** `flushInterval: \'1s\'` throws ``TypeError: kana-meter: option `flushInterval` must be an integer >= 0; got "1s".``',
    );
  });
});
