// The logger kana-meter writes to: the user's pino-compatible logger, or pino at 'warn'.

import { pino } from 'pino';
import { optionError } from './option-checks.js';

/** A pino-compatible logger: `logger.warn({ code, ... }, 'message')`. */
export interface KanaLogger {
  error(object: object, message: string): void;
  warn(object: object, message: string): void;
  info(object: object, message: string): void;
  debug(object: object, message: string): void;
}

const LEVELS = ['error', 'warn', 'info', 'debug'] as const;

let defaultLogger: KanaLogger | undefined;

/** pino at level 'warn', name 'kana-meter', created on first use and shared. */
export function getDefaultLogger(): KanaLogger {
  defaultLogger ??= pino({ name: 'kana-meter', level: 'warn' });
  return defaultLogger;
}

export function parseLogger(value: unknown): KanaLogger {
  if (value === undefined) return getDefaultLogger();
  const missing = LEVELS.find((level) => typeof (value as Record<string, unknown> | null)?.[level] !== 'function');
  if (missing) throw optionError('logger', value, `a pino-compatible logger with ${LEVELS.join('/')} methods`);
  return value as KanaLogger;
}

/**
 * Runs one log call and swallows what a throwing logger throws. For the places that log a failure
 * on the host's request path: nothing may escape into the host there, and nowhere is left to report
 * the logger's own failure. Build the log object inside `log`, so that reading the request for it
 * (`where(req)`) is guarded too.
 * @example logSafely(() => logger.error({ code: logCodes.gateFailed, err: error }, 'kana-meter: ...'));
 */
export function logSafely(log: () => void): void {
  try {
    log();
  } catch {
    // A logger that throws cannot be told.
  }
}
