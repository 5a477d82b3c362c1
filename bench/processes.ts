// The bench's child processes: fork one and wait for its first message, ask it over IPC, pin it to a CPU; and a median.

import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

/** Forks a bench process and resolves with its first message: `listening`, with its address. */
export function start(
  script: string,
  args: string[],
): Promise<{ child: ChildProcess; ready: Record<string, unknown> }> {
  const child = fork(fileURLToPath(new URL(script, import.meta.url)), args, {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', (ready: Record<string, unknown>) => resolve({ child, ready }));
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code}`)));
  });
}

export function ask<T>(child: ChildProcess, type: string, reply: string): Promise<T> {
  return new Promise((resolve) => {
    const onMessage = (message: { type: string } & T) => {
      if (message.type !== reply) return;
      child.off('message', onMessage);
      resolve(message);
    };
    child.on('message', onMessage);
    child.send({ type });
  });
}

export const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
};

/**
 * On a machine with 2+ CPUs, pin the load generator (and Kana) to CPU 0 and the servers to CPU 1,
 * so a server gets a core of its own and the ratios compare server costs, not scheduling luck.
 */
export function pin(pid: number | undefined, cpu: number): boolean {
  if (pid === undefined || cpus().length < 2) return false;
  try {
    // -a: every thread, V8's GC and compiler helpers included (else they run on the load generator's CPU).
    execFileSync('taskset', ['-apc', String(cpu), String(pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false; // no taskset: run unpinned
  }
}
