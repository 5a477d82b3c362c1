// Keeps a copy of what a keyed request's handler writes, so that its response can be stored and replayed.

import type { ServerResponse } from 'node:http';
import type { StoredResponse } from './idempotency-window.js';

/** Largest response body stored for a replay; a larger one is not stored (the key is released). */
export const MAX_STORED_RESPONSE_BYTES = 1_048_576;

/**
 * Headers never stored: hop-by-hop ones (RFC 9110 section 7.6.1), cookies (a session is not
 * replayed), the ones a replay computes again (Date, Content-Length) and the RateLimit fields of
 * an allowance that has moved on since.
 */
const NOT_STORED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'set-cookie',
  'date',
  'content-length',
  'ratelimit',
  'ratelimit-policy',
  'retry-after',
  'idempotent-replayed',
]);

type Chunk = string | Buffer | Uint8Array;

/**
 * Wraps `res.write` and `res.end` of this one response (own properties, so other responses are
 * untouched) to keep a copy of the body, up to MAX_STORED_RESPONSE_BYTES. `stored()` after
 * 'finish' is the response to store, or undefined when it cannot be: over the limit, or streamed
 * as server-sent events.
 */
export function captureResponse(res: ServerResponse): () => StoredResponse | undefined {
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  const keep = (chunk: unknown, encoding: unknown) => {
    if (tooLarge || chunk === undefined || chunk === null || typeof chunk === 'function') return;
    const bytes =
      typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : Buffer.from(chunk as Uint8Array);
    size += bytes.length;
    if (size > MAX_STORED_RESPONSE_BYTES) {
      tooLarge = true;
      chunks.length = 0;
      return;
    }
    chunks.push(bytes);
  };
  const write = res.write;
  const end = res.end;
  const writeHead = res.writeHead;
  // Headers given to writeHead() as an object are set first, so that getHeaders() has them at 'finish'.
  res.writeHead = function (this: ServerResponse, statusCode: number, ...rest: unknown[]) {
    const last = rest[rest.length - 1];
    if (last !== null && typeof last === 'object' && !Array.isArray(last) && !this.headersSent) {
      for (const [name, value] of Object.entries(last)) {
        if (value !== undefined) this.setHeader(name, value as string | number | readonly string[]);
      }
      rest = rest.slice(0, -1);
    }
    return (writeHead as (...args: unknown[]) => ServerResponse).call(this, statusCode, ...rest);
  } as ServerResponse['writeHead'];
  res.write = function (this: ServerResponse, chunk: Chunk, ...rest: unknown[]) {
    keep(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as ServerResponse['write'];
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    keep(chunk, rest[0]);
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest);
  } as ServerResponse['end'];

  return () => {
    const type = res.getHeader('content-type');
    if (tooLarge || (typeof type === 'string' && type.startsWith('text/event-stream'))) return undefined;
    const headers: [string, string | string[]][] = [];
    for (const [name, value] of Object.entries(res.getHeaders())) {
      if (value === undefined || NOT_STORED.has(name) || name.startsWith('x-ratelimit-')) continue;
      headers.push([name, Array.isArray(value) ? value.map(String) : String(value)]);
    }
    return { status: res.statusCode, headers, body: Buffer.concat(chunks) };
  };
}

/** Sends a stored response again, marked `Idempotent-Replayed: true`. */
export function sendReplay(res: ServerResponse, stored: StoredResponse): void {
  res.statusCode = stored.status;
  for (const [name, value] of stored.headers) res.setHeader(name, value as string | string[]);
  res.setHeader('Idempotent-Replayed', 'true');
  res.setHeader('Content-Length', stored.body.length);
  res.end(stored.body);
}
