// A real Redis Cluster for tests: 3 masters of Debian's redis-server on free local ports, joined with `redis-cli --cluster create`.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { type RedisServer, redisSkipReason, startRedisServer } from './redis.js';

const run = promisify(execFile);

/** Why the cluster tests skip here (as the other Redis tests: never under CI), or undefined when they run. */
export const redisClusterSkipReason: string | undefined =
  redisSkipReason ??
  (process.env.REDIS_URL ? 'Redis Cluster tests skipped: they start their own servers, not REDIS_URL' : undefined);

export interface RedisCluster {
  /** The masters, as clients are given them. */
  readonly nodes: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  /** Stops every node and removes their data dirs. Idempotent. */
  stop(): Promise<void>;
}

/** Starts 3 masters with `--cluster-enabled yes`, assigns the 16384 slots, and resolves once every node says `cluster_state:ok`. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const servers: RedisServer[] = [];
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
  };
  try {
    for (let i = 0; i < 3; i++) {
      servers.push(
        await startRedisServer({
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '5000'],
        }),
      );
    }
    const addresses = servers.map((server) => `127.0.0.1:${server.port}`);
    await run('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '0', '--cluster-yes'], {
      timeout: 30_000,
    });
    const deadline = Date.now() + 30_000;
    for (const server of servers) {
      for (;;) {
        const info = String(await server.command('CLUSTER', 'INFO'));
        if (info.includes('cluster_state:ok')) break;
        if (Date.now() > deadline) throw new Error(`Redis Cluster not ready on ${server.port}:\n${info}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { nodes: servers.map((server) => ({ host: '127.0.0.1', port: server.port })), stop };
}
