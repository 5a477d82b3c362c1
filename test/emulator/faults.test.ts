// Scripted faults (status, result:false, delay, hang, drop, graphqlError, fieldError), going offline, and close().
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import { CAN_USE_FEATURE, CREATE_USAGE_EVENT, post, RECORD_USAGE } from './graphql-client.js';

let emulator: KanaEmulator;

beforeAll(async () => {
  emulator = await startKanaEmulator({
    seed: {
      users: [{ id: 'u1' }],
      features: [{ id: 'api-calls', type: 'CONSUMABLE' }],
      packages: [{ id: 'plan', features: [{ id: 'api-calls', limit: 10 }] }],
      subscriptions: [{ userId: 'u1', packageId: 'plan' }],
    },
  });
});
afterAll(() => emulator.close());
beforeEach(() => {
  emulator.reset(); // back to the start seed
});

/** How fetch (undici) reports a socket closed without an answer. */
const SOCKET_CLOSED = /^(UND_ERR_SOCKET|ECONNRESET)$/;

const usageEvent = { input: { userId: 'u1', featureId: 'api-calls', delta: 1 } };

function sendUsageEvent(signal?: AbortSignal) {
  return post(emulator, CREATE_USAGE_EVENT, usageEvent, signal === undefined ? {} : { signal });
}

/** The error code under fetch's "fetch failed" TypeError (ECONNREFUSED, UND_ERR_SOCKET, ...). */
async function fetchFailure(promise: Promise<unknown>): Promise<string> {
  const error = (await promise.then(
    () => {
      throw new Error('expected the request to fail');
    },
    (e: unknown) => e,
  )) as { cause?: { code?: string } };
  return error.cause?.code ?? 'unknown';
}

async function waitFor(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(10);
  }
}

describe('{ status }', () => {
  it('answers with the status, Retry-After and a GraphQL-shaped body, and applies nothing', async () => {
    emulator.failNext({ status: 503, retryAfter: 7 });
    const response = await sendUsageEvent();
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('7');
    expect(response.errors![0]!.message).toMatch(/503/);
    expect(emulator.usage('u1', 'api-calls')).toBe(0);
    expect(emulator.usageCalls()).toEqual([]);
    expect(emulator.requests().at(-1)).toMatchObject({ fieldNames: ['createUsageEvent'], status: 503 });

    const next = await sendUsageEvent();
    expect(next.status).toBe(200);
    expect(emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('sends a given body verbatim', async () => {
    emulator.failNext({ status: 502, body: '<html>Bad Gateway</html>' });
    const response = await fetch(emulator.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: emulator.apiKey },
      body: JSON.stringify({ query: CREATE_USAGE_EVENT, variables: usageEvent }),
    });
    expect(response.status).toBe(502);
    expect(response.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await response.text()).toBe('<html>Bad Gateway</html>');
  });

  it('applies to the given number of matching requests, then stops', async () => {
    emulator.failNext({ status: 500 }, { times: 2 });
    const statuses = [];
    for (let i = 0; i < 3; i += 1) statuses.push((await sendUsageEvent()).status);
    expect(statuses).toEqual([500, 500, 200]);
    expect(emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('with `operation`, only matches requests selecting that root field', async () => {
    emulator.failNext({ status: 500 }, { operation: 'createUsageEvent' });
    const check = await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'api-calls' });
    expect(check.status).toBe(200);
    expect((await sendUsageEvent()).status).toBe(500);
  });
});

describe('{ result: false }', () => {
  it('makes createUsageEvent return false and applies nothing', async () => {
    emulator.failNext({ result: false });
    const response = await sendUsageEvent();
    expect(response.status).toBe(200);
    expect(response.data).toEqual({ createUsageEvent: false });
    expect(emulator.usage('u1', 'api-calls')).toBe(0);
    expect(emulator.usageCalls()).toEqual([]);
  });

  it('makes recordUsage return { recorded: false, reason }', async () => {
    emulator.failNext({ result: false });
    const response = await post(emulator, RECORD_USAGE, usageEvent);
    expect(response.data.recordUsage).toEqual({ recorded: false, reason: expect.any(String) });
    expect(emulator.usage('u1', 'api-calls')).toBe(0);
  });

  it('is not used up by requests that record no usage', async () => {
    emulator.failNext({ result: false });
    await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'api-calls' });
    expect((await sendUsageEvent()).data).toEqual({ createUsageEvent: false });
  });
});

describe('{ delayMs }', () => {
  it('waits, then answers normally and applies', async () => {
    emulator.failNext({ delayMs: 150 });
    const started = Date.now();
    const response = await sendUsageEvent();
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(response.data).toEqual({ createUsageEvent: true });
    expect(emulator.usage('u1', 'api-calls')).toBe(1);
  });

  it('apply (default): a client that times out still gets its usage applied (a lost response)', async () => {
    emulator.failNext({ delayMs: 150 });
    await expect(sendUsageEvent(AbortSignal.timeout(30))).rejects.toThrow();
    await waitFor(() => emulator.usage('u1', 'api-calls') === 1);
    expect(emulator.requests().at(-1)!.status).toBeNull();
  });

  it('apply: false: a client that gives up during the wait gets nothing applied', async () => {
    emulator.failNext({ delayMs: 150, apply: false });
    await expect(sendUsageEvent(AbortSignal.timeout(30))).rejects.toThrow();
    await sleep(250);
    expect(emulator.usage('u1', 'api-calls')).toBe(0);
    expect(emulator.usageCalls()).toEqual([]);
  });
});

describe('{ drop }', () => {
  it('destroys the socket without answering and applies nothing', async () => {
    emulator.failNext({ drop: true });
    expect(await fetchFailure(sendUsageEvent())).toMatch(SOCKET_CLOSED);
    expect(emulator.usage('u1', 'api-calls')).toBe(0);
    expect(emulator.requests().at(-1)).toMatchObject({ fieldNames: ['createUsageEvent'], status: null });
  });

  it('afterApply: the mutation is applied, then the answer is lost', async () => {
    emulator.failNext({ drop: true, afterApply: true });
    expect(await fetchFailure(sendUsageEvent())).toMatch(SOCKET_CLOSED);
    expect(emulator.usage('u1', 'api-calls')).toBe(1);
    expect(emulator.usageCalls()).toHaveLength(1);
  });

  it('leaves the server healthy for the next request', async () => {
    emulator.failNext({ drop: true });
    await fetchFailure(sendUsageEvent());
    expect((await sendUsageEvent()).data).toEqual({ createUsageEvent: true });
  });
});

describe('{ graphqlError }', () => {
  it('answers with the GraphQL error, HTTP 200 by default, and applies nothing', async () => {
    emulator.failNext({ graphqlError: { message: 'Too many requests', code: 'RATE_LIMITED', name: 'RateLimitError' } });
    const response = await sendUsageEvent();
    expect(response.status).toBe(200);
    expect(response.data).toBeNull();
    expect(response.errors).toEqual([
      {
        message: 'Too many requests',
        extensions: { code: 'RATE_LIMITED', exception: { name: 'RateLimitError', message: 'Too many requests' } },
      },
    ]);
    expect(emulator.usage('u1', 'api-calls')).toBe(0);
  });

  it('can use another HTTP status', async () => {
    emulator.failNext({ graphqlError: { message: 'boom', code: 'INTERNAL_SERVER_ERROR' }, httpStatus: 500 });
    const response = await sendUsageEvent();
    expect(response.status).toBe(500);
    expect(response.errors![0]!.extensions.exception.name).toBe('Error');
  });
});

describe('{ fieldError }', () => {
  const CHECK_WITH_PERIOD = `query check($userId: String!, $featureId: String!) {
    canUseFeature(userId: $userId, featureId: $featureId) { access }
    showUsage(userId: $userId, featureId: $featureId) { current { periodEnd } }
  }`;
  const variables = { userId: 'u1', featureId: 'api-calls' };

  it('fails one root field with an error at its path; non-null root fields null the whole answer, as graphql-js does', async () => {
    emulator.failNext({ fieldError: { field: 'showUsage', message: 'Not allowed for this key', code: 'FORBIDDEN' } });
    const response = await post(emulator, CHECK_WITH_PERIOD, variables);
    expect(response.status).toBe(200);
    expect(response.data).toBeNull();
    expect(response.errors).toEqual([
      {
        message: 'Not allowed for this key',
        locations: [{ line: 3, column: 5 }],
        path: ['showUsage'],
        extensions: { code: 'FORBIDDEN', exception: { name: 'Error', message: 'Not allowed for this key' } },
      },
    ]);
    expect((await post(emulator, CHECK_WITH_PERIOD, variables)).data).toMatchObject({
      canUseFeature: { access: true },
    });
  });

  it('names the alias in the path, and has defaults; graphql-js stops at the first non-null root error', async () => {
    emulator.failNext({ fieldError: { field: 'canUseFeature' } });
    const response = await post(
      emulator,
      `{ a: canUseFeature(userId: "u1", featureId: "api-calls") { access } b: canUseFeature(userId: "u1", featureId: "api-calls") { access } }`,
    );
    expect(response.data).toBeNull();
    // Both selections fail, but the first one's error nulls the whole answer before the second runs.
    expect(response.errors?.map((error) => [error.path, error.message, error.extensions.code])).toEqual([
      [['a'], 'Emulated fault: canUseFeature failed', 'INTERNAL_SERVER_ERROR'],
    ]);
  });

  it('waits for a request that selects its field; mutations apply nothing when theirs fails', async () => {
    emulator.failNext({ fieldError: { field: 'createUsageEvent' } });
    expect((await post(emulator, CAN_USE_FEATURE, variables)).errors).toBeUndefined();
    const response = await sendUsageEvent();
    expect(response.errors?.[0]?.path).toEqual(['createUsageEvent']);
    expect(emulator.usageCalls()).toEqual([]);
  });

  it('with an alias, fails that selection only; a nullable mutation is null alone and the others apply', async () => {
    emulator.failNext({ fieldError: { field: 'createUsageEvent', alias: 'b' } });
    const response = await post(
      emulator,
      `mutation { a: createUsageEvent(input: { userId: "u1", featureId: "api-calls", delta: 1 })
        b: createUsageEvent(input: { userId: "u1", featureId: "api-calls", delta: 2 })
        c: createUsageEvent(input: { userId: "u1", featureId: "api-calls", delta: 4 }) }`,
    );
    expect(response.status).toBe(200);
    expect(response.data).toEqual({ a: true, b: null, c: true });
    expect(response.errors?.map((error) => error.path)).toEqual([['b']]);
    expect(emulator.usage('u1', 'api-calls')).toBe(5);
  });
});

describe('{ hang }', () => {
  it('never answers: the client gives up, nothing is applied, and the next request is answered', async () => {
    emulator.failNext({ hang: true });
    await expect(sendUsageEvent(AbortSignal.timeout(100))).rejects.toThrow(/abort|timeout/i);
    await waitFor(() => emulator.requests().length === 1);
    expect(emulator.requests()[0]).toMatchObject({ fieldNames: ['createUsageEvent'], status: null });
    expect((await sendUsageEvent()).data).toEqual({ createUsageEvent: true });
    expect(emulator.usage('u1', 'api-calls')).toBe(1);
  });
});

describe('failNext() and reset()', () => {
  it('times: Infinity applies to every matching request until clearFaults()', async () => {
    emulator.failNext({ status: 503 }, { times: Number.POSITIVE_INFINITY, operation: 'createUsageEvent' });
    const statuses = [];
    for (let i = 0; i < 5; i += 1) statuses.push((await sendUsageEvent()).status);
    expect((await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'api-calls' })).status).toBe(200);
    emulator.clearFaults();
    statuses.push((await sendUsageEvent()).status);
    expect(statuses).toEqual([503, 503, 503, 503, 503, 200]);
    expect(emulator.usage('u1', 'api-calls')).toBe(1); // clearFaults() keeps the state
  });

  it('rejects a malformed fieldError or hang', () => {
    expect(() => emulator.failNext({ fieldError: { field: '' } })).toThrow(/fault.fieldError must be/);
    expect(() => emulator.failNext({ fieldError: { field: 'createUsageEvent', alias: 1 } } as never)).toThrow(
      /fault.fieldError must be/,
    );
    expect(() => emulator.failNext({ fieldError: { field: 'showUsage', code: 5 } } as never)).toThrow(TypeError);
    expect(() => emulator.failNext({ hang: 'yes' } as never)).toThrow(/fault.hang must be true/);
    expect(() => emulator.failNext({ status: 500 }, { times: 1.5 })).toThrow(/positive integer or Infinity/);
  });

  it('rejects a malformed fault with a TypeError', () => {
    expect(() => emulator.failNext({ status: 42 })).toThrow(TypeError);
    expect(() => emulator.failNext({ status: 500, drop: true } as never)).toThrow(/exactly one kind/);
    expect(() => emulator.failNext({ status: 500 }, { times: 0 })).toThrow(/times must be a positive integer/);
  });

  it('reset() clears queued faults', async () => {
    emulator.failNext({ status: 500 }, { times: 5 });
    emulator.reset();
    emulator.seed({ users: [{ id: 'u2' }] });
    expect((await post(emulator, '{ users { id } }')).status).toBe(200);
  });

  it('faults are not used up by unauthenticated requests', async () => {
    emulator.failNext({ status: 500 });
    const unauthenticated = await post(emulator, CREATE_USAGE_EVENT, usageEvent, { authorization: 'prv_test_wrong' });
    expect(unauthenticated.status).toBe(200);
    expect((await sendUsageEvent()).status).toBe(500);
  });
});

describe('setOffline()', () => {
  it('refuses connections while offline and comes back on the same port', async () => {
    const { url, port } = emulator;
    expect((await sendUsageEvent()).status).toBe(200); // leaves a keep-alive socket in fetch's pool

    await emulator.setOffline(true);
    expect(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET']).toContain(await fetchFailure(sendUsageEvent()));
    expect(await fetchFailure(sendUsageEvent())).toBe('ECONNREFUSED');

    await emulator.setOffline(false);
    expect(emulator.url).toBe(url);
    expect(emulator.port).toBe(port);
    expect((await sendUsageEvent()).data).toEqual({ createUsageEvent: true });
    expect(emulator.usage('u1', 'api-calls')).toBe(2);
  });

  it.each([[{ delayMs: 5000 }], [{ hang: true as const }]])(
    'going offline ends a request held by %j without applying it',
    async (fault) => {
      emulator.failNext(fault);
      const pending = sendUsageEvent();
      await waitFor(() => emulator.requests().length === 1);
      await emulator.setOffline(true);
      expect(await fetchFailure(pending)).toMatch(SOCKET_CLOSED);
      await emulator.setOffline(false);
      expect(emulator.usage('u1', 'api-calls')).toBe(0);
    },
  );

  it('is idempotent in both directions', async () => {
    await emulator.setOffline(true);
    await emulator.setOffline(true);
    await emulator.setOffline(false);
    await emulator.setOffline(false);
    expect((await post(emulator, '{ users { id } }')).data).toEqual({ users: [{ id: 'u1' }] });
  });
});

describe('close()', () => {
  it('is idempotent, frees the port and closes idle keep-alive sockets promptly', async () => {
    const other = await startKanaEmulator();
    expect((await post(other, '{ users { id } }')).status).toBe(200); // a pooled keep-alive socket
    const started = Date.now();
    await Promise.all([other.close(), other.close()]);
    await other.close();
    expect(Date.now() - started).toBeLessThan(500);
    expect(await fetchFailure(post(other, '{ users { id } }'))).toBe('ECONNREFUSED');
    await expect(other.setOffline(false)).rejects.toThrow(/closed/);
  });
});
