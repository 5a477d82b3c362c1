// kana-emulator: runs the Kana emulator on its own, for an app in development or a manual test.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { TEST_KEY } from './api-keys.js';
import { isLoopbackHost } from './hosts.js';
import { EmulatorSeedError, type KanaEmulator, startKanaEmulator } from './index.js';
import type { EmulatorSeed } from './seed.js';
import { readSeedFile, SeedFileError } from './seed-file.js';

const NAME = 'kana-emulator';
const DEFAULT_PORT = 4000;
/** How many ports after the default are tried when it is taken, before any free port. */
const NEXT_PORTS_TRIED = 20;
const DEFAULT_HOST = '127.0.0.1';

const USAGE = `Usage: ${NAME} [options]

Runs a local Kana emulator: Kana's GraphQL API on /graphql, a usage dashboard on /.

Options:
  -p, --port <port>     port to listen on, 0 for any free one
                        (default: ${DEFAULT_PORT}, or the next free one if it is taken)
      --host <host>     address to bind (default: ${DEFAULT_HOST}, this machine only)
  -s, --seed <file>     JSON file of users, features, packages, subscriptions and usage
  -k, --api-key <key>   the key clients must send: prv_test_ then letters and digits
                        (default: a new random key at each start)
  -h, --help            print this help and exit
  -v, --version         print the version and exit

Example:
  ${NAME} --seed seed.json
  KANA_API_KEY=<the printed key> KANA_ENDPOINT=http://127.0.0.1:${DEFAULT_PORT}/graphql npm start
`;

/** A mistake on the command line: exit code 2, with a pointer to --help. */
class UsageError extends Error {}

interface CliOptions {
  port: number;
  /** --port was given: a port in use is an error, not a reason to take the next one. */
  portGiven: boolean;
  host: string;
  seedPath: string | undefined;
  apiKey: string | undefined;
}

function version(): string {
  // ../../package.json from both src/emulator/cli.ts and dist/emulator/cli.js.
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function parsePort(value: string): number {
  const port = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw new UsageError(`--port must be an integer from 0 to 65535, got ${JSON.stringify(value)}`);
  }
  return port;
}

const OPTIONS = {
  port: { type: 'string', short: 'p' },
  host: { type: 'string' },
  seed: { type: 'string', short: 's' },
  'api-key': { type: 'string', short: 'k' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;

/** The options, or 'help'/'version'; throws UsageError for anything it cannot use. */
function parseCommandLine(args: string[]): CliOptions | 'help' | 'version' {
  let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>['values'];
  try {
    ({ values } = parseArgs({ args, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (error) {
    // parseArgs' messages are clear up to their first sentence; the rest is advice about '--'.
    const message = (error as Error).message.split('. ')[0] ?? String(error);
    throw new UsageError(message);
  }
  if (values.help === true) return 'help';
  if (values.version === true) return 'version';
  const host = values.host ?? DEFAULT_HOST;
  if (host.trim() === '') throw new UsageError('--host must not be empty');
  const apiKey = values['api-key'];
  // Only test keys: the emulator prints its key, and a prv_live_ key may be a real one.
  // The value is never echoed.
  if (apiKey !== undefined && !TEST_KEY.test(apiKey)) {
    throw new UsageError('--api-key must be a Kana test key: prv_test_ followed by letters and digits');
  }
  if (values.seed === '') throw new UsageError('--seed needs a file path');
  return {
    port: values.port === undefined ? DEFAULT_PORT : parsePort(values.port),
    portGiven: values.port !== undefined,
    host,
    seedPath: values.seed,
    apiKey,
  };
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function seedSummary(seed: EmulatorSeed): string {
  return [
    plural(seed.users?.length ?? 0, 'user'),
    plural(seed.features?.length ?? 0, 'feature'),
    plural(seed.packages?.length ?? 0, 'package'),
    plural(seed.subscriptions?.length ?? 0, 'subscription'),
  ].join(', ');
}

/** Why the emulator could not start, in one line, or null for an error that is a bug. */
function startFailure(error: unknown, options: CliOptions): string | null {
  if (error instanceof EmulatorSeedError) {
    return `the seed file ${options.seedPath} is invalid at ${error.path}: ${error.problem}`;
  }
  const code = (error as NodeJS.ErrnoException).code;
  const where = `${options.host}:${options.port}`;
  if (code === 'EADDRINUSE') return `cannot listen on ${where}: the port is in use (choose another with --port)`;
  if (code === 'EACCES') return `cannot listen on ${where}: permission denied (choose a port above 1023)`;
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return `cannot listen on ${where}: no such address on this machine`;
  }
  return null;
}

/**
 * Starts the emulator on the port asked for. When that is the default port and something else
 * holds it (another emulator, a dev server), the next free one is taken instead, and said.
 */
async function startOnFreePort(options: CliOptions, seed: EmulatorSeed | undefined): Promise<KanaEmulator> {
  const { host, apiKey } = options;
  for (let port = options.port; ; port = port - options.port < NEXT_PORTS_TRIED ? port + 1 : 0) {
    try {
      const emulator = await startKanaEmulator({ port, host, apiKey, seed });
      if (port !== options.port) {
        process.stderr.write(
          `${NAME}: port ${options.port} is in use: listening on ${emulator.port} instead (choose one with --port)\n`,
        );
      }
      return emulator;
    } catch (error) {
      const inUse = (error as NodeJS.ErrnoException).code === 'EADDRINUSE';
      if (!inUse || options.portGiven || port === 0) throw error;
    }
  }
}

function printStarted(emulator: KanaEmulator, options: CliOptions, seed: EmulatorSeed | undefined): void {
  const loopback = isLoopbackHost(options.host);
  const lines = [
    `Kana emulator ${version()} listening on ${options.host}:${emulator.port}${loopback ? ' (this machine only)' : ''}`,
    '',
    `  GraphQL API  ${emulator.url}`,
    `  Dashboard    ${emulator.dashboardUrl}`,
    `  API key      ${emulator.apiKey}`,
  ];
  if (seed !== undefined) lines.push(`  Seed         ${options.seedPath}: ${seedSummary(seed)}`);
  lines.push(
    '',
    'Point your app at it:',
    `  KANA_API_KEY=${emulator.apiKey} KANA_ENDPOINT=${emulator.url}`,
    '',
    'Press Ctrl-C to stop.',
  );
  process.stdout.write(`${lines.join('\n')}\n`);
  if (!loopback) {
    process.stderr.write(
      `Warning: listening on ${options.host}, beyond this machine: anyone who can reach it can call the ` +
        'emulator with the key printed above, and read the dashboard with it.\n',
    );
  }
}

function fail(message: string, exitCode: number): void {
  process.stderr.write(`${NAME}: ${message}\n`);
  process.exitCode = exitCode;
}

async function main(args: string[]): Promise<void> {
  let options: CliOptions;
  try {
    const parsed = parseCommandLine(args);
    if (parsed === 'help') {
      process.stdout.write(USAGE);
      return;
    }
    if (parsed === 'version') {
      process.stdout.write(`${version()}\n`);
      return;
    }
    options = parsed;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    fail(`${error.message} (see ${NAME} --help)`, 2);
    return;
  }

  let seed: EmulatorSeed | undefined;
  let emulator: KanaEmulator;
  try {
    if (options.seedPath !== undefined) seed = await readSeedFile(options.seedPath);
    emulator = await startOnFreePort(options, seed);
  } catch (error) {
    const message = error instanceof SeedFileError ? error.message : startFailure(error, options);
    if (message === null) throw error;
    fail(message, 1);
    return;
  }

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      // A second Ctrl-C: do not wait for open connections.
      process.exit(130);
    }
    stopping = true;
    process.stderr.write(`Received ${signal}: stopping the Kana emulator.\n`);
    // Once the server is closed nothing holds the event loop, and the process exits with 0.
    emulator.close().catch((error: unknown) => {
      fail(`error while stopping: ${(error as Error).message}`, 1);
    });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  printStarted(emulator, options, seed);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(
    `${NAME}: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : error}\n`,
  );
  process.exitCode = 1;
});
