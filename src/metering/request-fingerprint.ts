// The fingerprint of a keyed request (method, routed path, query, a hash of the body), reading an unparsed body without taking it from the body parser or handler.

import { createHash, type Hash } from 'node:crypto';
import type { Request } from 'express';
import { routedPath } from './routed-path.js';

/**
 * Largest request body read to fingerprint a keyed request. A larger one is not held: the key is
 * not honoured, and the request runs (and is billed) as one without a key.
 */
export const MAX_FINGERPRINT_BODY_BYTES = 1_048_576;

/**
 * Calls `done` with the request's fingerprint: a SHA-256 of the method, the routed path, the
 * query and the body. A body a parser already read (`req._body`, body-parser's mark) is hashed
 * as parsed; otherwise the raw body is read in paused mode and every chunk is put back with
 * `unshift`, in order, before 'end' can be emitted, so that body parsers and the handler further
 * down read it as sent. `done(undefined)`: the body is over MAX_FINGERPRINT_BODY_BYTES, or the
 * request failed while it was read.
 */
export function fingerprintRequest(req: Request, done: (fingerprint: string | undefined) => void): void {
  const query = req.originalUrl.indexOf('?');
  const hash = createHash('sha256').update(
    `${req.method}\n${routedPath(req)}\n${query === -1 ? '' : req.originalUrl.slice(query + 1)}\n`,
  );
  if ((req as { _body?: unknown })._body === true || req.readableEnded) {
    hashParsed(hash, req.body);
    done(hash.digest('hex'));
    return;
  }
  const length = req.headers['content-length'];
  if (req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) {
    done(hash.update('raw\n').digest('hex'));
    return;
  }
  readBody(req, (chunks) => {
    if (chunks === undefined) {
      done(undefined);
      return;
    }
    hash.update('raw\n');
    for (const chunk of chunks) hash.update(chunk);
    done(hash.digest('hex'));
  });
}

/** A parsed body: bytes as bytes (express.raw), text as text, anything else (express.json, urlencoded) as JSON. */
function hashParsed(hash: Hash, body: unknown): void {
  if (body === undefined) hash.update('raw\n');
  else if (Buffer.isBuffer(body)) hash.update('raw\n').update(body);
  else if (typeof body === 'string') hash.update('text\n').update(body);
  else hash.update('json\n').update(JSON.stringify(body) ?? '');
}

/**
 * Reads the whole body (up to the limit) with read(), then unshifts the chunks back. Reading the
 * last chunk schedules 'end' for the next tick only if the buffer is still empty then: the chunks
 * are back in it, in the same tick, so 'end' waits for whoever reads them next.
 */
function readBody(req: Request, done: (chunks: (Buffer | string)[] | undefined) => void): void {
  const chunks: (Buffer | string)[] = [];
  let size = 0;
  const onReadable = () => {
    let chunk: Buffer | string | null = req.read();
    while (chunk !== null) {
      chunks.push(chunk);
      size += chunk.length;
      if (size > MAX_FINGERPRINT_BODY_BYTES) {
        finish(false);
        return;
      }
      chunk = req.read();
    }
    // `complete`: the whole message arrived (Node sets it as it pushes the end of the body).
    if (req.complete) finish(true);
  };
  const onFailed = () => finish(false);
  function finish(whole: boolean): void {
    req.off('readable', onReadable);
    req.off('error', onFailed);
    req.off('close', onFailed);
    if (!req.destroyed) for (let i = chunks.length - 1; i >= 0; i--) req.unshift(chunks[i]);
    done(whole ? chunks : undefined);
  }
  req.on('readable', onReadable);
  req.on('error', onFailed);
  req.on('close', onFailed);
}
