// A queue worker: holds the job's units with kana.hold() before it runs, commits the units it used once done.
// Jobs come as JSON lines on stdin, a stand-in for your queue; with BullMQ the loop body goes in
// new Worker('exports', async (job) => { ... }). Stops at the end of input or on SIGTERM, after close().
// Run: KANA_API_KEY=prv_... node --import tsx queue-worker.ts < jobs.jsonl (KANA_ENDPOINT=... for `npx kana-emulator`).

import { createInterface } from 'node:readline';
import { kanaMeter } from 'kana-meter';

interface ExportJob {
  id: string;
  userId: string;
  rows: number;
}

const kana = kanaMeter({
  apiKey: process.env.KANA_API_KEY,
  endpoint: process.env.KANA_ENDPOINT,
  userId: () => undefined, // no HTTP requests here: all the usage comes from record()
});

/** A stand-in for the work: exports the rows, resolves with how many were exported. */
async function runExport(job: ExportJob): Promise<number> {
  return job.rows;
}

await kana.ready(); // Kana accepts the key: a wrong one stops here, before any job is taken
const jobs = createInterface({ input: process.stdin });
process.once('SIGTERM', () => jobs.close()); // finish the job in hand, take no other

for await (const line of jobs) {
  const job = JSON.parse(line) as ExportJob;
  // The same cache and rules as enforced requests. The rows stay held, on every worker and API instance
  // sharing the store, until the job commits or releases them: jobs running at once cannot all pass on
  // the last units. (check() only looks; record() alone bills usage already done.)
  const hold = await kana.hold(job.userId, 'exports', job.rows);
  if (!hold.allowed) {
    console.log(`job ${job.id}: refused (${hold.decision.reason})`);
    continue;
  }
  try {
    const rows = await runExport(job);
    // Bills the rows exported (queued, coalesced and retried like the middleware's usage); the rest comes back.
    hold.commit(rows);
    console.log(`job ${job.id}: ${rows} rows exported`);
  } finally {
    hold.release(); // a job that threw bills nothing; after commit(), this does nothing
  }
}
await kana.close(); // delivers the usage still waiting
