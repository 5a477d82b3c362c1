// Whatever a host's hook returns, nothing crashes the process: odd values are logged and counted, never thrown.

import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type KanaMeterOptions, kanaMeter, logCodes, meter } from '../../src/index.js';
import { MAX_USER_ID_LENGTH } from '../../src/metering/user-id.js';
import { basicSeed, expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

const env = useEmulator();

/** Errors that escaped to the process: each one would have crashed a server. */
const escaped: unknown[] = [];
const onEscaped = (error: unknown) => void escaped.push(error);

beforeEach(() => {
  env.emulator.reset();
  env.emulator.seed(basicSeed);
  escaped.length = 0;
  process.on('uncaughtException', onEscaped);
  process.on('unhandledRejection', onEscaped);
});
afterEach(() => {
  process.off('uncaughtException', onEscaped);
  process.off('unhandledRejection', onEscaped);
  expect(escaped).toEqual([]);
});

function setup(overrides: Partial<KanaMeterOptions>, delta?: (req: never) => unknown) {
  const { options, sink } = meterOptions(env.emulator, overrides);
  const kana = env.track(kanaMeter(options));
  let ran = 0;
  const app = meteredApp(expressVersions[0][1], kana, (app) =>
    app.get('/r', meter('reports', delta ? { delta: delta as never } : undefined), (_req, res) => {
      ran++;
      res.json({});
    }),
  );
  return {
    kana,
    sink,
    hit: (user = 'u1', status = 200) => request(app).get('/r').set('x-user', user).expect(status),
    ran: () => ran,
  };
}

/** A thenable whose `then` throws when called. */
const throwingThen = () => ({
  // biome-ignore lint/suspicious/noThenProperty: a hostile thenable is the point
  then() {
    throw new Error('then exploded');
  },
});

/** An object whose `then` cannot even be read. */
const throwingThenGetter = () =>
  Object.defineProperty({}, 'then', {
    get() {
      throw new Error('then getter exploded');
    },
  });

/** A thenable that calls back twice, with two different ids. */
const doubleCallback = () => ({
  // biome-ignore lint/suspicious/noThenProperty: a misbehaving thenable is the point
  then(resolve: (value: string) => void) {
    resolve('u1');
    resolve('u2');
  },
});

describe('delta', () => {
  it.each([
    ['a null-prototype object (String() throws on it)', () => Object.create(null)],
    ['a symbol', () => Symbol('rows')],
    ['a promise of a null-prototype object', async () => Object.create(null)],
  ])('%s: not sent, logged and counted as an invalid delta', async (_name, delta) => {
    const { kana, sink, hit } = setup({}, delta);
    await hit();
    await kana.flush();
    expect(kana.stats()).toMatchObject({ invalidDelta: 1, captured: 0 });
    expect(sink.withCode(logCodes.invalidDelta)).toEqual([expect.objectContaining({ featureId: 'reports' })]);
    expect(env.emulator.usageCalls()).toEqual([]);
  });

  it.each([
    ['whose then throws', throwingThen],
    ['whose then cannot be read', throwingThenGetter],
  ])('a thenable %s: not sent, logged and counted as a hook error', async (_name, delta) => {
    const { kana, sink, hit } = setup({}, delta);
    await hit();
    await kana.flush();
    expect(kana.stats()).toMatchObject({ hookErrors: 1, captured: 0 });
    expect(sink.withCode(logCodes.hookFailed)).toEqual([expect.objectContaining({ hook: 'delta' })]);
  });
});

describe('userId', () => {
  it.each([
    ['whose then throws', throwingThen],
    ['whose then cannot be read', throwingThenGetter],
  ])('a thenable %s: not billed, logged and counted', async (_name, userId) => {
    const { kana, sink, hit } = setup({ userId: userId as never });
    await hit();
    await kana.flush();
    expect(kana.stats()).toMatchObject({ userIdErrors: 1, captured: 0 });
    expect(sink.withCode(logCodes.userIdFailed)).toHaveLength(1);
  });

  it('a thenable that calls back twice bills once, the first id', async () => {
    const { kana, hit } = setup({ userId: doubleCallback as never });
    await hit();
    await kana.flush();
    expect(env.emulator.usageCalls().map((call) => call.userId)).toEqual(['u1']);
  });

  it('a logger that throws cannot crash it either', async () => {
    const throwing = {
      error: () => {
        throw new Error('log sink down');
      },
      warn() {},
      info() {},
      debug() {},
    };
    const { kana, hit } = setup({ logger: throwing, userId: throwingThen as never });
    await hit();
    await kana.flush();
    expect(kana.stats().userIdErrors).toBe(1);
  });
});

describe(`user ids longer than ${MAX_USER_ID_LENGTH} characters`, () => {
  const atLimit = 'a'.repeat(MAX_USER_ID_LENGTH);
  const tooLong = `${'b'.repeat(MAX_USER_ID_LENGTH)}x`;

  it('are not billed: logged without the id, and counted, per request; an id at the limit is billed', async () => {
    env.emulator.seed({ users: [{ id: atLimit }] });
    const { kana, sink, hit } = setup({});
    await hit(tooLong);
    await hit(atLimit);
    await kana.flush();
    expect(env.emulator.usageCalls().map((call) => call.userId)).toEqual([atLimit]);
    expect(kana.stats()).toMatchObject({ userIdErrors: 1, captured: 1 });
    const [line] = sink.withCode(logCodes.userIdFailed);
    expect(line?.err).toMatchObject({
      message: `userId returned a string of 257 characters; a Kana user id is at most 256`,
    });
    expect(sink.raw.join('')).not.toContain('bbbbbbbbbbbbbbbb');
  });

  it('kana.record() and kana.check() refuse one with a TypeError that does not echo it', async () => {
    const { kana } = setup({});
    expect(() => kana.record(tooLong, 'reports')).toThrow(
      /record\(\): argument `userId` must be at most 256 characters; got a string of 257/,
    );
    await expect(kana.check(tooLong, 'reports')).rejects.toThrow(/check\(\): argument `userId` must be at most 256/);
    expect(() => kana.record(tooLong, 'reports')).not.toThrow(/bbbb/);
  });

  // Issue 16: a userId that fails is refused like a request without a user (anonymous: 'refuse', the default).
  it('on an enforced route: refused with 401 like a request without a user; the handler does not run', async () => {
    const { kana, hit, ran } = setup({ enforce: true });
    await hit(tooLong, 401);
    await kana.flush();
    expect(ran()).toBe(0);
    expect(kana.stats()).toMatchObject({ refusedNoUser: 1, unchecked: 0, checks: 0, userIdErrors: 1, captured: 0 });
    expect(env.emulator.requests()).toEqual([]);
  });
});

describe('on an enforced route (the gate reads userId before the handler)', () => {
  it.each([
    ['whose then throws', throwingThen],
    ['whose then cannot be read', throwingThenGetter],
  ])('a userId thenable %s: refused with 401 (anonymous: refuse), unchecked and unbilled', async (_name, userId) => {
    const { kana, hit, ran } = setup({ enforce: true, userId: userId as never });
    await hit('u1', 401);
    await kana.flush();
    expect(ran()).toBe(0);
    expect(kana.stats()).toMatchObject({ refusedNoUser: 1, unchecked: 0, userIdErrors: 1, captured: 0 });
  });

  it('a userId thenable that calls back twice runs the handler once', async () => {
    const { kana, hit, ran } = setup({ enforce: true, userId: doubleCallback as never });
    await hit();
    await kana.flush();
    expect(ran()).toBe(1);
    expect(env.emulator.usageCalls().map((call) => call.userId)).toEqual(['u1']);
  });
});
