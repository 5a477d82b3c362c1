// The emulator's HTTP surface: auth, body decoding, status codes, error shapes, binding, request log.
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import { CREATE_USAGE_EVENT, docsSeed, post } from './graphql-client.js';

let emulator: KanaEmulator;

beforeAll(async () => {
  emulator = await startKanaEmulator({ seed: docsSeed() });
});
afterAll(() => emulator.close());
beforeEach(() => {
  emulator.reset(); // back to docsSeed()
});

/** Resolves true if a TCP connection to host:port succeeds, false if it is refused or fails. */
function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('startKanaEmulator', () => {
  it('binds 127.0.0.1 on a free port by default, with a generated prv_test_ key', async () => {
    expect(emulator.port).toBeGreaterThan(0);
    expect(emulator.url).toBe(`http://127.0.0.1:${emulator.port}/graphql`);
    expect(emulator.apiKey).toMatch(/^prv_test_[A-Za-z0-9]{32}$/);
    expect(await canConnect('127.0.0.1', emulator.port)).toBe(true);
    // Not reachable on other interfaces: the loopback IPv6 address and any external IPv4 address.
    expect(await canConnect('::1', emulator.port)).toBe(false);
    const external = Object.values(networkInterfaces())
      .flat()
      .find((address) => address !== undefined && address.family === 'IPv4' && !address.internal);
    if (external !== undefined) expect(await canConnect(external.address, emulator.port)).toBe(false);
  });

  it('generates a different key per emulator and accepts a given one', async () => {
    const other = await startKanaEmulator({ apiKey: 'prv_live_abc123' });
    try {
      expect(other.apiKey).toBe('prv_live_abc123');
      expect(other.port).not.toBe(emulator.port);
      const response = await post(other, '{ users { id } }', undefined, { authorization: 'prv_live_abc123' });
      expect(response.data).toEqual({ users: [] });
    } finally {
      await other.close();
    }
  });

  it('rejects an apiKey option that is not a Kana private key, without echoing it', async () => {
    await expect(startKanaEmulator({ apiKey: 'sk_secret_value' })).rejects.toThrow(/apiKey must be a Kana private key/);
    await expect(startKanaEmulator({ apiKey: 'sk_secret_value' })).rejects.not.toThrow(/sk_secret_value/);
    await expect(startKanaEmulator({ port: 70000 })).rejects.toThrow(/port must be an integer from 0 to 65535/);
  });
});

describe('authentication', () => {
  it('answers a missing Authorization header with a 200 Unauthenticated error', async () => {
    const response = await post(emulator, '{ users { id } }', undefined, { authorization: null });
    expect(response.status).toBe(200);
    expect(response.data).toBeUndefined();
    expect(response.errors).toHaveLength(1);
    const error = response.errors![0]!;
    expect(error.message).toMatch(/^Unauthenticated/);
    expect(error.extensions).toEqual({
      code: 'UNAUTHENTICATED',
      exception: { name: 'AuthenticationError', message: error.message },
    });
  });

  it('rejects a well-formed but different key, and never echoes the key', async () => {
    const wrong = 'prv_test_0000000000000000000000000000000';
    const response = await post(emulator, '{ users { id } }', undefined, { authorization: wrong });
    expect(response.status).toBe(200);
    expect(response.errors![0]!.message).toMatch(/^Unauthenticated/);
    expect(response.errors![0]!.extensions.code).toBe('UNAUTHENTICATED');
    expect(JSON.stringify(response)).not.toContain(wrong);
    expect(JSON.stringify(response)).not.toContain(emulator.apiKey);
  });

  it.each([
    ['a public key', 'pub_test_abc'],
    ['the key with another scheme', 'Basic prv_test_abc'],
    ['a lower-case bearer', 'bearer prv_test_abc'],
  ])('rejects %s', async (_label, header) => {
    const response = await post(emulator, '{ users { id } }', undefined, { authorization: header });
    expect(response.errors![0]!.extensions.code).toBe('UNAUTHENTICATED');
  });

  it('accepts the key alone and after "Bearer "', async () => {
    const plain = await post(emulator, '{ users { id } }', undefined, { authorization: emulator.apiKey });
    const bearer = await post(emulator, '{ users { id } }', undefined, { authorization: `Bearer ${emulator.apiKey}` });
    expect(plain.data).toEqual({ users: [{ id: '124' }] });
    expect(bearer.data).toEqual({ users: [{ id: '124' }] });
  });

  it('applies nothing for an unauthenticated mutation', async () => {
    const input = { userId: '124', featureId: 'api-calls', delta: 5 };
    await post(emulator, CREATE_USAGE_EVENT, { input }, { authorization: 'prv_test_nope' });
    expect(emulator.usage('124', 'api-calls')).toBe(0);
    expect(emulator.usageCalls()).toEqual([]);
  });
});

describe('request decoding', () => {
  it('accepts variables as an object or as a JSON string (Kana curl examples)', async () => {
    const query = 'query user($id: String!) { user(id: $id) { id name email } }';
    const asObject = await post(emulator, query, { id: '124' });
    const asString = await post(emulator, query, { id: '124' }, { stringifyVariables: true });
    expect(asObject.status).toBe(200);
    expect(asObject.data).toEqual({ user: { id: '124', name: 'Test User', email: 'test@usekana.com' } });
    expect(asString).toMatchObject({ status: 200, data: asObject.data });
  });

  it("gives graphql-js's own coercion error, HTTP 400, for an integer passed as a String! id", async () => {
    const response = await post(emulator, CREATE_USAGE_EVENT, { input: { userId: 124, featureId: 'api-calls' } });
    expect(response.status).toBe(400);
    expect(response.data).toBeUndefined();
    expect(response.errors![0]!.message).toBe(
      'Variable "$input" got invalid value 124 at "input.userId"; String cannot represent a non string value: 124',
    );
    expect(response.errors![0]!.extensions.code).toBe('BAD_USER_INPUT');
    expect(emulator.usageCalls()).toEqual([]);
  });

  it('rejects an inline integer literal for a String! argument at validation, HTTP 400', async () => {
    const response = await post(emulator, '{ user(id: 124) { id } }');
    expect(response.status).toBe(400);
    expect(response.errors![0]!.message).toBe('String cannot represent a non string value: 124');
    expect(response.errors![0]!.extensions.code).toBe('GRAPHQL_VALIDATION_FAILED');
  });

  it('answers a GraphQL syntax error with 400 GRAPHQL_PARSE_FAILED', async () => {
    const response = await post(emulator, '{ users { id ');
    expect(response.status).toBe(400);
    expect(response.errors![0]!.message).toMatch(/^Syntax Error/);
    expect(response.errors![0]!.locations).toEqual([{ line: 1, column: 14 }]);
    expect(response.errors![0]!.extensions.code).toBe('GRAPHQL_PARSE_FAILED');
  });

  it('answers a field the schema lacks with 400 GRAPHQL_VALIDATION_FAILED', async () => {
    const response = await post(emulator, '{ users { id password } }');
    expect(response.status).toBe(400);
    expect(response.errors![0]!.message).toBe('Cannot query field "password" on type "User".');
    expect(response.errors![0]!.extensions).toMatchObject({
      code: 'GRAPHQL_VALIDATION_FAILED',
      exception: { name: 'ValidationError' },
    });
  });

  it('answers a body that is not JSON with 400', async () => {
    const response = await fetch(emulator.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: emulator.apiKey },
      body: '{"query": ',
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { errors: { message: string }[] };
    expect(body.errors[0]!.message).toMatch(/not valid JSON/);
  });

  it('answers variables that are an invalid JSON string with 400', async () => {
    const response = await fetch(emulator.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: emulator.apiKey },
      body: JSON.stringify({ query: '{ users { id } }', variables: '{nope' }),
    });
    expect(response.status).toBe(400);
  });

  it('answers a resolver error with HTTP 200, the error shape and its path', async () => {
    const response = await post(emulator, 'query getUser { user(id: "nobody") { id } }');
    expect(response.status).toBe(200);
    expect(response.data).toBeNull();
    expect(response.errors).toEqual([
      {
        message: expect.any(String),
        locations: [{ line: 1, column: 17 }],
        path: ['user'],
        extensions: {
          code: 'BAD_USER_INPUT',
          exception: { name: 'UserNotFoundError', message: response.errors![0]!.message },
        },
      },
    ]);
  });

  it('sends application/json; charset=utf-8', async () => {
    const response = await post(emulator, '{ users { id } }');
    expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
  });
});

describe('routes and methods', () => {
  it('answers GET /graphql with 405 and Allow: POST', async () => {
    const response = await fetch(`${emulator.url}?query=${encodeURIComponent('{ users { id } }')}`, {
      headers: { authorization: emulator.apiKey },
    });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe('POST');
  });

  it('answers other paths with 404', async () => {
    const response = await fetch(emulator.url.replace('/graphql', '/other'), { method: 'POST', body: '{}' });
    expect(response.status).toBe(404);
  });
});

describe('requests()', () => {
  it('logs each request: operation name, root fields, variables (if authorized), authorization and status', async () => {
    await post(
      emulator,
      CREATE_USAGE_EVENT,
      { input: { userId: '124', featureId: 'api-calls' } },
      { stringifyVariables: true },
    );
    await post(emulator, '{ a: users { id } features { id } }', undefined, { authorization: null });
    await post(emulator, 'query one { users { id } } query two { features { id } }', undefined, {
      operationName: 'two',
    });
    const log = emulator.requests();
    expect(log).toEqual([
      {
        operationName: 'createUsageEvent',
        fieldNames: ['createUsageEvent'],
        variables: { input: { userId: '124', featureId: 'api-calls' } },
        authorized: true,
        status: 200,
        at: expect.any(Number),
      },
      {
        // Without the key, nothing from the request is kept: not its operation, fields or variables.
        operationName: null,
        fieldNames: [],
        variables: null,
        authorized: false,
        status: 200,
        at: expect.any(Number),
      },
      {
        operationName: 'two',
        fieldNames: ['features'],
        variables: null,
        authorized: true,
        status: 200,
        at: expect.any(Number),
      },
    ]);
  });

  it('keeps nothing of an unauthenticated request body, however large', async () => {
    const big = { input: { userId: 'x'.repeat(1000 * 1000), featureId: 'api-calls' } };
    for (let i = 0; i < 20; i++) await post(emulator, CREATE_USAGE_EVENT, big, { authorization: 'prv_test_wrong' });
    const log = emulator.requests();
    expect(log).toHaveLength(20);
    expect(log.every((entry) => entry.variables === null && entry.fieldNames.length === 0)).toBe(true);
    expect(JSON.stringify(log).length).toBeLessThan(20 * 200);
  });

  it('keeps the variables of an authorized request only up to 64 KiB', async () => {
    const big = { input: { userId: 'x'.repeat(70 * 1024), featureId: 'api-calls' } };
    await post(emulator, CREATE_USAGE_EVENT, big);
    await post(emulator, CREATE_USAGE_EVENT, { input: { userId: '124', featureId: 'api-calls' } });
    expect(emulator.requests().map((entry) => [entry.variables === null, entry.variablesOmitted])).toEqual([
      [true, true],
      [false, undefined],
    ]);
  });

  it('is cleared by reset()', async () => {
    await post(emulator, '{ users { id } }');
    expect(emulator.requests()).toHaveLength(1);
    emulator.reset();
    expect(emulator.requests()).toEqual([]);
  });
});
