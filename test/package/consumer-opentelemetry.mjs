// Runs inside the temporary project once the OpenTelemetry API and SDK are installed: kana-meter/opentelemetry as ESM,
// with the SDK's in-memory exporters. Kana from the environment.
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import express from 'express';
import { kanaMeter, meter } from 'kana-meter';
import { openTelemetry } from 'kana-meter/opentelemetry';
import drive from './drive.cjs';

const { KANA_ENDPOINT: endpoint, KANA_API_KEY: apiKey, KANA_USER: user } = process.env;
const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
const meterProvider = new MeterProvider({ readers: [reader] });
const spanExporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] });
const metrics = openTelemetry({ meterProvider, tracerProvider });
const { served } = await drive({ express, kanaMeter, meter, endpoint, apiKey, user, metrics });
await reader.forceFlush();
const points = (name) =>
  metricExporter
    .getMetrics()
    .flatMap((resource) => resource.scopeMetrics.flatMap((scope) => scope.metrics))
    .find((metric) => metric.descriptor.name === name)?.dataPoints ?? [];
const units = Object.fromEntries(
  points('kana_meter.units.delivered').map((point) => [point.attributes['kana_meter.feature.id'], point.value]),
);
const attempts = spanExporter.getFinishedSpans().filter((span) => span.name === 'mutation createUsageEvent');
console.log(
  JSON.stringify({
    esm: true,
    served,
    units,
    retries: points('kana_meter.usage.retries')[0]?.value,
    attempts: attempts.map((span) => span.attributes['http.response.status_code'] ?? 'ok').sort(),
  }),
);
