// The dashboard in a real browser (Debian's headless Chromium): bars follow usage recorded through the API.
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type EmulatorSeed, type KanaEmulator, startKanaEmulator } from '../../src/emulator/index.js';
import { CAN_USE_FEATURE, CREATE_USAGE_EVENT, post } from './graphql-client.js';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
/** .ci/run installs Chromium and sets this, so that CI cannot pass by skipping. */
const chromiumRequired = process.env.KANA_METER_REQUIRE_CHROMIUM === '1';

const seed: EmulatorSeed = {
  users: [{ id: 'u1', name: 'Ada' }],
  features: [
    { id: 'api-calls', name: 'API Calls', type: 'CONSUMABLE', unitLabel: 'call', unitLabelPlural: 'calls' },
    { id: 'reports', name: 'Reports', type: 'CONSUMABLE' },
  ],
  packages: [
    {
      id: 'pro',
      name: 'Pro',
      features: [
        { id: 'api-calls', limit: 100, resetPeriod: 'MONTH' },
        { id: 'reports', limit: null },
      ],
    },
  ],
  subscriptions: [{ userId: 'u1', packageId: 'pro' }],
  usage: [{ userId: 'u1', featureId: 'api-calls', used: 10 }],
};

async function recordUsage(emulator: KanaEmulator, userId: string, featureId: string, delta: number) {
  const response = await post(emulator, CREATE_USAGE_EVENT, { input: { userId, featureId, delta } });
  expect(response.data).toEqual({ createUsageEvent: true });
}

if (!hasChromium && !chromiumRequired) {
  console.warn(
    `Skipping the dashboard's browser tests: no ${CHROMIUM}. Install Debian's chromium package to run them.`,
  );
}
if (!hasChromium && chromiumRequired) {
  it(`has ${CHROMIUM}, which .ci/run installs`, () => {
    expect.fail(`${CHROMIUM} is missing although KANA_METER_REQUIRE_CHROMIUM=1: install Debian's chromium package`);
  });
}

describe.skipIf(!hasChromium)(
  hasChromium
    ? 'the dashboard in headless Chromium'
    : `the dashboard in headless Chromium: SKIPPED, no ${CHROMIUM} (apt-get install chromium)`,
  () => {
    let browser: Browser;
    let emulator: KanaEmulator;
    let page: Page;
    let pageErrors: string[];

    beforeAll(async () => {
      emulator = await startKanaEmulator({ seed });
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      });
    }, 60_000);
    afterAll(async () => {
      await browser?.close();
      await emulator?.close();
    });
    beforeEach(async () => {
      emulator.reset();
      pageErrors = [];
      page = await browser.newPage();
      page.on('pageerror', (error) => pageErrors.push(error.message));
    });
    afterEach(async () => {
      await page.close();
      expect(pageErrors).toEqual([]);
    });

    it('shows the plan and moves the bar when usage is recorded through the API', async () => {
      await page.goto(emulator.dashboardUrl);
      const bar = page.getByRole('progressbar', { name: 'API Calls for Ada (u1)' });
      await expect.poll(() => bar.getAttribute('aria-valuenow')).toBe('10');
      expect(await bar.getAttribute('aria-valuemax')).toBe('100');
      await expect.poll(() => page.getByRole('list', { name: 'Plans of Ada (u1)' }).textContent()).toMatch(/Pro/);
      await expect.poll(() => page.getByText('0 used · unlimited').count()).toBe(1);

      await recordUsage(emulator, 'u1', 'api-calls', 25);

      await expect.poll(() => bar.getAttribute('aria-valuenow'), { timeout: 5000 }).toBe('35');
      await expect.poll(() => page.getByText('35 / 100 calls').count()).toBe(1);
      expect(await page.getByRole('status').textContent()).toBe('Live: refreshing every second.');
    });

    it('shows usage over budget in words, not only by colour', async () => {
      await page.goto(emulator.dashboardUrl);
      const bar = page.getByRole('progressbar', { name: 'API Calls for Ada (u1)' });
      await expect.poll(() => bar.getAttribute('aria-valuenow')).toBe('10');

      await recordUsage(emulator, 'u1', 'api-calls', 110);

      await expect.poll(() => bar.getAttribute('aria-valuetext')).toBe('120 of 100 calls, 20 over budget');
      expect(await bar.getAttribute('aria-valuenow')).toBe('100');
      expect(await bar.getAttribute('class')).toContain('over');
      expect(await page.getByText('120 / 100 calls · 20 over budget').count()).toBe(1);
      expect(await page.getByText('blocked', { exact: true }).count()).toBe(1);
    });

    it('shows users created later, with markup in their names as plain text', async () => {
      await page.goto(emulator.dashboardUrl);
      await expect.poll(() => page.getByRole('heading', { level: 2 }).allTextContents()).toEqual(['Adau1']);
      const name = '<img src=x onerror="window.injected=true"><b>Mallory</b>';
      const created = await post(emulator, 'mutation ($input: CreateUserInput!) { createUser(input: $input) { id } }', {
        input: { id: 'u2', name },
      });
      expect(created.data).toEqual({ createUser: { id: 'u2' } });

      await expect.poll(() => page.getByRole('heading', { level: 2 }).count()).toBe(2);
      expect(await page.getByRole('heading', { level: 2 }).nth(1).textContent()).toBe(`${name}u2`);
      expect(await page.locator('main img, main b').count()).toBe(0);
      expect(await page.evaluate(() => (globalThis as { injected?: boolean }).injected)).toBeUndefined();
    });

    it('says when the emulator cannot be reached, and recovers', async () => {
      await page.goto(emulator.dashboardUrl);
      const status = page.getByRole('status');
      await expect.poll(() => status.textContent()).toBe('Live: refreshing every second.');
      await emulator.setOffline(true);
      try {
        await expect.poll(() => status.textContent(), { timeout: 5000 }).toMatch(/^Cannot reach the emulator/);
      } finally {
        await emulator.setOffline(false);
      }
      await expect.poll(() => status.textContent(), { timeout: 5000 }).toBe('Live: refreshing every second.');
    });

    it('shows what was billed: a live feed of usage and checks, usage over time per feature, filtered by user', async () => {
      emulator.seed({ users: [{ id: 'u2', name: 'Grace' }], subscriptions: [{ userId: 'u2', packageId: 'pro' }] });
      await page.setViewportSize({ width: 900, height: 900 });
      await page.goto(emulator.dashboardUrl);
      await expect.poll(() => page.locator('#feed tbody').textContent()).toBe('No usage or checks yet.');

      await recordUsage(emulator, 'u1', 'api-calls', 3);
      await recordUsage(emulator, 'u2', 'reports', 2);
      await recordUsage(emulator, 'u1', 'api-calls', 4);
      const check = await post(emulator, CAN_USE_FEATURE, { userId: 'u1', featureId: 'api-calls', delta: 500 });
      expect((check.data as { canUseFeature: { access: boolean } }).canUseFeature.access).toBe(false);

      // The feed, newest first: time, kind, user, feature, delta, outcome.
      const rows = page.locator('#feed tbody tr');
      await expect.poll(() => rows.count(), { timeout: 5000 }).toBe(4);
      const cells = await rows.evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
      expect(cells.map((row) => row.slice(1))).toEqual([
        ['check', 'u1', 'api-calls', '500', 'denied'],
        ['usage', 'u1', 'api-calls', '4', 'recorded'],
        ['usage', 'u2', 'reports', '2', 'recorded'],
        ['usage', 'u1', 'api-calls', '3', 'recorded'],
      ]);
      expect(cells[0]?.[0]).toMatch(/^\d\d:\d\d:\d\d$/);

      // The chart: one line per feature, ending at its total.
      const chart = page.getByRole('img', { name: 'Usage over time per feature' });
      await chart.waitFor();
      const totals = () =>
        page
          .locator('#chart polyline')
          .evaluateAll((lines) =>
            lines.map((line) => [line.getAttribute('data-feature'), line.getAttribute('data-total')]),
          );
      expect(await totals()).toEqual([
        ['api-calls', '7'],
        ['reports', '2'],
      ]);
      mkdirSync('docs/images', { recursive: true });
      await page.screenshot({ path: 'docs/images/dashboard-billed.png', fullPage: true });
      expect(statSync('docs/images/dashboard-billed.png').size).toBeGreaterThan(10_000);

      // Filtered by user: the feed, the chart and the user list show that user only.
      await page.getByLabel('User').selectOption('u2');
      await expect.poll(() => rows.count()).toBe(1);
      expect(await rows.first().getAttribute('data-user')).toBe('u2');
      expect(await totals()).toEqual([['reports', '2']]);
      await page.getByRole('img', { name: 'Usage over time per feature for u2' }).waitFor();
      expect(await page.getByRole('heading', { level: 2 }).allTextContents()).toEqual(['Graceu2']);
      // It stays filtered as new usage comes in.
      await recordUsage(emulator, 'u1', 'reports', 1);
      await recordUsage(emulator, 'u2', 'reports', 5);
      await expect.poll(() => rows.count(), { timeout: 5000 }).toBe(2);
      expect(await totals()).toEqual([['reports', '7']]);
    });

    it('asks for the API key when the emulator listens beyond loopback', async () => {
      // 0.0.0.0 is every interface; the browser connects through loopback only.
      const open = await startKanaEmulator({ host: '0.0.0.0', seed });
      try {
        await page.goto(open.dashboardUrl);
        const keyField = page.getByLabel('API key');
        await keyField.waitFor({ state: 'visible' });
        expect(await page.getByRole('progressbar').count()).toBe(0);

        await keyField.fill('prv_test_notTheKey');
        await page.getByRole('button', { name: 'Show usage' }).click();
        await expect.poll(() => page.getByRole('alert').textContent()).toBe('That key was not accepted.');

        await keyField.fill(open.apiKey);
        await page.getByRole('button', { name: 'Show usage' }).click();
        const bar = page.getByRole('progressbar', { name: 'API Calls for Ada (u1)' });
        await expect.poll(() => bar.getAttribute('aria-valuenow')).toBe('10');
        expect(await keyField.isVisible()).toBe(false);
      } finally {
        await open.close();
      }
    });
  },
);
