// The anchors GitHub gives Markdown headings: for the options reference's links, and the tests that check links.

/** Anchors handed out in heading order: lower case, punctuation dropped, spaces as dashes, repeats numbered. */
export class Slugs {
  readonly #seen = new Map<string, number>();

  of(heading: string): string {
    const base = heading
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /g, '-');
    const count = this.#seen.get(base) ?? 0;
    this.#seen.set(base, count + 1);
    return count === 0 ? base : `${base}-${count}`;
  }
}

/** The Markdown without its fenced code blocks: what is prose, where headings and links are. */
export function withoutFencedCode(markdown: string): string {
  return markdown.replace(/^(\s*)(`{3,}|~{3,})[^\n]*\n[\s\S]*?^\1\2\s*$/gm, '');
}

/** A Markdown file's headings, in order, with their level (`###` is 3) and anchor. */
export function headings(markdown: string): { level: number; anchor: string }[] {
  const slugs = new Slugs();
  return [...withoutFencedCode(markdown).matchAll(/^(#{1,6}) (.*)$/gm)].map(([, hashes, text]) => ({
    level: (hashes as string).length,
    anchor: slugs.of(text as string),
  }));
}
