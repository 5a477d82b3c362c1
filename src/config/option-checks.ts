// Checks for user options: each failure is a TypeError naming the option, the value and what was expected.

import type { EnforceMode } from './decision.js';

/** Shows a rejected value in an error message without dumping large objects. */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'function') return `a function`;
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'bigint') return `${value}n`;
  return String(value);
}

export function optionError(name: string, value: unknown, expected: string): TypeError {
  return new TypeError(`kana-meter: option \`${name}\` must be ${expected}; got ${describeValue(value)}.`);
}

export function checkFunction<T extends (...args: never[]) => unknown>(name: string, value: unknown): T | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw optionError(name, value, 'a function');
  return value as T;
}

/** An integer within [min, max], or the default when undefined. */
export function checkInteger(
  name: string,
  value: unknown,
  fallback: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in ${min}..${max}`;
    throw optionError(name, value, `an integer ${range}`);
  }
  return value;
}

/** A number >= min (Infinity allowed when asked), or the default when undefined. */
export function checkNumber(
  name: string,
  value: unknown,
  fallback: number,
  min: number,
  allowInfinity = false,
): number {
  if (value === undefined) return fallback;
  const finiteOk = allowInfinity ? !Number.isNaN(value) : Number.isFinite(value);
  if (typeof value !== 'number' || !finiteOk || value < min) {
    throw optionError(name, value, `a ${allowInfinity ? '' : 'finite '}number >= ${min}`);
  }
  return value;
}

export function checkOneOf<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) {
    throw optionError(name, value, `one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}`);
  }
  return value as T;
}

export function checkBoolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw optionError(name, value, 'true or false');
  return value;
}

/** An `enforce` option: true, false or 'shadow'. */
export function checkEnforce(name: string, value: unknown, fallback: EnforceMode): EnforceMode {
  if (value === undefined) return fallback;
  if (value !== true && value !== false && value !== 'shadow')
    throw optionError(name, value, "true, false or 'shadow'");
  return value;
}

/** Kana feature ids are Strings chosen by the user, e.g. "api-calls". */
export function checkFeatureId(name: string, value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') throw optionError(name, value, 'a non-empty feature id string');
  return value;
}

/** An http(s) URL. */
export function checkUrl(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  let url: URL | undefined;
  try {
    url = typeof value === 'string' ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw optionError(name, value, 'an http(s) URL');
  }
  return value as string;
}

/** The API key: checked, but never echoed back in the error. */
export function checkApiKey(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') {
    const got = value === undefined ? 'undefined' : value === '' ? 'an empty string' : `a ${typeof value}`;
    throw new TypeError(
      `kana-meter: option \`apiKey\` must be your Kana private key (a non-empty string such as "prv_live_..."); got ${got}.`,
    );
  }
  return value;
}
