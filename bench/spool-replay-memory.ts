// Starting on a large spill file: time to start and memory kept are bounded by maxPendingKeys, not by the file.
// Usage: node --expose-gc --import tsx bench/spool-replay-memory.ts [megabytes] [distinctUsers] [maxPendingKeys]
// Prints one JSON line: the file's size, kanaMeter()'s start time, heap growth after GC, peak RSS, what memory holds.

import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kanaMeter } from 'kana-meter';

const [megabytes = '540', distinctUsers = '1000000', maxPendingKeys = '50000'] = process.argv.slice(2);
const mb = (bytes: number) => Number((bytes / 2 ** 20).toFixed(2));

const directory = mkdtempSync(join(tmpdir(), 'kana-spool-replay-'));
const path = join(directory, 'usage.spool');

/** A spill file of about `megabytes` MB: one record per line, users cycling over `distinctUsers`, written in 1 MB chunks. */
function writeSpillFile(): number {
  const fd = openSync(`${path}.spill`, 'wx', 0o600);
  const target = Number(megabytes) * 2 ** 20;
  // The 0.1 header, which every version reads.
  let size = writeSync(fd, '{"kanaMeterSpool":1}\n');
  let user = 0;
  while (size < target) {
    const lines: string[] = [];
    for (let i = 0; i < 16_000; i++) {
      lines.push(`{"u":"user-${user}","f":"api-calls","d":1,"n":1,"t":1700000000000}\n`);
      user = (user + 1) % Number(distinctUsers);
    }
    size += writeSync(fd, lines.join(''));
  }
  closeSync(fd);
  return size;
}

function heapUsed(): number {
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage().heapUsed;
}

const fileBytes = writeSpillFile();
const before = heapUsed();
const started = performance.now();
const kana = kanaMeter({
  apiKey: 'prv_test_unreachable',
  endpoint: 'http://127.0.0.1:9/graphql', // discard port: Kana is down, nothing is sent
  userId: () => undefined,
  maxPendingKeys: Number(maxPendingKeys),
  spool: { path },
  logger: { error() {}, warn() {}, info() {}, debug() {} },
});
const startMs = performance.now() - started;
const after = heapUsed();
const { pendingKeys, pending } = kana.stats();
await kana.close({ timeoutMs: 0 });
console.log(
  JSON.stringify({
    fileMb: mb(fileBytes),
    startMs: Math.round(startMs),
    heapUsedGrowthMb: mb(after - before),
    maxRssMb: mb(process.resourceUsage().maxRSS * 1024),
    pendingKeys,
    pending,
    spillMbAfter: mb(statSync(`${path}.spill`).size),
  }),
);
rmSync(directory, { recursive: true, force: true });
