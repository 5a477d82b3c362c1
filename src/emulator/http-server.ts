// The listening socket: bind, go offline and back on the same port, close without leaking sockets.
import { createServer, type RequestListener, type Server } from 'node:http';
import type { Socket } from 'node:net';

/** After close(), sockets still busy with a request get this long before they are destroyed. */
const CLOSE_GRACE_MS = 1000;

export class EmulatorHttpServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private boundPort = 0;
  private closed: Promise<void> | null = null;

  constructor(
    private readonly handler: RequestListener,
    private readonly host: string,
    /** Called before sockets are torn down, to release requests the handler is holding. */
    private readonly onStop: () => void,
  ) {}

  get port(): number {
    return this.boundPort;
  }

  get online(): boolean {
    return this.server !== null;
  }

  /** Listens on `port` (0 = a free one) and resolves with the bound port. */
  async listen(port: number): Promise<number> {
    if (this.closed !== null) throw new Error('The Kana emulator is closed');
    if (this.server !== null) return this.boundPort;
    const server = createServer(this.handler);
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === 'string')
      throw new Error('The Kana emulator is not bound to a TCP port');
    this.boundPort = address.port;
    this.server = server;
    return this.boundPort;
  }

  /** Offline: stop listening and destroy every open socket, so clients see ECONNREFUSED/ECONNRESET. */
  async goOffline(): Promise<void> {
    const server = this.server;
    if (server === null) return;
    this.server = null;
    this.onStop();
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await stopped;
  }

  /** Back online on the port it had before (tests and clients keep their URL). */
  async goOnline(): Promise<void> {
    await this.listen(this.boundPort);
  }

  /** Idempotent. Idle keep-alive sockets close at once; busy ones get a short grace period. */
  close(): Promise<void> {
    this.closed ??= this.shutDown();
    return this.closed;
  }

  private async shutDown(): Promise<void> {
    const server = this.server;
    this.server = null;
    this.onStop();
    if (server === null) return;
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const grace = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
    grace.unref();
    await stopped;
    clearTimeout(grace);
  }
}
