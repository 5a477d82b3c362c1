// The in-process bench's request: one GET through an Express app with Node's own request and response objects, no socket.

import { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Writable } from 'node:stream';
import { ROUTE_PATH, USERS, type VariantApp } from './variant-app.js';

/** Requests in flight at once (BENCH_INPROCESS_CONCURRENCY), as a busy server has them. */
export const CONCURRENCY = Number(process.env.BENCH_INPROCESS_CONCURRENCY ?? 8);

/** A socket that accepts every write at once: the response is serialised as for a client, and sent nowhere. */
class DiscardingSocket extends Writable {
  readonly remoteAddress = '127.0.0.1';
  override _write(_chunk: unknown, _encoding: BufferEncoding, callback: () => void): void {
    callback();
  }
  setTimeout(): this {
    return this;
  }
  setNoDelay(): void {}
}

let keys = 0;

/** One GET through `app` (Express's own router and response); resolves on the response's 'close'. */
export function sendRequest(app: VariantApp['app'], user: string, keyed: boolean): Promise<void> {
  return new Promise((resolve) => {
    const socket = new DiscardingSocket() as unknown as Socket;
    const req = new IncomingMessage(socket);
    req.method = 'GET';
    req.url = ROUTE_PATH;
    req.headers = keyed
      ? { host: 'bench', 'x-user': user, 'idempotency-key': `k${++keys}` }
      : { host: 'bench', 'x-user': user };
    req.push(null);
    const res = new ServerResponse(req);
    res.assignSocket(socket);
    // As Node's server does on 'finish' (resOnFinish): the socket is detached and 'close' follows on the next tick.
    res.once('finish', () => {
      res.detachSocket(socket);
      process.nextTick(() => {
        res.destroyed = true;
        res.emit('close');
        resolve();
      });
    });
    app(req as never, res as never);
  });
}

/** Sends `count` requests through `app`, `CONCURRENCY` at a time, over the bench's users. */
export async function sendRequests(app: VariantApp['app'], count: number, keyed: boolean): Promise<void> {
  for (let sent = 0; sent < count; sent += CONCURRENCY) {
    const wave: Promise<void>[] = [];
    const size = Math.min(CONCURRENCY, count - sent);
    for (let i = 0; i < size; i++) wave.push(sendRequest(app, USERS[(sent + i) % USERS.length] as string, keyed));
    await Promise.all(wave);
    // Back to the event loop, as a server is between reads: Kana's answers and the timers get in.
    await new Promise((resolve) => setImmediate(resolve));
  }
}
