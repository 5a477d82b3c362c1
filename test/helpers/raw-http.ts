// Raw HTTP/1.1 over a net socket: request lines exactly as written, which HTTP clients would normalise.

import type { Server } from 'node:http';
import { connect } from 'node:net';
import type { Express } from 'express';

/** Starts `app` on a loopback port; resolves once it listens. */
export async function listen(app: Express): Promise<Server> {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  return server;
}

/**
 * Sends `${method} ${target} HTTP/1.1` with `headers` and an empty body on a connection of its own;
 * resolves with the response's status code once the server has answered and closed it.
 */
export async function rawRequest(
  server: Server,
  method: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<number> {
  const response = await exchange(server, requestHead(method, target, { ...headers, Connection: 'close' }));
  return Number(/^HTTP\/1\.1 (\d{3}) /.exec(response)?.[1] ?? 0);
}

/**
 * HTTP/1.1 pipelining: `count` requests `${method} ${target}` with `headers` written at once, in one
 * write on one connection (the last asks the server to close it), to a server or a loopback port;
 * resolves with the status of each response, in order.
 */
export async function pipelinedRequests(
  server: Server | number,
  count: number,
  method: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<number[]> {
  const one = requestHead(method, target, headers);
  const last = requestHead(method, target, { ...headers, Connection: 'close' });
  const responses = await exchange(server, one.repeat(count - 1) + last);
  return [...responses.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]));
}

/** A request line and its header fields, with an empty body. */
function requestHead(method: string, target: string, headers: Record<string, string>): string {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: x', 'Content-Length: 0'];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Writes `text` on a new connection; resolves with everything the server sent once it closed the connection. */
function exchange(server: Server | number, text: string): Promise<string> {
  const port = typeof server === 'number' ? server : (server.address() as { port: number }).port;
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let received = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      received += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
    socket.write(text);
  });
}
