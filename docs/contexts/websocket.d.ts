// Context of fragments that bill WebSocket messages: a connected socket and its user (with docs/contexts/app.d.ts).

declare const socket: {
  on(event: 'message', listener: (message: unknown) => void): void;
  close(code?: number, reason?: string): void;
};
declare const user: { id: string };
/** Your message handler. */
declare function handle(message: unknown): Promise<void>;
