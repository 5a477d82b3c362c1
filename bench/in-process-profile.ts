// The in-process bench's profile of one variant: V8's CPU profile of its requests alone, written to a file, and its
// top functions by self time, mapped back to src/ through the build's source maps.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { SourceMap } from 'node:module';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
}

/** Runs `work` under V8's sampling profiler; returns the profile (the .cpuprofile format Chrome DevTools opens). */
export async function profile(work: () => Promise<void>): Promise<{ nodes: ProfileNode[] }> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  await work();
  const { profile: result } = await session.post('Profiler.stop');
  session.disconnect();
  return result as unknown as { nodes: ProfileNode[] };
}

const maps = new Map<string, SourceMap | undefined>();

/**
 * Where a function comes from: a built file's source through its source map (a dependency's own src/, say), else
 * the file itself. The bench loads kana-meter's src/ through tsx (tsconfig.json's paths), which reports its files'
 * functions at line 0: those are named by file alone.
 */
function origin(url: string, line: number, column: number): string {
  if (!url.startsWith('file://')) return url || '(native)';
  const file = fileURLToPath(url);
  if (!maps.has(file)) {
    const mapFile = `${file}.map`;
    maps.set(file, existsSync(mapFile) ? new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8'))) : undefined);
  }
  const entry = maps.get(file)?.findEntry(line, column) as { originalSource?: string };
  if (entry?.originalSource) {
    const source = entry.originalSource.startsWith('file://')
      ? fileURLToPath(entry.originalSource)
      : resolve(dirname(file), entry.originalSource);
    return relative(process.cwd(), source);
  }
  return line > 0 ? `${relative(process.cwd(), file)}:${line + 1}` : relative(process.cwd(), file);
}

/** Writes the profile to `file` and prints its `top` functions by self time, as a share of all samples, then src/'s. */
export function reportProfile(result: { nodes: ProfileNode[] }, file: string, top = 25): void {
  writeFileSync(file, JSON.stringify(result));
  const selfHits = new Map<string, number>();
  let total = 0;
  for (const node of result.nodes) {
    const hits = node.hitCount ?? 0;
    total += hits;
    const { functionName, url, lineNumber, columnNumber } = node.callFrame;
    const key = `${functionName || '(anonymous)'}  ${origin(url, lineNumber, columnNumber)}`;
    selfHits.set(key, (selfHits.get(key) ?? 0) + hits);
  }
  console.log(`\nProfile written to ${file} (open it in Chrome DevTools); top ${top} by self time:\n`);
  console.log('| self | function  where |');
  console.log('|---|---|');
  const sorted = [...selfHits].sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [key, hits] of sorted) console.log(`| ${((hits / total) * 100).toFixed(1)}% | ${key} |`);
  const ours = [...selfHits].filter(([key]) => key.includes('  src/')).sort((a, b) => b[1] - a[1]);
  const oursHits = ours.reduce((sum, [, hits]) => sum + hits, 0);
  console.log(
    `\nkana-meter's own functions (src/): ${((oursHits / total) * 100).toFixed(1)}% of the samples; the top ${top}:\n`,
  );
  console.log('| self | function  where |');
  console.log('|---|---|');
  for (const [key, hits] of ours.slice(0, top)) console.log(`| ${((hits / total) * 100).toFixed(2)}% | ${key} |`);
}
