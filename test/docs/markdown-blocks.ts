// Fenced code blocks of a Markdown file: their language, their first line's number, and the ts-context marker above them.

/** The marker that gives a fragment its context: `<!-- ts-context: docs/contexts/app.ts -->` on the line before the fence. */
const CONTEXT_MARKER = /^\s*<!--\s*ts-context:\s*(.*?)\s*-->\s*$/;
const OPENING_FENCE = /^(\s*)(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;

export interface CodeBlock {
  /** The info string's first word, lower-cased: `ts`, `sh`, ... ('' when there is none). */
  readonly language: string;
  /** 1-based line number of the block's first line of code (the line after the opening fence). */
  readonly firstLine: number;
  /** The code, with the fence's indentation removed. */
  readonly code: string;
  /** Context files named by a marker on the line before the fence, relative to the repository. */
  readonly context: readonly string[];
  /** 1-based line number of that marker, when there is one. */
  readonly markerLine: number | undefined;
}

export interface MarkdownBlocks {
  readonly blocks: CodeBlock[];
  /** Markers not directly followed by a code block (one blank line allowed): a mistake worth failing on. */
  readonly strayMarkers: number[];
}

export function markdownCodeBlocks(markdown: string): MarkdownBlocks {
  const lines = markdown.split('\n');
  const blocks: CodeBlock[] = [];
  const markers = new Map<number, string[]>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const marker = CONTEXT_MARKER.exec(line);
    if (marker) {
      markers.set(
        i,
        (marker[1] as string).split(/[\s,]+/).filter((file) => file !== ''),
      );
      continue;
    }
    const opening = OPENING_FENCE.exec(line);
    if (!opening) continue;
    const indent = (opening[1] as string).length;
    const fence = opening[2] as string;
    const closing = new RegExp(`^\\s*${fence[0] === '`' ? '`' : '~'}{${fence.length},}\\s*$`);
    const code: string[] = [];
    let end = i + 1;
    while (end < lines.length && !closing.test(lines[end] as string)) {
      code.push(stripIndent(lines[end] as string, indent));
      end++;
    }
    let markerAt = i - 1;
    if (markerAt >= 0 && (lines[markerAt] as string).trim() === '' && markers.has(markerAt - 1)) markerAt--;
    const context = markers.get(markerAt);
    if (context) markers.delete(markerAt);
    blocks.push({
      language: (opening[3] as string).toLowerCase(),
      firstLine: i + 2,
      code: code.join('\n'),
      context: context ?? [],
      markerLine: context ? markerAt + 1 : undefined,
    });
    i = end;
  }
  return { blocks, strayMarkers: [...markers.keys()].map((index) => index + 1) };
}

/** Removes up to `indent` leading spaces, as CommonMark does for the lines of an indented fence. */
function stripIndent(line: string, indent: number): string {
  let removed = 0;
  while (removed < indent && line[removed] === ' ') removed++;
  return line.slice(removed);
}
