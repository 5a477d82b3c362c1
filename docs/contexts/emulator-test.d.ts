// Context of fragments of a test file run against the Kana emulator, named `kana` as in the README's vitest example.

declare const kana: import('kana-meter/emulator').KanaEmulator;
