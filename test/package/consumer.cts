// Type-checked against the installed tarball under NodeNext: a CommonJS consumer, resolved through "require".
import kanaMeterModule = require('kana-meter');
import emulatorModule = require('kana-meter/emulator');

const kana = kanaMeterModule.kanaMeter({ apiKey: 'prv_test_x', userId: () => 'u1' });
const flushed: Promise<void> = kana.flush();
const started = emulatorModule.startKanaEmulator();
export = { flushed, started };
