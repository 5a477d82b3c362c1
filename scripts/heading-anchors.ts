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

/** The anchors of a Markdown file's headings, in order; headings inside fenced code are not headings. */
export function headingAnchors(markdown: string): string[] {
  const prose = markdown.replace(/^(\s*)(`{3,}|~{3,})[^\n]*\n[\s\S]*?^\1\2\s*$/gm, '');
  const slugs = new Slugs();
  return (prose.match(/^#{1,6} .*$/gm) ?? []).map((heading) => slugs.of(heading.replace(/^#+ /, '')));
}
