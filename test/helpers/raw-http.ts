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
