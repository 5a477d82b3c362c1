// firstKey(): the key a raw command of RedisStore's is routed by, for a Redis Cluster client's sendCommand (node-redis's takes it first).

/** Commands whose keys follow a key count: `EVALSHA sha numkeys key...`. */
const KEY_COUNTED = new Set(['EVAL', 'EVALSHA', 'EVAL_RO', 'EVALSHA_RO', 'FCALL', 'FCALL_RO']);
/** Commands kana-meter sends that take no key: any node may answer them. */
const KEYLESS = new Set(['CONFIG', 'INFO', 'PING', 'TIME', 'SCRIPT', 'CLUSTER', 'COMMAND', 'HELLO']);

/**
 * The first key of a command as kana-meter sends it (`['EVALSHA', sha, '1', key, ...]`,
 * `['SET', key, ...]`), or undefined for a command without one (`CONFIG GET`): what a Redis Cluster
 * client routes it by. Every key one of kana-meter's scripts touches shares a hash tag, so the
 * first key is the slot of all of them.
 * @example
 * import { createCluster } from 'redis';
 * const cluster = createCluster({ rootNodes: [{ url: 'redis://10.0.0.1:6379' }] });
 * await cluster.connect();
 * new RedisStore({ sendCommand: (...args: string[]) => cluster.sendCommand(firstKey(args), false, args) });
 */
export function firstKey(args: readonly string[]): string | undefined {
  const command = (args[0] ?? '').toUpperCase();
  if (KEY_COUNTED.has(command)) return Number(args[2]) > 0 ? args[3] : undefined;
  if (KEYLESS.has(command)) return undefined;
  return args[1];
}
