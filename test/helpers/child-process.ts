// A program run in its own Node process, as its users run it: its output, a wait for a line it prints, its exit; killed after the test if still running.

import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';

export const root = fileURLToPath(new URL('../..', import.meta.url));

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in stdout; rejects if the process exits first. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray>;
  readonly exited: Promise<Exited>;
}

const running = new Set<ChildProcess>();
afterEach(() => {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
});

/**
 * Runs `node [nodeArgs...] file [args...]` in the repository (Node itself, not a wrapper, so signals
 * reach the program). `env` is added to a copy of this process's environment without Kana's
 * variables; a variable set to undefined is removed.
 */
export function runNode(
  file: string,
  options: { args?: string[]; nodeArgs?: string[]; env?: Record<string, string | undefined>; cwd?: string } = {},
): RunningProcess {
  const env: Record<string, string | undefined> = { ...process.env, KANA_API_KEY: undefined, KANA_ENDPOINT: undefined };
  for (const [name, value] of Object.entries(options.env ?? {})) env[name] = value;
  for (const name of Object.keys(env)) if (env[name] === undefined) delete env[name];
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), file, ...(options.args ?? [])], {
    cwd: options.cwd ?? root,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<Exited>((resolve) => {
    child.once('close', (code, signal) => {
      running.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(stdout);
          if (match) {
            child.stdout?.off('data', check);
            resolve(match);
          }
        };
        child.stdout?.on('data', check);
        check();
        void exited.then((result) =>
          reject(
            new Error(`exited with ${result.code ?? result.signal} before printing ${pattern}:\n${stdout}${stderr}`),
          ),
        );
      }),
  };
}

/** Runs a TypeScript file from source through tsx, as a loader. */
export function runTypeScript(file: string, options: Parameters<typeof runNode>[1] = {}): RunningProcess {
  return runNode(file, { ...options, nodeArgs: ['--import', 'tsx', ...(options.nodeArgs ?? [])] });
}
