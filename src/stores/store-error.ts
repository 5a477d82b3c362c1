// StoreError: a failed command to the shared store, with a stable code, and how a client's error maps to one.

/**
 * Codes of a failed store command (`StoreError.code`):
 * - `STORE_TIMEOUT`: no answer within the time limit. The command may still run later (clients queue
 *   commands while they reconnect), so a mutating script must be safe to land late.
 * - `STORE_UNREACHABLE`: no usable answer: the client failed the command (connection refused or closed,
 *   client closed, `sendCommand` threw), or Redis said it cannot serve now (LOADING, BUSY, READONLY, OOM...).
 * - `STORE_DOWN`: not sent: Redis is marked unreachable and another command is already probing it.
 * - `STORE_COMMAND_FAILED`: Redis answered with an error (WRONGTYPE, a script error...): it is reachable.
 * - `STORE_BAD_REPLY`: Redis answered with a reply of an unexpected shape.
 */
export type StoreErrorCode =
  | 'STORE_TIMEOUT'
  | 'STORE_UNREACHABLE'
  | 'STORE_DOWN'
  | 'STORE_COMMAND_FAILED'
  | 'STORE_BAD_REPLY';

/** A failed store command, with a stable `code` and the client's error as `cause`. */
export class StoreError extends Error {
  override readonly name = 'StoreError';
  readonly code: StoreErrorCode;
  /** The command (or script) that failed, e.g. `EVALSHA reserve`: never its keys or arguments. */
  readonly command: string;

  constructor(code: StoreErrorCode, command: string, message: string, cause?: unknown) {
    super(`${command}: ${message}`, cause === undefined ? undefined : { cause });
    this.code = code;
    this.command = command;
  }

  /** Whether this error means Redis cannot be used right now (as opposed to one command going wrong). */
  get unreachable(): boolean {
    return this.code === 'STORE_TIMEOUT' || this.code === 'STORE_UNREACHABLE' || this.code === 'STORE_DOWN';
  }
}

// Error replies by which Redis says it cannot serve this client now, whatever the command.
const UNSERVICEABLE = new Set([
  'LOADING',
  'BUSY',
  'READONLY',
  'MASTERDOWN',
  'CLUSTERDOWN',
  'TRYAGAIN',
  'OOM',
  'MISCONF',
  'NOREPLICAS',
  'NOAUTH',
  'NOPERM',
  'WRONGPASS',
]);
// Class names of error replies: node-redis ErrorReply/SimpleError/BlobError, ioredis ReplyError.
const REPLY_ERROR_CLASS = /^(ErrorReply|SimpleError|BlobError|ReplyError)$/;

/** The error code Redis put first in an error reply (`NOSCRIPT`, `WRONGTYPE`...), or undefined if `error` is not a reply. */
export function redisErrorCode(error: unknown): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const first = /^([A-Z][A-Z0-9_-]*)(\s|$)/.exec(error.message)?.[1];
  if (first === undefined) return undefined;
  const isReply = REPLY_ERROR_CLASS.test(error.constructor.name) || REPLY_ERROR_CLASS.test(error.name);
  // A bundler may rename classes: then trust the known shapes of Redis's own error codes.
  return isReply || first === 'ERR' || UNSERVICEABLE.has(first) || first === 'NOSCRIPT' || first === 'WRONGTYPE'
    ? first
    : undefined;
}

/** Maps whatever a client rejected with to a StoreError. */
export function toStoreError(error: unknown, command: string): StoreError {
  if (error instanceof StoreError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const code = redisErrorCode(error);
  if (code === undefined || UNSERVICEABLE.has(code)) {
    return new StoreError('STORE_UNREACHABLE', command, message, error);
  }
  return new StoreError('STORE_COMMAND_FAILED', command, message, error);
}
