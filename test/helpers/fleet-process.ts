// One fleet instance (test/fixtures/fleet-instance.ts) in a process of its own, started against the emulator and a Redis; ready once it reports its port.

import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FIXTURE = fileURLToPath(new URL('../fixtures/fleet-instance.ts', import.meta.url));

export interface FleetProcess {
  readonly child: ChildProcess;
  readonly port: number;
  readonly exited: Promise<void>;
}

/** Forks the fixture with `env` added to this process's (KANA_ENDPOINT, KANA_API_KEY, REDIS_URL, REDIS_CLIENT, ...). */
export async function startFleetProcess(env: Record<string, string>): Promise<FleetProcess> {
  const child = fork(FIXTURE, [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    env: { ...process.env, ...env },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (message: { port: number }) => resolve(message.port));
    void exited.then(() => reject(new Error('a fleet instance exited before it was ready')));
  });
  return { child, port, exited };
}
