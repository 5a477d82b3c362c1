// Runs a recipe of example-app/recipes/ in its own process against the test's emulator, as its comment says to run it.

import type { KanaEmulator } from '../../src/emulator/index.js';
import { type RunningProcess, runNode, runTypeScript } from '../helpers/child-process.js';

export interface RunningRecipe extends RunningProcess {
  /** http://127.0.0.1:<the port it printed> */
  readonly url: string;
  /** SIGTERM, as Kubernetes or Ctrl-C would; resolves once it has exited. */
  stop(): Promise<Awaited<RunningProcess['exited']>>;
}

/**
 * Starts `example-app/recipes/<file>` (TypeScript through tsx; `path` runs another file with node)
 * with KANA_API_KEY and KANA_ENDPOINT aimed at the emulator and PORT=0, and waits for the port it listens on.
 */
export async function startRecipe(
  file: string,
  emulator: KanaEmulator,
  options: { env?: Record<string, string | undefined>; path?: string; cwd?: string } = {},
): Promise<RunningRecipe> {
  const env = { KANA_API_KEY: emulator.apiKey, KANA_ENDPOINT: emulator.url, PORT: '0', ...options.env };
  const recipe = options.path
    ? runNode(options.path, { env, cwd: options.cwd })
    : runTypeScript(`example-app/recipes/${file}`, { env });
  const [, port] = await recipe.waitFor(/^listening on port (\d+)$/m);
  return {
    ...recipe,
    url: `http://127.0.0.1:${port}`,
    stop: () => {
      recipe.child.kill('SIGTERM');
      return recipe.exited;
    },
  };
}

/** The header a recipe's authentication knows `userId` by: its demo API key (`demo-key-u1` for u1). */
export function authAs(userId: string): { authorization: string } {
  return { authorization: `Bearer demo-key-${userId}` };
}

/** `fetch` as the recipes' clients call them: authenticated as `userId` by its API key, JSON bodies. */
export function call(url: string, userId: string, body?: unknown, method = body === undefined ? 'GET' : 'POST') {
  return fetch(url, {
    method,
    headers: { ...authAs(userId), 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/**
 * Resets the emulator to user u1 on one plan: each feature consumable, with a daily limit (null:
 * unlimited), the day started an hour ago. `others` are users without a plan.
 */
export function seedPlan(emulator: KanaEmulator, limits: Record<string, number | null>, others: string[] = []): void {
  emulator.reset();
  emulator.seed({
    users: ['u1', ...others].map((id) => ({ id })),
    features: Object.keys(limits).map((id) => ({ id, type: 'CONSUMABLE' as const })),
    packages: [
      {
        id: 'plan',
        features: Object.entries(limits).map(([id, limit]) =>
          limit === null ? { id } : { id, limit, resetPeriod: 'DAY' as const },
        ),
      },
    ],
    subscriptions: [{ userId: 'u1', packageId: 'plan', startedAt: new Date(Date.now() - 3_600_000).toISOString() }],
  });
}
