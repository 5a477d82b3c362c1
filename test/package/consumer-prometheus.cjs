// Runs inside the temporary project once prom-client is installed: kana-meter/prometheus required as CommonJS, on
// prom-client's global registry (shared with the consumer's require('prom-client')). Kana from the environment.
const express = require('express');
const { kanaMeter, meter } = require('kana-meter');
const { prometheusMetrics } = require('kana-meter/prometheus');
const { register } = require('prom-client');
const drive = require('./drive.cjs');

(async () => {
  const { KANA_ENDPOINT: endpoint, KANA_API_KEY: apiKey, KANA_USER: user } = process.env;
  const { served } = await drive({ express, kanaMeter, meter, endpoint, apiKey, user, metrics: prometheusMetrics() });
  const text = await register.metrics();
  const value = (name) => new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1];
  console.log(
    JSON.stringify({
      cjs: true,
      served,
      delivered: value('kana_meter_events_delivered_total'),
      retries: value('kana_meter_usage_call_retries_total'),
      available: value('kana_meter_kana_available'),
    }),
  );
})();
