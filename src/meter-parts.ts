// One kanaMeter()'s pieces, built from its parsed config: delivery (Kana client, queue, audit trail, telemetry), the store, enforcement, and the stages a request passes.

import { AuditTrail } from './audit/audit-trail.js';
import { logCodes } from './config/errors.js';
import { guardObserveKanaCall } from './config/metrics.js';
import { isCleartextRemote } from './config/option-checks.js';
import { type Counter, createCounters } from './config/stats.js';
import { resolveTelemetry } from './config/telemetry.js';
import { DeliveryQueue } from './delivery/queue.js';
import { createEnforcement } from './enforcement/enforcement.js';
import { createGate } from './enforcement/gate.js';
import { storeTimeoutOf, withStoreTimeLimit } from './enforcement/store-time-limit.js';
import { KanaClient } from './kana/client.js';
import { KeyStatus } from './kana/key-status.js';
import { IdempotentReplay } from './metering/idempotent-replay.js';
import { RequestUsages } from './metering/request-usage.js';
import { UsageCapture } from './metering/usage-capture.js';
import { UsageIntake } from './metering/usage-intake.js';
import { userIdFailureReporter } from './metering/user-id.js';
import type { KanaMeterConfig } from './options.js';
import { MemoryStore } from './stores/memory-store.js';
import type { KanaMeterStore } from './stores/store.js';

export type MeterParts = ReturnType<typeof assembleMeter>;

export function assembleMeter(config: KanaMeterConfig) {
  const counters = createCounters();
  const delivery = openDelivery(config, counters);
  const { keyStatus, queue, audit, telemetry } = delivery;
  const givenStore = config.store ?? new MemoryStore();
  // A store already bound to another kanaMeter() throws here, before anything is started.
  givenStore.bind({ logger: config.logger });
  // Every call to a store across the network gets a time limit (MemoryStore answers at once).
  const store =
    givenStore instanceof MemoryStore
      ? givenStore
      : withStoreTimeLimit(givenStore, { logger: config.logger, counters });
  const enforcement = createEnforcement({
    config,
    client: delivery.client,
    store,
    counters,
    queue,
    observeKanaCall: delivery.observeKanaCall,
    tracing: telemetry.tracing,
  });
  /** This kanaMeter's own per-request state: only its stages and listeners read it. */
  const usages = new RequestUsages();
  const userIdFailed = userIdFailureReporter(config.logger, counters);
  const intake = new UsageIntake(queue, (...usage) => enforcement.countUsage(...usage), audit);
  const capture = new UsageCapture({ config, counters, usages, intake, userIdFailed });
  const { gate } = createGate({
    config,
    counters,
    cache: enforcement.entitlements,
    usages,
    leases: enforcement.leases,
    lookUpMissed: (userId, featureId, delta) => enforcement.lookup.missed(userId, featureId, delta),
    userIdFailed,
    keyStatus,
    gateTimeoutMs: 3 * config.checkTimeoutMs + storeTimeoutOf(givenStore),
    telemetry,
  });
  const replay = openIdempotentReplay(config, store, counters, userIdFailed);
  return { config, counters, store, keyStatus, queue, audit, enforcement, usages, intake, capture, gate, replay };
}

/** The Kana client, the delivery queue with its audit trail and telemetry, and the key's status. */
function openDelivery(config: KanaMeterConfig, counters: Record<Counter, number>) {
  const { logger } = config;
  const client = config.client instanceof KanaClient ? config.client : new KanaClient(config.client);
  if (isCleartextRemote(client.endpoint)) {
    logger.warn(
      { code: logCodes.insecureEndpoint, host: new URL(client.endpoint).host },
      'kana-meter: the Kana endpoint is plain http:// to another machine: the API key travels in cleartext. Use https://',
    );
  }
  const observeKanaCall = config.metrics && guardObserveKanaCall(config.metrics, counters, logger);
  // Told of every Kana call's outcome for the key: stats().configError, ready(), the per-minute error line.
  const keyStatus = new KeyStatus({ client, logger, onConfigError: config.onConfigError });
  const queue = new DeliveryQueue(client, config, counters, observeKanaCall);
  const audit = config.audit && new AuditTrail(config.audit, { logger, counters });
  if (audit) queue.onOutcome((outcome) => audit.delivery(outcome));
  const telemetry = resolveTelemetry(config.metrics, counters, logger);
  queue.instrument(telemetry);
  return { client, observeKanaCall, keyStatus, queue, audit, telemetry };
}

/** The Idempotency-Key stage; off: undefined, and the request path only tests it. */
function openIdempotentReplay(
  config: KanaMeterConfig,
  store: KanaMeterStore,
  counters: Record<Counter, number>,
  userIdFailed: ReturnType<typeof userIdFailureReporter>,
) {
  const { idempotencyKey } = config;
  if (!idempotencyKey) return undefined;
  return new IdempotentReplay({
    window: store.idempotencyWindow({
      ttlMs: idempotencyKey.ttlMs,
      maxKeys: idempotencyKey.maxKeys,
      maxBytes: idempotencyKey.maxBytes,
      onEvict: () => {
        counters.idempotencyEvictions++;
      },
    }),
    header: idempotencyKey.header,
    counters,
    logger: config.logger,
    getUserId: config.userId,
    userIdFailed,
    userIdTimeoutMs: config.checkTimeoutMs,
  });
}
