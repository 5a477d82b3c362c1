// Build: ESM + CommonJS bundles with declarations for the main entry, the emulator, the Prometheus and OpenTelemetry integrations and RedisStore; the CLI as ESM.
import { defineConfig } from 'tsup';

/**
 * Dependencies published as ESM only. The CommonJS build bundles them: `require()` of an ES module
 * gives its namespace, so a default import compiled to CommonJS (`(0, import_p_retry.default)(...)`)
 * is not the function, and tools without require(esm) (Jest, older loaders) cannot load them at all.
 * The ESM build keeps them external, as dependencies.
 */
const ESM_ONLY_DEPENDENCIES = ['p-retry', 'is-network-error'];

export default defineConfig([
  {
    entry: {
      index: 'src/index.ts',
      'emulator/index': 'src/emulator/index.ts',
      // The only entry that imports prom-client (an optional peer, left external): the main bundle must not.
      prometheus: 'src/integrations/prometheus.ts',
      // kana-meter/redis: RedisStore over the user's own client (no Redis client is a dependency).
      redis: 'src/stores/redis-store.ts',
      // kana-meter/opentelemetry: the only entry that imports @opentelemetry/api (an optional peer, left external).
      opentelemetry: 'src/integrations/opentelemetry.ts',
    },
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    // The maps name src/*.ts, which the tarball does not ship: embed their text (a stack trace stays readable).
    esbuildOptions(options) {
      options.sourcesContent = true;
    },
    // tsup builds the two configs at once: this clean must spare the CLI's output.
    clean: ['!emulator/cli.js', '!emulator/cli.js.map', '!cli.js', '!cli.js.map'],
    target: 'node20',
    splitting: false,
    // import.meta.url in the CommonJS build (the emulator locates schema.graphql with it).
    shims: true,
    // tsup's noExternal applies to both formats: let them through its external check, then keep
    // them external again in the ESM build only.
    noExternal: ESM_ONLY_DEPENDENCIES,
    esbuildPlugins: [
      {
        name: 'esm-only-dependencies-external-in-esm',
        setup(build) {
          if (build.initialOptions.format !== 'esm') return;
          const filter = new RegExp(`^(${ESM_ONLY_DEPENDENCIES.join('|')})(/|$)`);
          build.onResolve({ filter }, (args) => ({ path: args.path, external: true }));
        },
      },
    ],
    // The emulator reads Kana's schema at run time; ship it beside the bundle.
    publicDir: false,
    onSuccess: 'cp src/emulator/schema.graphql dist/emulator/schema.graphql',
  },
  {
    // `kana-emulator` and `kana-meter` (package.json "bin"): one ESM file each with a shebang, which tsup makes executable.
    // It finds schema.graphql beside itself, in dist/emulator/, like the emulator bundle does.
    entry: { 'emulator/cli': 'src/emulator/cli.ts', cli: 'src/reconcile/cli.ts' },
    format: ['esm'],
    dts: false,
    sourcemap: true,
    esbuildOptions(options) {
      options.sourcesContent = true;
    },
    clean: false,
    target: 'node20',
    splitting: false,
    banner: { js: '#!/usr/bin/env node' },
  },
]);
