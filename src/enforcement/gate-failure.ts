// When the gate itself fails (a throw, a rejection, a bad value) or its deadline passes: logged, then onKanaError decides the request.

import { KanaError, logCodes } from '../config/errors.js';
import { logSafely } from '../config/logger.js';
import { where } from '../metering/routed-path.js';
import type { Gate } from './gate.js';
import type { GateRequest } from './gate-request.js';

/** Something in the gate threw or rejected (a hook's or a store's bad value, a bug). */
export function gateFailed(gate: Gate, request: GateRequest, error: unknown): void {
  decideAfterFailure(gate, request, error, () => ({
    fields: { code: logCodes.gateFailed, err: error, featureId: request.feature.featureId, ...where(request.req) },
    message: 'unexpected error in the entitlement gate; onKanaError decided the request',
  }));
}

/** The gate's deadline passed with the request still waiting (a hook, the store, or Kana past its limits). */
export function gateTimedOut(gate: Gate, request: GateRequest): void {
  if (request.isOver() || request.res.headersSent) return;
  const { gateTimeoutMs } = gate;
  gate.counters.gateTimeouts++;
  const error = new KanaError('KANA_TIMEOUT', `the request was not decided within ${gateTimeoutMs} ms`, {
    retryable: true,
  });
  decideAfterFailure(gate, request, error, () => ({
    fields: { code: logCodes.gateTimeout, featureId: request.feature.featureId, gateTimeoutMs, ...where(request.req) },
    message: `an enforced request was not decided within ${gateTimeoutMs} ms; onKanaError decided it`,
  }));
}

/**
 * The one failure path: logged (never thrown), then, if nothing decided the request yet, exactly
 * once, the `onKanaError` decision (next(), or 503 problem+json); a bare 503 if even that fails.
 */
function decideAfterFailure(
  gate: Gate,
  request: GateRequest,
  error: unknown,
  logLine: () => { fields: object; message: string },
): void {
  // Built inside the guard: reading the request for the line (where()) may throw too.
  logSafely(() => {
    const { fields, message } = logLine();
    gate.logger.error(fields, `kana-meter: ${message}`);
  });
  const { usage, res } = request;
  if (request.isOver() || res.headersSent) return;
  try {
    gate.fallBack(request, typeof usage.userId === 'string' ? usage.userId : '', error);
  } catch (failure) {
    logSafely(() =>
      gate.logger.error({ code: logCodes.gateFailed, err: failure }, 'kana-meter: the fallback decision failed'),
    );
    // Last resort: the request is answered.
    if (!request.decided && !res.headersSent) {
      request.markDecided();
      res.statusCode = 503;
      res.end();
    }
  }
}
