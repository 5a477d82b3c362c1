// kanaMeter()'s methods beside the middleware: usage outside a request (record, check, hold), and the controls (flush, close, stats, ready).

import type { RequestHandler } from 'express';
import { checkInteger, optionError } from './config/option-checks.js';
import type { KanaMeterStats } from './config/stats.js';
import { raceTimeout } from './config/timers.js';
import { type CloseOptions, DEFAULT_CLOSE_TIMEOUT_MS } from './delivery/queue.js';
import { fallbackDecision } from './enforcement/decisions.js';
import { createUsageHold } from './enforcement/usage-hold.js';
import { DEFAULT_READY_TIMEOUT_MS } from './kana/key-status.js';
import type { MeterParts } from './meter-parts.js';
import { parseUsageArguments } from './metering/usage-arguments.js';
import type { KanaMeter, ReadyOptions } from './middleware.js';

export type MeterControls = Omit<KanaMeter, keyof RequestHandler>;

/** The methods, with stats() bound to the `metrics` integration if there is one. */
export function meterControls({
  config,
  counters,
  store,
  keyStatus,
  queue,
  audit,
  enforcement,
  intake,
  capture,
}: MeterParts): MeterControls {
  let closing: Promise<void> | undefined;

  const controls: MeterControls = {
    record(userId, featureId, delta = 1) {
      const usage = parseUsageArguments('record', userId, featureId, delta);
      intake.take(usage.userId, usage.featureId, usage.delta, 'record');
    },
    async check(userId, featureId, delta = 1) {
      const usage = parseUsageArguments('check', userId, featureId, delta);
      const decision = await enforcement.check(usage.userId, usage.featureId, usage.delta);
      // As for enforced requests: while Kana refuses the key, onConfigError decides.
      if (keyStatus.configError === null || config.onConfigError === 'allow') return decision;
      return fallbackDecision(usage.userId, usage.featureId, usage.delta, 'deny', keyStatus.refusal);
    },
    async hold(userId, featureId, units = 1) {
      const usage = parseUsageArguments('hold', userId, featureId, units);
      const { decision, entry, held } = await enforcement.hold(usage.userId, usage.featureId, usage.delta);
      return createUsageHold(
        decision,
        () => enforcement.unhold(entry, held),
        (used) => intake.take(usage.userId, usage.featureId, used, 'hold'),
      );
    },
    async flush() {
      await capture.drain();
      await queue.flush();
      await audit?.flush();
    },
    close(closeOptions) {
      const timeoutMs = parseCloseOptions(closeOptions);
      intake.closed = true;
      closing ??= (async () => {
        const started = Date.now();
        const left = () => Math.max(0, timeoutMs - (Date.now() - started));
        enforcement.stop();
        keyStatus.close();
        // Captures already under way (async userId or delta) still make it into the final flush.
        await raceTimeout(capture.drain(), timeoutMs);
        await queue.close({ timeoutMs: left() });
        // Last: the totals include what the queue confirmed while closing; every block goes back.
        await raceTimeout(enforcement.close(), left());
        // After the queue: its outcomes at close (delivered, spooled, failed) are in the trail.
        await audit?.close();
      })();
      return closing;
    },
    stats(): KanaMeterStats {
      const storeStats = store.stats();
      return Object.freeze({
        ...counters,
        ...queue.gauges(),
        ...enforcement.gauges(),
        storeAvailable: storeStats.available,
        storeCommands: storeStats.commands,
        storeFailures: storeStats.failures,
        storeOutages: storeStats.outages,
        configError: keyStatus.configError,
      });
    },
    ready(readyOptions) {
      // A bad option throws at once, as close()'s does: a programmer error, not Kana's answer.
      return keyStatus.ready(parseReadyOptions(readyOptions));
    },
  };
  bindMetrics(config.metrics, controls.stats, queue, keyStatus);
  return controls;
}

/** Binds stats() to the `metrics` integration; if that throws, kanaMeter() throws, so nobody will close what it started. */
function bindMetrics(
  metrics: MeterParts['config']['metrics'],
  stats: () => KanaMeterStats,
  queue: MeterParts['queue'],
  keyStatus: MeterParts['keyStatus'],
): void {
  try {
    metrics?.bind(stats);
  } catch (error) {
    // Its spool is released, sending nothing.
    queue.discard();
    keyStatus.close();
    throw error;
  }
}

/** close()'s deadline in ms; a bad one throws (a programmer error, like a bad kanaMeter() option). */
function parseCloseOptions(closeOptions: CloseOptions | undefined): number {
  if (closeOptions === undefined) return DEFAULT_CLOSE_TIMEOUT_MS;
  if (typeof closeOptions !== 'object' || closeOptions === null) {
    throw optionError('close() options', closeOptions, 'an object such as { timeoutMs: 10000 }');
  }
  return checkInteger('close() timeoutMs', closeOptions.timeoutMs, DEFAULT_CLOSE_TIMEOUT_MS, 0);
}

/** ready()'s deadline in ms; a bad one throws a TypeError (a programmer error). */
function parseReadyOptions(readyOptions: ReadyOptions | undefined): number {
  if (readyOptions === undefined) return DEFAULT_READY_TIMEOUT_MS;
  if (typeof readyOptions !== 'object' || readyOptions === null) {
    throw optionError('ready() options', readyOptions, 'an object such as { timeoutMs: 10000 }');
  }
  return checkInteger('ready() timeoutMs', readyOptions.timeoutMs, DEFAULT_READY_TIMEOUT_MS, 1);
}
