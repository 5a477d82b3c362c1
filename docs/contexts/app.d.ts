// Context of fragments of an Express app metered with kana-meter: what they use without declaring it.
// A global declaration file (no import or export): a block's own imports and declarations shadow these names.

/** Your authentication sets `req.user`; its Kana user id is what `userId` returns. */
declare namespace Express {
  interface Request {
    user?: { kanaId: string };
  }
}

declare const kanaMeter: typeof import('kana-meter').kanaMeter;
declare const meter: typeof import('kana-meter').meter;

/** The app, and the kanaMeter() mounted on it. */
declare const app: import('express').Express;
declare const kana: import('kana-meter').KanaMeter;

/** The options every example passes: your Kana key and how to find a request's user. */
declare const apiKey: string;
declare const userId: (req: import('express').Request) => string | undefined;
/** The route map: routes to Kana feature ids. */
declare const routes: import('kana-meter').RouteMap;

/** Your authentication middleware (sets `req.user`) and any route handler. */
declare const authenticate: import('express').RequestHandler;
declare const handler: import('express').RequestHandler;
