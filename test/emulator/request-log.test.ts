// The emulator's request log is bounded: at most 10,000 requests and 16 MiB, the oldest dropped first.

import { describe, expect, it } from 'vitest';
import type { EmulatorRequest } from '../../src/emulator/index.js';
import {
  MAX_LOGGED_BYTES,
  MAX_LOGGED_REQUESTS,
  MAX_LOGGED_VARIABLES_BYTES,
  RequestLog,
} from '../../src/emulator/request-log.js';

const entry = (at: number): EmulatorRequest => ({
  operationName: null,
  fieldNames: [],
  variables: null,
  authorized: true,
  status: 200,
  at,
});

describe('RequestLog', () => {
  it(`keeps the last ${MAX_LOGGED_REQUESTS} requests`, () => {
    const log = new RequestLog();
    for (let i = 0; i < MAX_LOGGED_REQUESTS + 50; i++) log.add(entry(i));
    expect(log.entries()).toHaveLength(MAX_LOGGED_REQUESTS);
    expect(log.entries()[0]?.at).toBe(50);
  });

  it(`keeps at most ${MAX_LOGGED_BYTES / 2 ** 20} MiB of variables in all, dropping the oldest`, () => {
    const log = new RequestLog();
    const variables = { blob: 'x'.repeat(MAX_LOGGED_VARIABLES_BYTES - 20) };
    for (let i = 0; i < 1000; i++) {
      const request = entry(i);
      log.add(request);
      log.attach(request, { operationName: 'op', fieldNames: ['createUsageEvent'], variables });
    }
    const kept = log.entries();
    expect(kept.length).toBeLessThan(MAX_LOGGED_BYTES / MAX_LOGGED_VARIABLES_BYTES + 1);
    expect(kept.length).toBeGreaterThan(MAX_LOGGED_BYTES / MAX_LOGGED_VARIABLES_BYTES - 10);
    expect(kept.at(-1)?.at).toBe(999);
    expect(kept.reduce((sum, request) => sum + JSON.stringify(request.variables).length, 0)).toBeLessThanOrEqual(
      MAX_LOGGED_BYTES,
    );
  });
});
