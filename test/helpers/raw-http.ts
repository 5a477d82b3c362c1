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
export function rawRequest(
  server: Server,
  method: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<number> {
  const { port } = server.address() as { port: number };
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: x', 'Content-Length: 0', 'Connection: close'];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let response = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      response += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3}) /.exec(response)?.[1] ?? 0)));
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  });
}

/**
 * HTTP/1.1 pipelining: `count` requests `${method} ${target}` with `headers` written at once, in one
 * write on one connection (the last asks the server to close it), to a server or a loopback port;
 * resolves with the status of each response, in order.
 */
export function pipelinedRequests(
  server: Server | number,
  count: number,
  method: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<number[]> {
  const port = typeof server === 'number' ? server : (server.address() as { port: number }).port;
  const head = [`${method} ${target} HTTP/1.1`, 'Host: x', 'Content-Length: 0'];
  for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`);
  const one = `${head.join('\r\n')}\r\n\r\n`;
  const last = `${[...head, 'Connection: close'].join('\r\n')}\r\n\r\n`;
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let responses = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      responses += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => resolve([...responses.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]))));
    socket.write(one.repeat(count - 1) + last);
  });
}
