// Scripted faults (status, result:false, delay, drop, graphqlError), going offline, and close().
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

describe('failNext() and reset()', () => {
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

  it('going offline ends a request held by a delay without applying it', async () => {
    emulator.failNext({ delayMs: 5000 });
    const pending = sendUsageEvent();
    await waitFor(() => emulator.requests().length === 1);
    await emulator.setOffline(true);
    expect(await fetchFailure(pending)).toMatch(SOCKET_CLOSED);
    await emulator.setOffline(false);
    expect(emulator.usage('u1', 'api-calls')).toBe(0);
  });

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
