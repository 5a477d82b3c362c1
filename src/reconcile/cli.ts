// kana-meter: the package's command line; `kana-meter reconcile` compares audit trails with Kana's usage.

import { parseArgs } from 'node:util';
import { KanaError } from '../config/errors.js';
import { DEFAULT_ENDPOINT, KanaClient } from '../kana/client.js';
import { AuditReadError, readAudit } from './audit-reader.js';
import { ReconcileKanaError, type ReconcileRow, reconcile } from './reconcile.js';

const NAME = 'kana-meter';
const DEFAULT_RATE = 5;

const USAGE = `Usage: ${NAME} reconcile --audit <file|folder> [--audit ...] [options]

Compares the usage an audit trail (kanaMeter's \`audit\` option) says was billed with what Kana
recorded, per user and feature, over each pair's current Kana period (from showUsage).

  audited    units the trail's usage lines add up to in the period, in flight excluded
  kana       Kana's \`used\` for the same period
  drift      audited - kana
  in flight  units captured and not delivered yet per the trail's delivery lines (waiting,
             retried, or kept in a spool): shown apart, never counted as drift

Options:
  -a, --audit <path>     an audit file (its rotated files path.1, path.2, ... are read too) or a
                         folder (every *.jsonl and *.jsonl.<n> in it); repeatable; paths may also
                         be given without --audit
      --json             print { rows: [{ userId, featureId, audited, kana, drift, inFlight,
                         periodStart, periodEnd }], skipped: [{ file, line }], files } instead
      --tolerance <n>    a row agrees when |drift| <= n (default: 0)
      --rate <n>         Kana calls per second at most; each asks up to 20 pairs (default: ${DEFAULT_RATE})
  -h, --help             print this help and exit

Environment:
  KANA_API_KEY           your Kana private key (required; never printed)
  KANA_ENDPOINT          Kana's GraphQL endpoint (default: ${DEFAULT_ENDPOINT})

A line that is not whole (a crash mid-write leaves a torn last line) is skipped and reported,
never counted. On a terminal, a progress line shows the pairs asked so far.

Exit status: 0 every row agrees; 1 some row drifts; 2 a usage error, an unreadable trail, or
Kana could not be asked (one line on stderr says which).

Example:
  KANA_API_KEY=prv_live_... ${NAME} reconcile --audit /var/log/my-api/
`;

class UsageError extends Error {}

interface ReconcileArgs {
  paths: string[];
  json: boolean;
  tolerance: number;
  rate: number;
}

function nonNegative(name: string, value: string | undefined, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (value.trim() === '' || !Number.isFinite(number) || number < 0 || (integer && !Number.isInteger(number))) {
    throw new UsageError(`--${name} must be a ${integer ? 'whole ' : ''}number >= 0, got ${JSON.stringify(value)}`);
  }
  return number;
}

function parseReconcileArgs(argv: string[]): ReconcileArgs | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      audit: { type: 'string', short: 'a', multiple: true },
      json: { type: 'boolean' },
      tolerance: { type: 'string' },
      rate: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const paths = [...(values.audit ?? []), ...positionals];
  if (paths.length === 0) throw new UsageError('name an audit file or folder: --audit <path>');
  const rate = nonNegative('rate', values.rate, DEFAULT_RATE, false);
  if (rate === 0) throw new UsageError('--rate must be more than 0');
  return { paths, json: values.json === true, tolerance: nonNegative('tolerance', values.tolerance, 0, true), rate };
}

function table(rows: readonly ReconcileRow[]): string {
  const header = ['user', 'feature', 'audited', 'kana', 'drift', 'in flight'];
  const cells = rows.map((row) => [
    row.userId,
    row.featureId,
    String(row.audited),
    String(row.kana),
    row.drift > 0 ? `+${row.drift}` : String(row.drift),
    String(row.inFlight),
  ]);
  const widths = header.map((title, i) => Math.max(title.length, ...cells.map((line) => (line[i] as string).length)));
  const format = (line: string[]) =>
    line.map((cell, i) => (i < 2 ? cell.padEnd(widths[i] as number) : cell.padStart(widths[i] as number))).join('  ');
  return [format(header), ...cells.map(format)].join('\n');
}

async function runReconcile(argv: string[]): Promise<number> {
  const args = parseReconcileArgs(argv);
  if (args === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const apiKey = process.env.KANA_API_KEY;
  if (!apiKey) throw new UsageError('KANA_API_KEY is not set: export your Kana private key');
  let client: KanaClient;
  try {
    client = new KanaClient({ apiKey, endpoint: process.env.KANA_ENDPOINT || undefined });
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/^kana-meter: /, ''));
  }
  const contents = readAudit(args.paths);
  const progress = process.stderr.isTTY === true && !args.json;
  const rows = await reconcile(contents, client, {
    callsPerSecond: args.rate,
    onProgress: progress
      ? (done, total) => process.stderr.write(`\rasked Kana for ${done}/${total} (user, feature) pairs`)
      : undefined,
  });
  if (progress) process.stderr.write('\r\x1b[K');
  const drifting = rows.filter((row) => Math.abs(row.drift) > args.tolerance);
  if (args.json) {
    process.stdout.write(`${JSON.stringify({ rows, skipped: contents.skipped, files: contents.files }, null, 2)}\n`);
  } else {
    const lines = [table(rows), ''];
    const inFlight = rows.reduce((sum, row) => sum + row.inFlight, 0);
    if (inFlight > 0) lines.push(`${inFlight} unit(s) still in flight (not delivered yet): not counted as drift.`);
    for (const { file, line } of contents.skipped) {
      lines.push(`skipped ${file}:${line}: not a whole audit line (a write cut short by a crash?); not counted.`);
    }
    lines.push(
      drifting.length === 0
        ? `${rows.length} row(s) agree${args.tolerance > 0 ? ` within ${args.tolerance}` : ''}.`
        : `${drifting.length} of ${rows.length} row(s) drift${args.tolerance > 0 ? ` by more than ${args.tolerance}` : ''}.`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return drifting.length === 0 ? 0 : 1;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    }
    if (command !== 'reconcile') throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    return await runReconcile(rest);
  } catch (error) {
    if (error instanceof UsageError || (error instanceof TypeError && 'code' in error)) {
      process.stderr.write(`${NAME}: ${error.message} (see ${NAME} reconcile --help)\n`);
    } else if (error instanceof AuditReadError || error instanceof ReconcileKanaError) {
      process.stderr.write(`${NAME} reconcile: ${error.message}\n`);
    } else if (error instanceof KanaError) {
      process.stderr.write(`${NAME} reconcile: could not ask Kana (${error.code}): ${error.message}\n`);
    } else {
      process.stderr.write(`${NAME} reconcile: ${error instanceof Error ? error.message : String(error)}\n`);
    }
    return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
