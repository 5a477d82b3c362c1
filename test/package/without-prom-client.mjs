// Runs inside the temporary project before prom-client is installed: the main entry loads without it, as ESM and
// CommonJS; kana-meter/prometheus fails to load, naming prom-client. The same for @opentelemetry/api and
// kana-meter/opentelemetry.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

async function loadFailure(load) {
  try {
    await load();
    return 'loaded';
  } catch (error) {
    return { code: error.code, namesPromClient: error.message.includes("'prom-client'") };
  }
}

async function loadFailureOpenTelemetry(load) {
  try {
    await load();
    return 'loaded';
  } catch (error) {
    return { code: error.code, namesOpenTelemetry: error.message.includes("'@opentelemetry/api'") };
  }
}

const esm = await import('kana-meter');
const cjs = require('kana-meter');
console.log(
  JSON.stringify({
    promClient: await loadFailure(() => require.resolve('prom-client')),
    esm: typeof esm.kanaMeter,
    cjs: typeof cjs.kanaMeter,
    prometheusEsm: await loadFailure(() => import('kana-meter/prometheus')),
    prometheusCjs: await loadFailure(() => require('kana-meter/prometheus')),
    openTelemetryApi: await loadFailureOpenTelemetry(() => require.resolve('@opentelemetry/api')),
    openTelemetryEsm: await loadFailureOpenTelemetry(() => import('kana-meter/opentelemetry')),
    openTelemetryCjs: await loadFailureOpenTelemetry(() => require('kana-meter/opentelemetry')),
  }),
);
