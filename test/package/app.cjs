// A consumer of the packed tarball as CommonJS, on Express 5: Kana from the environment.
const express = require('express');
const { kanaMeter, meter } = require('kana-meter');
const drive = require('./drive.cjs');

const { KANA_ENDPOINT: endpoint, KANA_API_KEY: apiKey, KANA_USER: user } = process.env;
drive({ express, kanaMeter, meter, endpoint, apiKey, user }).then((result) => console.log(JSON.stringify(result)));
