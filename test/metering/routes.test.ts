// The route map: key syntax, Express 5 path matching, method rules and creation-time errors.

import { describe, expect, it } from 'vitest';
import { compileRoutes } from '../../src/metering/routes.js';

function featureOf(routes: Record<string, unknown>, method: string, path: string): string | undefined {
  return compileRoutes(routes)?.(method, path)?.featureId;
}

describe('compileRoutes', () => {
  it('matches METHOD and an Express path with params', () => {
    const routes = { 'POST /api/search': 'api-calls', 'GET /api/items/:id': { feature: 'item-reads', delta: 2 } };
    expect(featureOf(routes, 'POST', '/api/search')).toBe('api-calls');
    expect(featureOf(routes, 'GET', '/api/items/42')).toBe('item-reads');
    expect(compileRoutes(routes)?.('GET', '/api/items/42')?.delta).toBe(2);
    expect(featureOf(routes, 'GET', '/api/search')).toBeUndefined();
    expect(featureOf(routes, 'GET', '/api/items/42/extra')).toBeUndefined();
    expect(featureOf(routes, 'GET', '/api/items')).toBeUndefined();
  });

  it('matches like Express 5 routes: case-insensitive, optional trailing slash', () => {
    const routes = { 'GET /api/Items': 'x' };
    expect(featureOf(routes, 'GET', '/api/items')).toBe('x');
    expect(featureOf(routes, 'GET', '/api/items/')).toBe('x');
  });

  it('supports splats and optional segments', () => {
    const routes = { 'GET /files/*path': 'files', 'GET /v{/:version}/status': 'status' };
    expect(featureOf(routes, 'GET', '/files/a/b/c')).toBe('files');
    expect(featureOf(routes, 'GET', '/v/status')).toBe('status');
    expect(featureOf(routes, 'GET', '/v/2/status')).toBe('status');
  });

  it('ALL and * match any method; method names are case-insensitive', () => {
    const routes = { 'ALL /a': 'a', '* /b': 'b', 'post /c': 'c' };
    for (const method of ['GET', 'POST', 'DELETE', 'PATCH']) {
      expect(featureOf(routes, method, '/a')).toBe('a');
      expect(featureOf(routes, method, '/b')).toBe('b');
    }
    expect(featureOf(routes, 'POST', '/c')).toBe('c');
    expect(featureOf(routes, 'PUT', '/c')).toBeUndefined();
  });

  it('the first declared matching route wins, ALL routes included', () => {
    const routes = { 'ALL /api/*rest': 'generic', 'GET /api/special': 'special' };
    expect(featureOf(routes, 'GET', '/api/special')).toBe('generic');
    const reversed = { 'GET /api/special': 'special', 'ALL /api/*rest': 'generic' };
    expect(featureOf(reversed, 'GET', '/api/special')).toBe('special');
    expect(featureOf(reversed, 'GET', '/api/other')).toBe('generic');
  });

  it('HEAD uses GET routes, as Express does', () => {
    expect(featureOf({ 'GET /r': 'r' }, 'HEAD', '/r')).toBe('r');
    expect(featureOf({ 'HEAD /h': 'h', 'GET /r': 'r' }, 'HEAD', '/r')).toBe('r');
  });

  it('returns undefined without a map', () => {
    expect(compileRoutes(undefined)).toBeUndefined();
  });

  it.each([
    ['/api/search', /routes\["\/api\/search"\].*'METHOD \/path'/],
    ['POST api/search', /routes\["POST api\/search"\]/],
    ['FETCH /x', /routes\["FETCH \/x"\].*unknown HTTP method "FETCH"/],
    ['GET /files/*', /routes\["GET \/files\/\*"\].*invalid Express 5 path/],
  ])('rejects the key %j, naming it', (key, message) => {
    expect(() => compileRoutes({ [key]: 'f' })).toThrow(TypeError);
    expect(() => compileRoutes({ [key]: 'f' })).toThrow(message);
  });

  it.each([
    ['', /routes\["GET \/x"\]` must be a non-empty feature id string; got ""/],
    [42, /routes\["GET \/x"\]` must be a feature id string or \{ feature: 'id', delta\?, enforce\? \}; got 42/],
    [{ delta: 2 }, /routes\["GET \/x"\]\.feature` must be a non-empty feature id string; got undefined/],
    [{ feature: 'f', delta: 0 }, /routes\["GET \/x"\]\.delta` must be an integer in 1\.\.2147483647/],
    [{ feature: 'f', delta: 1.5 }, /\.delta` must be an integer/],
    [{ feature: 'f', deltas: 2 }, /routes\["GET \/x"\]\.deltas` must be absent/],
    [null, /routes\["GET \/x"\]` must be a feature id string or/],
  ])('rejects the value %j, naming the key', (value, message) => {
    expect(() => compileRoutes({ 'GET /x': value })).toThrow(message);
  });

  it('rejects a map that is not an object', () => {
    expect(() => compileRoutes(['GET /x'])).toThrow(/option `routes` must be an object/);
  });
});
