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

/**
 * The keys of an options type, as the set `rejectUnknownKeys` takes: the compiler wants every key
 * of `T` listed, and no other, so the set cannot drift from the type. Listed order is kept (it is
 * the order the error message lists them in).
 */
export function knownKeys<T>(keys: { readonly [K in keyof T]-?: true }): ReadonlySet<string> {
  return new Set(Object.keys(keys));
}

/**
 * The one unknown-key check: throws on the first own key of `object` that is not in `known`, named
 * `${prefix}${key}` (e.g. `retry.` gives `retry.foo`). `expected` defaults to listing the known keys.
 */
export function rejectUnknownKeys(prefix: string, object: object, known: ReadonlySet<string>, expected?: string): void {
  for (const key of Object.keys(object)) {
    if (!known.has(key)) {
      throw optionError(
        `${prefix}${key}`,
        (object as Record<string, unknown>)[key],
        expected ?? `absent (known: ${[...known].join(', ')})`,
      );
    }
  }
}

/** Whether `value` is an object with each of these methods: how a store, a metrics integration or a registry is recognised. */
export function hasMethods(value: unknown, methods: readonly string[]): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    methods.every((method) => typeof (value as Record<string, unknown>)[method] === 'function')
  );
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

/**
 * An http(s) URL without credentials: a `user:password@` part would be sent to Kana and show up in
 * error messages and logs, so it is refused, and never echoed.
 */
export function checkEndpoint(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  let url: URL | undefined;
  try {
    url = typeof value === 'string' ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (url && (url.username !== '' || url.password !== '')) {
    throw new TypeError(
      `kana-meter: option \`${name}\` must not contain credentials (user:password@): Kana takes the key from \`apiKey\`, as the Authorization header; got a URL with credentials for ${url.host}.`,
    );
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw optionError(name, typeof value === 'string' ? withoutCredentials(value) : value, 'an http(s) URL');
  }
  return value as string;
}

/** A URL-ish string with anything that looks like `user:password@` after the scheme masked. */
function withoutCredentials(text: string): string {
  return text.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1***@');
}

/** Whether an endpoint is plain http to a host other than this machine: the key would travel in cleartext. */
export function isCleartextRemote(endpoint: string): boolean {
  const url = new URL(endpoint);
  if (url.protocol !== 'http:') return false;
  const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const loopback =
    host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
  return !loopback;
}

/**
 * The API key: a valid HTTP header value (printable ASCII: no CR, LF, NUL or other control
 * characters, no leading or trailing space), since it is sent as the Authorization header.
 * Checked, but never echoed back in the error.
 */
export function checkApiKey(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') {
    const got = value === undefined ? 'undefined' : value === '' ? 'an empty string' : `a ${typeof value}`;
    throw new TypeError(
      `kana-meter: option \`apiKey\` must be your Kana private key (a non-empty string such as "prv_live_..."); got ${got}.`,
    );
  }
  const bad = /[^\x20-\x7e]|^ | $/.exec(value);
  if (bad) {
    const what = describeCharacter(bad[0].charCodeAt(0));
    throw new TypeError(
      `kana-meter: option \`apiKey\` must be a valid HTTP header value (it is sent as the Authorization header): printable ASCII, without line breaks, control characters or surrounding spaces; got a string of ${value.length} characters with ${what} at index ${bad.index}. (The key itself is not shown.)`,
    );
  }
  return value;
}

/** Names a character an HTTP header value cannot hold, without showing the text around it. */
function describeCharacter(code: number): string {
  if (code === 0x0d) return 'a carriage return (CR)';
  if (code === 0x0a) return 'a line feed (LF)';
  if (code === 0) return 'a NUL';
  if (code === 0x20) return 'a leading or trailing space';
  if (code < 0x20 || code === 0x7f)
    return `a control character (U+${code.toString(16).padStart(4, '0').toUpperCase()})`;
  return 'a character outside printable ASCII';
}
