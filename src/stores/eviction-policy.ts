// At start, RedisStore reads Redis's maxmemory-policy and warns once when Redis may evict its keys: an evicted ledger is a restart mid-period.

import { logCodes } from '../config/errors.js';
import type { KanaLogger } from '../config/logger.js';
import { withTimeLimit } from '../config/time-limit.js';
import type { SendCommand } from './redis-commands.js';
import { normaliseReply } from './redis-reply.js';

export interface EvictionPolicyCheck {
  sendCommand: SendCommand;
  timeoutMs: number;
  logger: KanaLogger;
}

/**
 * Whether a `maxmemory-policy` lets Redis evict RedisStore's keys: `allkeys-*` evict any key, and
 * `volatile-*` any key with a TTL, which every key of RedisStore has. Only `noeviction` keeps them
 * (Redis then refuses writes when full: requests are decided per instance, nothing is lost silently).
 */
export function policyEvicts(policy: string): boolean {
  return policy !== 'noeviction';
}

/**
 * Sends `CONFIG GET maxmemory-policy` once, outside the store's command layer: a managed Redis that
 * refuses CONFIG (NOPERM, renamed command) must not count as Redis being unreachable. A refusal or
 * no answer is a debug line; a policy that may evict, one warning. Never rejects.
 */
export async function checkEvictionPolicy({ sendCommand, timeoutMs, logger }: EvictionPolicyCheck): Promise<void> {
  try {
    const sent = Promise.resolve().then(() => sendCommand('CONFIG', 'GET', 'maxmemory-policy'));
    const reply = await withTimeLimit(sent, timeoutMs, 'CONFIG GET');
    const fields = normaliseReply(reply, 'CONFIG GET');
    const at = Array.isArray(fields) ? fields.indexOf('maxmemory-policy') : -1;
    const policy = at >= 0 && Array.isArray(fields) ? fields[at + 1] : undefined;
    if (typeof policy !== 'string') {
      logger.debug({ reply: fields }, 'kana-meter: Redis did not say its maxmemory-policy');
    } else if (policyEvicts(policy)) {
      logger.warn(
        { code: logCodes.storeEviction, policy },
        `kana-meter: Redis's maxmemory-policy is ${policy}: when full, it may evict RedisStore's keys (each has a TTL), which loses allowances as a restart does; set maxmemory-policy noeviction`,
      );
    }
  } catch (error) {
    logger.debug(
      { err: { message: error instanceof Error ? error.message : String(error) } },
      "kana-meter: could not read Redis's maxmemory-policy (CONFIG GET refused or unanswered); eviction not checked",
    );
  }
}
