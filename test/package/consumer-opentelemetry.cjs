// Runs inside the temporary project once the OpenTelemetry API and SDK are installed: kana-meter/opentelemetry required
// as CommonJS, on the global providers the SDK registers. Kana from the environment.
const { metrics: otelMetrics, trace } = require('@opentelemetry/api');
const {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} = require('@opentelemetry/sdk-metrics');
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const express = require('express');
const { kanaMeter, meter } = require('kana-meter');
const { openTelemetry } = require('kana-meter/opentelemetry');
const drive = require('./drive.cjs');

(async () => {
  const { KANA_ENDPOINT: endpoint, KANA_API_KEY: apiKey, KANA_USER: user } = process.env;
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 });
  otelMetrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
  const spanExporter = new InMemorySpanExporter();
  trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] }));
  const { served } = await drive({ express, kanaMeter, meter, endpoint, apiKey, user, metrics: openTelemetry() });
  await reader.forceFlush();
  const value = (name) =>
    metricExporter
      .getMetrics()
      .flatMap((resource) => resource.scopeMetrics.flatMap((scope) => scope.metrics))
      .find((metric) => metric.descriptor.name === name)?.dataPoints[0]?.value;
  console.log(
    JSON.stringify({
      cjs: true,
      served,
      delivered: value('kana_meter.events.delivered'),
      available: value('kana_meter.kana.available'),
      // One batch per user and feature, or more if the requests spanned a flush interval.
      deliveries: spanExporter.getFinishedSpans().filter((span) => span.name === 'kana-meter deliver').length >= 2,
    }),
  );
})();
