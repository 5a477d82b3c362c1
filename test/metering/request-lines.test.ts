// The route map matches the path Express routes on, whatever the request line: raw request lines over a socket,
// against billing and enforcement, with kanaMeter mounted four ways, on Express 4 and 5.

import type { Server } from 'node:http';
import type { Express, Request, Response } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorSeed } from '../../src/emulator/index.js';
import { type KanaMeter, kanaMeter } from '../../src/index.js';
import { expressVersions, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';
import { listen, rawRequest } from '../helpers/raw-http.js';

/**
 * Request targets for `POST /api/search` (mapped to api-calls) and `POST /api/items/:id` (mapped
 * to item-reads). `routed`: whether Express serves them with that handler, found out by sending
 * each one to Express 4 and 5, then pinned here. `matched`: whether the route map names them: the
 * path Express routes on (no fragment, no scheme and host, no query), with repeated slashes
 * collapsed, which covers every request Express routes to the handler.
 */
const targets: [
  target: string,
  routed: boolean | 'by express 4 in a sub-app',
  matched: boolean | 'when kanaMeter is on the app',
][] = [
  ['/api/search', true, true],
  ['/api/search?q=cats', true, true],
  ['/api/search#x', true, true], // a fragment: not part of the path
  ['/api/search?q=cats#x', true, true],
  ['http://x/api/search', true, true], // the absolute form
  ['http://x/api/search?q=1#f', true, true],
  ['HTTP://X/api/search', true, true],
  ['/api/search/', true, true], // Express ignores a trailing slash by default
  ['/API/Search', true, true], // and case
  ['/api/items/%41', true, true], // an encoded character in a parameter
  ['/api/%73earch', false, false], // an encoded character in the literal part: Express does not decode it
  ['/api/search%2F', false, false],
  // Repeated slashes: Express 4 lets a mount path take one more slash, so '/api//search' reaches
  // '/search' in a sub-app at '/api'. The route map collapses them: it names the next three too.
  ['/api//search', 'by express 4 in a sub-app', true],
  // A kanaMeter mounted at '/api' is not reached by these, like the routes.
  ['//api/search', false, 'when kanaMeter is on the app'],
  ['http://x//api/search', false, 'when kanaMeter is on the app'],
  ['/api/./search', false, false], // dot segments are not resolved
  ['/api/x/../search', false, false],
  ['/api/search;x', false, false],
];

const routes = { 'POST /api/search': 'api-calls', 'POST /api/items/:id': 'item-reads' };
const featureOf = (target: string) => (target.includes('items') ? 'item-reads' : 'api-calls');

/** Where kanaMeter is mounted, and where the routes go (route map keys are full paths in every case). */
interface Mount {
  name: string;
  kanaOnApp: boolean;
  /** The routes are in a sub-app mounted at /api (else on the app). */
  routesInSubApp: boolean;
  mount(app: Express, kana: KanaMeter, api: Express): void;
}
const mounts: Mount[] = [
  {
    name: 'app.use(kana), routes on the app',
    kanaOnApp: true,
    routesInSubApp: false,
    mount: (app, kana) => app.use(kana),
  },
  {
    name: 'app.use(kana), routes in a sub-app at /api',
    kanaOnApp: true,
    routesInSubApp: true,
    mount(app, kana, api) {
      app.use(kana);
      app.use('/api', api);
    },
  },
  {
    name: "app.use('/api', kana), routes in a sub-app at /api",
    kanaOnApp: false,
    routesInSubApp: true,
    mount(app, kana, api) {
      app.use('/api', kana);
      app.use('/api', api);
    },
  },
  {
    name: 'in the sub-app at /api, before its routes',
    kanaOnApp: false,
    routesInSubApp: true,
    mount(app, kana, api) {
      api.use(kana);
      app.use('/api', api);
    },
  },
];

const seed: EmulatorSeed = {
  users: [{ id: 'u1' }, { id: 'refused' }],
  features: [
    { id: 'api-calls', type: 'CONSUMABLE' },
    { id: 'item-reads', type: 'CONSUMABLE' },
  ],
  packages: [
    {
      id: 'p',
      features: [
        { id: 'api-calls', limit: null },
        { id: 'item-reads', limit: null },
      ],
    },
  ],
  // "refused" has no subscription: every check answers not-in-plan (402).
  subscriptions: [{ userId: 'u1', packageId: 'p' }],
};

const env = useEmulator();

describe.each(expressVersions)('%s', (version, createExpress) => {
  describe.each(mounts)('kanaMeter mounted $name', ({ kanaOnApp, routesInSubApp, mount }) => {
    const routedHere = (routed: boolean | string) =>
      routed === true || (routed !== false && version === 'express 4' && routesInSubApp);
    let billing: { server: Server; kana: KanaMeter; ran: string[] };
    let enforcing: { server: Server; kana: KanaMeter; ran: string[] };

    async function start(enforce: boolean) {
      const kana = env.track(kanaMeter(meterOptions(env.emulator, { routes, enforce }).options));
      const ran: string[] = [];
      const app = createExpress();
      const api = createExpress();
      mount(app, kana, api);
      for (const path of ['/search', '/items/:id']) {
        const handler = (req: Request, res: Response) => {
          ran.push(req.originalUrl);
          res.json({});
        };
        if (routesInSubApp) api.post(path, handler);
        else app.post(`/api${path}`, handler);
      }
      return { server: await listen(app), kana, ran };
    }

    beforeAll(async () => {
      env.emulator.reset();
      env.emulator.seed(seed);
      billing = await start(false);
      enforcing = await start(true);
    });
    afterAll(() => {
      billing.server.close();
      enforcing.server.close();
    });

    it.each(targets)('POST %s: served by the handler %s; billed once if it was', async (target, routedBy) => {
      const routed = routedHere(routedBy);
      const feature = featureOf(target);
      const before = env.emulator.usage('u1', feature);
      const ranBefore = billing.ran.length;
      const status = await rawRequest(billing.server, 'POST', target, { 'x-user': 'u1' });
      await billing.kana.flush();

      expect(status).toBe(routed ? 200 : 404);
      expect(billing.ran.length - ranBefore).toBe(routed ? 1 : 0);
      expect(env.emulator.usage('u1', feature) - before).toBe(routed ? 1 : 0);
    });

    it.each(targets)(
      'POST %s: served %s, named by the route map %s; refused before any handler when the plan refuses',
      async (target, _routed, matchedBy) => {
        const matched = matchedBy === true || (matchedBy !== false && kanaOnApp);
        const checksBefore = enforcing.kana.stats().checks + enforcing.kana.stats().cacheHits;
        const status = await rawRequest(enforcing.server, 'POST', target, { 'x-user': 'refused' });

        expect(status).toBe(matched ? 402 : 404);
        expect(enforcing.ran).toEqual([]);
        const { checks, cacheHits } = enforcing.kana.stats();
        expect(checks + cacheHits - checksBefore).toBe(matched ? 1 : 0);
      },
    );
  });
});
