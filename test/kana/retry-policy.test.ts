// The retry table as a numbered matrix: each way a Kana call fails, and whether it is retried.

import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import {
  type CallFailure,
  classifyFailure,
  MAX_RETRY_AFTER_MS,
  matchRetryRule,
  parseRetryAfter,
  retryRules,
} from '../../src/kana/retry-policy.js';

const unauthenticated = [{ message: 'Unauthenticated: bad key', extensions: { code: 'UNAUTHENTICATED' } }];
const validation = [{ message: 'Variable "$input" got invalid value', extensions: { code: 'BAD_USER_INPUT' } }];

// [case, failure, expected code, retried?, expected rule row]
const matrix: [string, CallFailure, string, boolean, number][] = [
  ['close() deadline', { kind: 'aborted' }, 'KANA_ABORTED', false, 1],
  ['per-call timeout', { kind: 'timeout' }, 'KANA_TIMEOUT', true, 2],
  ['connection refused', { kind: 'network', cause: new TypeError('fetch failed') }, 'KANA_UNREACHABLE', true, 3],
  ['HTTP 401', { kind: 'http', status: 401 }, 'KANA_UNAUTHENTICATED', false, 4],
  ['HTTP 403', { kind: 'http', status: 403 }, 'KANA_UNAUTHENTICATED', false, 4],
  [
    'Unauthenticated GraphQL error at HTTP 200',
    { kind: 'graphql', errors: unauthenticated },
    'KANA_UNAUTHENTICATED',
    false,
    4,
  ],
  [
    'Unauthenticated GraphQL error at HTTP 400',
    { kind: 'http', status: 400, errors: unauthenticated },
    'KANA_UNAUTHENTICATED',
    false,
    4,
  ],
  ['HTTP 429', { kind: 'http', status: 429, retryAfter: '3' }, 'KANA_RATE_LIMITED', true, 5],
  ['HTTP 408', { kind: 'http', status: 408 }, 'KANA_TIMEOUT', true, 6],
  ['HTTP 500', { kind: 'http', status: 500 }, 'KANA_SERVER_ERROR', true, 7],
  ['HTTP 502', { kind: 'http', status: 502 }, 'KANA_SERVER_ERROR', true, 7],
  ['HTTP 503 with Retry-After', { kind: 'http', status: 503, retryAfter: '1' }, 'KANA_SERVER_ERROR', true, 7],
  ['HTTP 400 GraphQL validation', { kind: 'http', status: 400, errors: validation }, 'KANA_REJECTED', false, 8],
  ['BAD_USER_INPUT at HTTP 200', { kind: 'graphql', errors: validation }, 'KANA_REJECTED', false, 8],
  ['HTTP 404', { kind: 'http', status: 404 }, 'KANA_HTTP_ERROR', false, 9],
  ['HTTP 413', { kind: 'http', status: 413 }, 'KANA_HTTP_ERROR', false, 9],
  [
    'resolver error at HTTP 200',
    { kind: 'graphql', errors: [{ message: 'boom', extensions: { code: 'INTERNAL_SERVER_ERROR' } }] },
    'KANA_SERVER_ERROR',
    true,
    10,
  ],
  ['createUsageEvent returned false', { kind: 'not-recorded' }, 'KANA_NOT_RECORDED', true, 11],
  ['recordUsage returned recorded: false', { kind: 'not-recorded', reason: 'busy' }, 'KANA_NOT_RECORDED', true, 11],
  [
    'HTML from a proxy at HTTP 200',
    { kind: 'bad-response', cause: new SyntaxError('Unexpected token <') },
    'KANA_BAD_RESPONSE',
    true,
    12,
  ],
  [
    'a header value the HTTP layer refuses',
    { kind: 'config', problem: 'a header value it rejects' },
    'KANA_CONFIG_ERROR',
    false,
    13,
  ],
];

describe('retry table', () => {
  it.each(matrix.map((row, index) => [index + 1, ...row] as const))(
    '%i. %s -> %s',
    (_n, _name, failure, code, retried, row) => {
      const error = classifyFailure(failure);
      expect(error.code).toBe(code);
      expect(error.retryable).toBe(retried);
      // The row the code chose (the same lookup classifyFailure makes), and that row's own outcome.
      const rule = matchRetryRule(failure);
      expect(rule.row).toBe(row);
      expect([rule.code, rule.retryable]).toEqual([error.code, error.retryable]);
    },
  );

  it('every row of the code is reached by some failure of the matrix, and rows are numbered in order', () => {
    const reached = new Set(matrix.map(([, failure]) => matchRetryRule(failure).row));
    expect(retryRules.map((rule) => rule.row)).toEqual(retryRules.map((_rule, index) => index + 1));
    expect(retryRules.map((rule) => rule.row).filter((row) => !reached.has(row))).toEqual([]);
  });

  it("matches the delivery guide's table row by row: failure code and whether it is retried", async () => {
    const guide = await readFile(new URL('../../docs/delivery.md', import.meta.url), 'utf8');
    const rows = [...guide.matchAll(/^ *\| (\d+) +\| .+? \| (yes|no)\b.*?\| `(KANA_\w+)` +\|$/gm)].map(
      ([, row, retried, code]) => [Number(row), retried === 'yes', code],
    );
    expect(rows).toEqual(retryRules.map((rule) => [rule.row, rule.retryable, rule.code]));
  });

  it('keeps the HTTP status and the Retry-After delay of a retried answer', () => {
    const error = classifyFailure({ kind: 'http', status: 429, retryAfter: '3' });
    expect(error.status).toBe(429);
    expect(error.retryAfterMs).toBe(3000);
  });

  it('ignores Retry-After on an answer that is not retried', () => {
    expect(classifyFailure({ kind: 'http', status: 404, retryAfter: '3' }).retryAfterMs).toBeUndefined();
  });

  it('names the socket error of an unreachable Kana', () => {
    const cause = new TypeError('fetch failed', {
      cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }),
    });
    expect(classifyFailure({ kind: 'network', cause }).message).toContain('ECONNREFUSED');
  });
});

describe('parseRetryAfter', () => {
  it('reads delta-seconds', () => expect(parseRetryAfter('2')).toBe(2000));
  it('reads an HTTP date relative to now', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now)).toBe(5000);
  });
  it('treats a date in the past as no wait', () => {
    expect(parseRetryAfter('Thu, 01 Jan 2020 00:00:00 GMT')).toBe(0);
  });
  it('caps a huge value so one header cannot stall delivery', () => {
    expect(parseRetryAfter('999999')).toBe(MAX_RETRY_AFTER_MS);
  });
  it('ignores garbage and absence', () => {
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter('-1')).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });
});
