// Runs inside the temporary project once prom-client is installed: kana-meter/prometheus as ESM, read from its registry.
// Kana from the environment.
import express from 'express';
import { kanaMeter, meter } from 'kana-meter';
import { prometheusMetrics } from 'kana-meter/prometheus';
import { Registry } from 'prom-client';
import drive from './drive.cjs';

const { KANA_ENDPOINT: endpoint, KANA_API_KEY: apiKey, KANA_USER: user } = process.env;
const register = new Registry();
const metrics = prometheusMetrics({ register });
const { served } = await drive({ express, kanaMeter, meter, endpoint, apiKey, user, metrics });
const text = await register.metrics();
const value = (name) => new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1];
console.log(
  JSON.stringify({
    esm: true,
    served,
    delivered: value('kana_meter_events_delivered_total'),
    retries: value('kana_meter_usage_call_retries_total'),
    calls503: value('kana_meter_kana_call_duration_seconds_count\\{operation="usage",outcome="KANA_SERVER_ERROR"\\}'),
  }),
);
