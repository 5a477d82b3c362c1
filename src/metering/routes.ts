// The route -> feature map: 'METHOD /path' keys compiled once into per-method regex lists.

import { METHODS } from 'node:http';
import { pathToRegexp } from 'path-to-regexp';
import { optionError } from '../config/option-checks.js';
import type { FeatureOptions, MeteredFeature } from './metered-feature.js';
import { parseMeteredFeature } from './metered-feature.js';

/** A route map value: a feature id, or a feature id with options. */
export type RouteTarget = string | ({ feature: string } & FeatureOptions);

/**
 * Maps `'METHOD /path'` to the Kana feature a request uses. Paths use Express 5 syntax (`:id`,
 * `*splat`, `{/optional}`) and are matched against the full path Express routes the request on
 * (mount path included, wherever kanaMeter is mounted; no query, fragment, scheme or host),
 * case-insensitively, with an optional trailing slash. `ALL` or `*` as the method matches any method.
 * An entry's `enforce` overrides kanaMeter's `enforce` for that route.
 * @example { 'POST /api/search': 'api-calls', 'GET /api/items/:id': { feature: 'item-reads', delta: 2, enforce: true } }
 */
export type RouteMap = Record<string, RouteTarget>;

interface CompiledRoute {
  readonly regexp: RegExp;
  readonly feature: MeteredFeature;
}

/** Finds the feature of a request from its method and the path Express routes it on; undefined when no route matches. */
export type RouteMatcher = (method: string, path: string) => MeteredFeature | undefined;

const KEY_PATTERN = /^\s*([A-Za-z-]+|\*)\s+(\/\S*)\s*$/;
const KNOWN_METHODS = new Set(METHODS);
const REPEATED_SLASHES = /\/{2,}/g;

/** Compiles the route map once; returns undefined when there is none. */
export function compileRoutes(routes: unknown): RouteMatcher | undefined {
  if (routes === undefined) return undefined;
  if (typeof routes !== 'object' || routes === null || Array.isArray(routes)) {
    throw optionError('routes', routes, "an object such as { 'POST /api/search': 'api-calls' }");
  }
  const { byMethod, anyMethod } = routesByMethod(
    Object.entries(routes).map(([key, target]) => compileRoute(key, target)),
  );
  return function matchRoute(method, routedPath) {
    // Express 4 lets a mount path take one more slash: '/api//search' reaches '/search' in a
    // sub-app mounted at '/api'. Collapsed, such a path matches its key; a path that no router
    // serves is at worst refused instead of answered 404, and never billed (not a 2xx).
    const path = routedPath.includes('//') ? routedPath.replace(REPEATED_SLASHES, '/') : routedPath;
    const candidates = byMethod.get(method) ?? anyMethod;
    for (let i = 0; i < candidates.length; i++) {
      const route = candidates[i] as CompiledRoute;
      if (route.regexp.test(path)) return route.feature;
    }
    return undefined;
  };
}

/** One `'METHOD /path': target` entry, checked and compiled; a bad one throws naming it. */
function compileRoute(key: string, target: unknown): CompiledRoute & { method: string } {
  const name = `routes[${JSON.stringify(key)}]`;
  const keyMatch = KEY_PATTERN.exec(key);
  if (!keyMatch) {
    throw new TypeError(
      `kana-meter: option \`${name}\`: a route key must be 'METHOD /path' (e.g. 'POST /api/search' or 'ALL /api/*rest').`,
    );
  }
  const method = (keyMatch[1] as string).toUpperCase();
  const path = keyMatch[2] as string;
  if (method !== '*' && method !== 'ALL' && !KNOWN_METHODS.has(method)) {
    throw new TypeError(
      `kana-meter: option \`${name}\`: unknown HTTP method "${keyMatch[1]}"; use GET, POST, ..., or ALL.`,
    );
  }
  let regexp: RegExp;
  try {
    // Express 5's defaults: case-insensitive, an optional trailing slash.
    ({ regexp } = pathToRegexp(path, { sensitive: false, trailing: true, end: true }));
  } catch (error) {
    throw new TypeError(
      `kana-meter: option \`${name}\`: invalid Express 5 path "${path}" (${(error as Error).message}).`,
    );
  }
  const feature =
    typeof target === 'string' ? parseMeteredFeature(name, target, undefined, key) : parseTarget(name, target, key);
  return { method: method === '*' ? 'ALL' : method, regexp, feature };
}

/** Routes for each method, in declaration order, with ALL routes interleaved where they were declared. */
function routesByMethod(declared: readonly (CompiledRoute & { method: string })[]) {
  const byMethod = new Map<string, CompiledRoute[]>();
  const anyMethod: CompiledRoute[] = [];
  for (const { method, regexp, feature } of declared) {
    const route: CompiledRoute = { regexp, feature };
    if (method === 'ALL') {
      anyMethod.push(route);
      for (const list of byMethod.values()) list.push(route);
      continue;
    }
    // Express answers HEAD with GET routes.
    for (const target of method === 'GET' ? ['GET', 'HEAD'] : [method]) {
      let list = byMethod.get(target);
      if (!list) {
        list = [...anyMethod];
        byMethod.set(target, list);
      }
      list.push(route);
    }
  }
  return { byMethod, anyMethod };
}

function parseTarget(name: string, target: unknown, key: string): MeteredFeature {
  if (typeof target !== 'object' || target === null || Array.isArray(target)) {
    throw optionError(name, target, "a feature id string or { feature: 'id', delta?, enforce? }");
  }
  const { feature, ...options } = target as { feature?: unknown };
  return parseMeteredFeature(name, feature, options, key, `${name}.feature`);
}
