// Test runner: Node environment, real emulator servers started by the tests themselves.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // kana-meter's own entries resolve to src, as in tsconfig.json's paths, so a test can import
    // 'kana-meter/emulator' exactly as a user does (the README's vitest example runs as a test).
    alias: [
      { find: /^kana-meter$/, replacement: fileURLToPath(new URL('./src/index.ts', import.meta.url)) },
      {
        find: /^kana-meter\/emulator$/,
        replacement: fileURLToPath(new URL('./src/emulator/index.ts', import.meta.url)),
      },
      {
        find: /^kana-meter\/prometheus$/,
        replacement: fileURLToPath(new URL('./src/integrations/prometheus.ts', import.meta.url)),
      },
      {
        find: /^kana-meter\/redis$/,
        replacement: fileURLToPath(new URL('./src/stores/redis-store.ts', import.meta.url)),
      },
      {
        find: /^kana-meter\/opentelemetry$/,
        replacement: fileURLToPath(new URL('./src/integrations/opentelemetry.ts', import.meta.url)),
      },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    environment: 'node',
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Prints the one line that says Redis tests are skipped here and how to install redis-server.
    globalSetup: ['test/helpers/redis.ts'],
  },
});
