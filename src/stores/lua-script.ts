// A Lua script for the store, with the SHA1 Redis will know it by (computed here: no SCRIPT LOAD round trip).

import { createHash } from 'node:crypto';

export interface LuaScript {
  /** A short name for logs and errors (`reserve`, `report`...). */
  readonly name: string;
  readonly source: string;
  /** SHA1 of `source`, which is what EVALSHA takes. */
  readonly sha: string;
}

export function defineLuaScript(name: string, source: string): LuaScript {
  return Object.freeze({ name, source, sha: createHash('sha1').update(source).digest('hex') });
}
