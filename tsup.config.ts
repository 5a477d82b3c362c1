// Build: ESM + CommonJS bundles with declarations for the main entry and the emulator.
import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    'emulator/index': 'src/emulator/index.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: false,
  // import.meta.url in the CommonJS build (the emulator locates schema.graphql with it).
  shims: true,
  // The emulator reads Kana's schema at run time; ship it beside the bundle.
  publicDir: false,
  onSuccess: 'cp src/emulator/schema.graphql dist/emulator/schema.graphql',
});
