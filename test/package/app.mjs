// A consumer of the packed tarball as ESM (and the entry esbuild bundles, to CommonJS and to ESM): Kana from the environment.
// No top-level await: esbuild cannot turn it into CommonJS.
import express from 'express';
import { kanaMeter, meter } from 'kana-meter';
import drive from './drive.cjs';

const { KANA_ENDPOINT: endpoint, KANA_API_KEY: apiKey, KANA_USER: user } = process.env;
drive({ express, kanaMeter, meter, endpoint, apiKey, user }).then((result) => console.log(JSON.stringify(result)));
