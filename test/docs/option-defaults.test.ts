// An option's literal @default must be what the parser gives when the option is left out: the generator refuses a drift.

import { describe, expect, it } from 'vitest';
import { checkDefault } from '../../scripts/options-reference.js';

describe('checkDefault (npm run docs:options)', () => {
  it('throws when a literal @default is not the parsed default, naming the option and both values', () => {
    expect(() => checkDefault('KanaMeterOptions.flushInterval', ['1000'], 2000)).toThrow(
      'KanaMeterOptions.flushInterval: @default 1000, but parseOptions gives 2000',
    );
    expect(() => checkDefault('X.mode', ["'allow'"], 'deny')).toThrow(/@default 'allow'/);
    expect(() => checkDefault('X.retry', ['{ retries: 5, factor: 2 }'], { retries: 5, factor: 3 })).toThrow(/X\.retry/);
    expect(() => checkDefault('X.hook', ['undefined (off)'], () => {})).toThrow(/X\.hook/);
  });

  it('accepts a literal that matches, with or without a trailing (comment)', () => {
    expect(() => checkDefault('X.ttl', ['300000 (5 minutes)'], 300_000)).not.toThrow();
    expect(() => checkDefault('X.on', ['true'], true)).not.toThrow();
    expect(() =>
      checkDefault('X.retry', ['{ retries: 5, randomize: true }'], { retries: 5, randomize: true }),
    ).not.toThrow();
    expect(() => checkDefault('X.spool', ['undefined (no spool)'], undefined)).not.toThrow();
  });

  it('skips a @default that is prose or code, not a literal', () => {
    expect(() => checkDefault('X.logger', ["pino({ name: 'kana-meter', level: 'warn' })"], 'anything')).not.toThrow();
    expect(() => checkDefault('X.store', ['new MemoryStore() (this process only)'], undefined)).not.toThrow();
    expect(() => checkDefault('X.userId', ['none: required'], undefined)).not.toThrow();
  });
});
