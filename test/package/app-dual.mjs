// Two copies of the packed tarball in one process, as an app whose dependencies load it both ways: kanaMeter() from
// the CommonJS build, meter() from the ESM build. The meter() routes must still reach that kanaMeter() and be billed.
import { createRequire } from 'node:module';
import express from 'express';
import { meter } from 'kana-meter';
import drive from './drive.cjs';

const { kanaMeter } = createRequire(import.meta.url)('kana-meter');
if (kanaMeter === (await import('kana-meter')).kanaMeter) throw new Error('expected two copies of kana-meter');
const { KANA_ENDPOINT: endpoint, KANA_API_KEY: apiKey, KANA_USER: user } = process.env;
drive({ express, kanaMeter, meter, endpoint, apiKey, user }).then((result) => console.log(JSON.stringify(result)));
