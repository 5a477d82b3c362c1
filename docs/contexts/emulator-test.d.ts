// Context of fragments of a test file run against the Kana emulator, named `kana` as in the vitest example of docs/testing.md.

declare const kana: import('kana-meter/emulator').KanaEmulator;
