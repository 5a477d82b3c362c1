// One Kana emulator per test file: started before the tests, closed after them with every kanaMeter the tests made.

import { afterAll, beforeAll } from 'vitest';
import { type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import type { KanaMeter } from '../../src/index.js';

export interface EmulatorEnv {
  /** The file's emulator (available from beforeAll on). */
  readonly emulator: KanaEmulator;
  /** Closes `kana` when the file's tests are done. */
  track(kana: KanaMeter): KanaMeter;
}

export function useEmulator(): EmulatorEnv {
  let emulator: KanaEmulator | undefined;
  const meters: KanaMeter[] = [];
  beforeAll(async () => {
    emulator = await startKanaEmulator();
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
  };
}
