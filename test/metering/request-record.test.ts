// The per-request record kana-meter keeps in a WeakMap keyed by the request must never reach the request or the
// response: a WeakMap value that reaches its own key keeps every request alive through each young-generation GC (a
// fifth more GC time per request under HTTP load, measured in docs/performance.md).

import type { Request, Response } from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { kanaMeter, meter } from '../../src/index.js';
import { type SharedRequest, sharedRequest } from '../../src/metering/request-usage.js';
import { expressVersions, meteredApp, meterOptions } from '../helpers/app.js';
import { useEmulator } from '../helpers/emulator.js';

/** Whether `target` is reachable from `from` through own properties (objects, arrays, Maps and Sets). */
function reaches(from: unknown, target: object, seen = new Set<unknown>()): boolean {
  if (from === target) return true;
  if (typeof from !== 'object' || from === null || seen.has(from)) return false;
  seen.add(from);
  const values =
    from instanceof Map ? [...from.keys(), ...from.values()] : from instanceof Set ? [...from] : Object.values(from);
  return values.some((value) => reaches(value, target, seen));
}

describe('the per-request record', () => {
  const env = useEmulator();
  beforeEach(() => {
    env.emulator.reset();
    env.emulator.seed({
      users: [{ id: 'u1' }],
      features: [
        { id: 'api-calls', type: 'CONSUMABLE' },
        { id: 'exports', type: 'CONSUMABLE' },
      ],
      packages: [
        {
          id: 'p',
          features: [
            { id: 'api-calls', limit: 100 },
            { id: 'exports', limit: 100 },
          ],
        },
      ],
      subscriptions: [{ userId: 'u1', packageId: 'p' }],
    });
  });

  it.each(expressVersions)(
    'reaches neither the request nor the response (%s), enforced, with meter() and holds',
    async (_name, createExpress) => {
      const { options } = meterOptions(env.emulator, { routes: { 'GET /calls': 'api-calls' }, enforce: true });
      const kana = env.trackTest(kanaMeter(options));
      const seen: { record: SharedRequest; req: Request; res: Response }[] = [];
      const app = meteredApp(createExpress, kana, (app) =>
        app.get('/calls', meter('exports'), (req, res) => {
          res.on('finish', () => seen.push({ record: sharedRequest(req), req, res }));
          res.json({ decision: req.kana?.allowed });
        }),
      );
      await request(app).get('/calls').set('x-user', 'u1').expect(200, { decision: true });
      await kana.flush();
      expect(seen).toHaveLength(1);
      const [{ record, req, res }] = seen as [(typeof seen)[0]];
      // The record is the one the stages filled: a usage record with both features, a decision.
      expect(record.usage?.checked).toEqual(['api-calls', 'exports']);
      expect(record.decision?.featureId).toBe('exports');
      expect(reaches(record, req)).toBe(false);
      expect(reaches(record, res)).toBe(false);
      expect(env.emulator.usage('u1', 'api-calls') + env.emulator.usage('u1', 'exports')).toBe(1);
    },
  );
});
