// One Kana emulator per test file: started before the tests, closed after them with every kanaMeter the tests made (or after each test, for those tracked per test).

import { afterAll, afterEach, beforeAll } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import type { KanaMeter } from '../../src/index.js';

export interface EmulatorEnv {
  /** The file's emulator (available from beforeAll on). */
  readonly emulator: KanaEmulator;
  /** Closes `kana` when the file's tests are done. */
  track(kana: KanaMeter): KanaMeter;
  /** Closes `kana` when the current test is done, so that nothing it does later (a breaker's probe) meets the next test's faults. */
  trackTest(kana: KanaMeter): KanaMeter;
}

export function useEmulator(): EmulatorEnv {
  let emulator: KanaEmulator | undefined;
  const meters: KanaMeter[] = [];
  const metersOfTest: KanaMeter[] = [];
  beforeAll(async () => {
    emulator = await startKanaEmulator();
  });
  afterEach(async () => {
    await Promise.all(metersOfTest.splice(0).map((kana) => kana.close({ timeoutMs: 100 })));
  });
  afterAll(async () => {
    await Promise.all(meters.map((kana) => kana.close({ timeoutMs: 100 })));
    await emulator?.close();
  });
  return {
    get emulator() {
      if (!emulator) throw new Error('the emulator starts in beforeAll');
      return emulator;
    },
    track(kana) {
      meters.push(kana);
      return kana;
    },
    trackTest(kana) {
      metersOfTest.push(kana);
      return kana;
    },
  };
}
