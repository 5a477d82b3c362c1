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

/** Logs an error where nothing may be thrown: a logger that throws cannot be told, and its throw goes no further. */
export function logErrorSafely(logger: KanaLogger, object: object, message: string): void {
  try {
    logger.error(object, message);
  } catch {
    // A logger that throws cannot be told.
  }
}
