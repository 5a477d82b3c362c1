// POST /graphql: body decoding, API-key auth, graphql-js parse/validate/execute, faults, the request log.
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type DocumentNode,
  type ExecutionResult,
  execute,
  GraphQLError,
  type GraphQLSchema,
  Kind,
  type OperationDefinitionNode,
  parse,
  validate,
} from 'graphql';
import { authFailure } from './api-keys.js';
import { formatGraphQLError, type WireError, wireError } from './errors.js';
import type { Fault, FaultQueue, FieldFault } from './faults.js';
import type { RequestLog } from './request-log.js';
import type { ResolverContext } from './resolvers.js';
import type { KanaStore } from './store.js';

/** One request to /graphql, as `KanaEmulator.requests()` reports it. */
export interface EmulatorRequest {
  /** The body's operationName, else the name of the operation in the document, else null (always null when unauthorized). */
  operationName: string | null;
  /** The root fields the operation selects (names, not aliases); empty if the document did not parse, or unauthorized. */
  fieldNames: string[];
  /** The variables after decoding (a JSON-string `variables` is parsed); null when unauthorized or too large to keep. */
  variables: Record<string, unknown> | null;
  /** Present (true) when the variables were larger than the log keeps (64 KiB as JSON). */
  variablesOmitted?: true;
  /** Whether the Authorization header carried the emulator's key. */
  authorized: boolean;
  /** The HTTP status sent; null when no answer was sent (a dropped request, a client that left). */
  status: number | null;
  /** Epoch milliseconds (emulator clock) when the request arrived. */
  at: number;
}

export interface GraphQLEndpointOptions {
  schema: GraphQLSchema;
  store: KanaStore;
  faults: FaultQueue;
  apiKey: string;
  now: () => number;
  log: RequestLog;
}

export interface GraphQLEndpoint {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Ends requests held by `{ delayMs }` and `{ hang }` faults (used when going offline or closing). */
  cancelPending(): void;
}

const MAX_BODY_BYTES = 1024 * 1024;
const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';

/** A request held by a `{ delayMs }` or `{ hang }` fault. */
interface PendingDelay {
  /** Undefined for a hang. */
  timer: NodeJS.Timeout | undefined;
  cancel: () => void;
  res: ServerResponse;
}

/** A request the endpoint rejects before execution, with Apollo's status and code for it. */
class RequestError extends Error {
  constructor(
    readonly status: number,
    readonly errors: WireError[],
  ) {
    super(errors[0]?.message);
  }
}

function badRequest(message: string, code = 'BAD_REQUEST', name = 'BadRequestError'): RequestError {
  return new RequestError(400, [wireError(message, code, name)]);
}

interface GraphQLBody {
  query: string;
  variables: Record<string, unknown> | null;
  operationName: string | null;
}

/** Decodes `{ query, variables, operationName }`; `variables` may be an object or a JSON string (API.md §1). */
function decodeBody(raw: string): GraphQLBody {
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch (error) {
    throw badRequest(`POST body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest(
      'POST body must be a JSON object { query, variables, operationName } (batched requests are not supported)',
    );
  }
  const { query, operationName } = body as Record<string, unknown>;
  let { variables } = body as Record<string, unknown>;
  if (typeof query !== 'string' || query.trim() === '') {
    throw badRequest('GraphQL operations must contain a non-empty `query`.');
  }
  if (typeof variables === 'string') {
    try {
      variables = variables.trim() === '' ? null : JSON.parse(variables);
    } catch {
      throw badRequest('Variables are invalid JSON.');
    }
  }
  if (variables !== undefined && variables !== null && (typeof variables !== 'object' || Array.isArray(variables))) {
    throw badRequest('`variables` must be an object or a JSON-encoded object.');
  }
  if (operationName !== undefined && operationName !== null && typeof operationName !== 'string') {
    throw badRequest('`operationName` must be a string.');
  }
  return {
    query,
    variables: (variables ?? null) as Record<string, unknown> | null,
    operationName: (operationName ?? null) as string | null,
  };
}

/** The operation graphql-js would run, for the log and for matching faults. */
function selectedOperation(document: DocumentNode, operationName: string | null): OperationDefinitionNode | undefined {
  const operations = document.definitions.filter(
    (d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION,
  );
  if (operationName === null) return operations.length === 1 ? operations[0] : undefined;
  return operations.find((op) => op.name?.value === operationName);
}

function rootFieldNames(operation: OperationDefinitionNode | undefined): string[] {
  if (operation === undefined) return [];
  return operation.selectionSet.selections.flatMap((s) => (s.kind === Kind.FIELD ? [s.name.value] : []));
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new RequestError(413, [wireError('Request body too large', 'BAD_REQUEST', 'PayloadTooLargeError')]));
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export function createGraphQLEndpoint(options: GraphQLEndpointOptions): GraphQLEndpoint {
  const { schema, store, faults, apiKey, now, log } = options;
  const pending = new Set<PendingDelay>();

  function send(
    res: ServerResponse,
    entry: EmulatorRequest | null,
    status: number,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    if (entry !== null) entry.status = status;
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': JSON_CONTENT_TYPE, 'content-length': Buffer.byteLength(body), ...headers });
    res.end(body);
  }

  function sendJson(res: ServerResponse, entry: EmulatorRequest | null, status: number, payload: unknown): void {
    send(res, entry, status, JSON.stringify(payload));
  }

  async function run(
    document: DocumentNode,
    body: GraphQLBody,
    usageNotRecorded: boolean,
    failingField?: FieldFault,
  ): Promise<{ status: number; payload: unknown }> {
    const contextValue: ResolverContext = { store, usageNotRecorded, failingField };
    const result: ExecutionResult = await execute({
      schema,
      document,
      variableValues: body.variables,
      operationName: body.operationName,
      contextValue,
    });
    if (!('data' in result) || result.data === undefined) {
      // No data at all: graphql-js rejected the request before executing (variable coercion,
      // operation selection). Apollo answers these with 400.
      const errors = (result.errors ?? []).map((e) =>
        formatGraphQLError(e, { code: 'BAD_USER_INPUT', name: 'UserInputError' }),
      );
      return { status: 400, payload: { errors } };
    }
    const payload: { errors?: WireError[]; data: unknown } = { data: result.data };
    if (result.errors !== undefined && result.errors.length > 0) {
      payload.errors = result.errors.map((e) =>
        formatGraphQLError(e, { code: 'INTERNAL_SERVER_ERROR', name: 'Error' }),
      );
    }
    return { status: 200, payload };
  }

  /** Answers a request that passed auth and validation, as the scripted fault (if any) says. */
  async function answer(
    req: IncomingMessage,
    res: ServerResponse,
    entry: EmulatorRequest,
    document: DocumentNode,
    body: GraphQLBody,
    fault: Fault | null,
  ): Promise<void> {
    if (fault === null || 'result' in fault) {
      const { status, payload } = await run(document, body, fault !== null);
      sendJson(res, entry, status, payload);
    } else if ('fieldError' in fault) {
      const { status, payload } = await run(document, body, false, fault.fieldError);
      sendJson(res, entry, status, payload);
    } else if ('hang' in fault) {
      // Never answered: held until the client leaves, or the emulator goes offline or closes.
      entry.status = null;
      await new Promise<void>((resolve) => {
        const hold: PendingDelay = { timer: undefined, cancel: resolve, res };
        pending.add(hold);
        res.on('close', () => {
          pending.delete(hold);
          resolve();
        });
      });
    } else if ('status' in fault) {
      const headers: Record<string, string> = {};
      if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
      // A custom body that is not JSON (a proxy's HTML error page, say) is sent as text.
      if (fault.body !== undefined && !isJson(fault.body)) headers['content-type'] = 'text/plain; charset=utf-8';
      const text =
        fault.body ??
        JSON.stringify({
          errors: [wireError(`Emulated fault: HTTP ${fault.status}`, 'INTERNAL_SERVER_ERROR', 'Error')],
        });
      send(res, entry, fault.status, text, headers);
    } else if ('graphqlError' in fault) {
      const { message, code, name } = fault.graphqlError;
      sendJson(res, entry, fault.httpStatus ?? 200, {
        errors: [wireError(message, code, name ?? 'Error')],
        data: null,
      });
    } else if ('drop' in fault) {
      if (fault.afterApply === true) await run(document, body, false);
      entry.status = null;
      req.socket.destroy();
    } else {
      let clientLeft = false;
      res.on('close', () => {
        if (!res.writableFinished) clientLeft = true;
      });
      const cancelled = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          pending.delete(hold);
          resolve(false);
        }, fault.delayMs);
        timer.unref();
        const hold: PendingDelay = { timer, cancel: () => resolve(true), res };
        pending.add(hold);
      });
      // Going offline or closing ends the wait: the request is dropped, not executed.
      if (cancelled || (clientLeft && fault.apply === false)) {
        entry.status = null;
        return;
      }
      const { status, payload } = await run(document, body, false);
      if (clientLeft) entry.status = null;
      else sendJson(res, entry, status, payload);
    }
  }

  async function handleGraphQL(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // The key first: of a request without it, nothing but these few fields is kept.
    const unauthenticated = authFailure(req.headers.authorization, apiKey);
    const entry: EmulatorRequest = {
      operationName: null,
      fieldNames: [],
      variables: null,
      authorized: unauthenticated === null,
      status: null,
      at: now(),
    };
    log.add(entry);
    if (req.method !== 'POST') {
      // Kana documents POST only (API.md §1).
      const error = wireError('Method Not Allowed: use POST', 'BAD_REQUEST', 'MethodNotAllowedError');
      send(res, entry, 405, JSON.stringify({ errors: [error] }), { allow: 'POST' });
      return;
    }
    try {
      const body = decodeBody(await readBody(req));
      // Parsed before the auth check, as Apollo does (a bad document is a 400 with or without a key).
      let document: DocumentNode | GraphQLError;
      let operation: OperationDefinitionNode | undefined;
      try {
        document = parse(body.query);
        operation = selectedOperation(document, body.operationName);
      } catch (error) {
        if (!(error instanceof GraphQLError)) throw error;
        document = error;
      }

      const fieldNames = rootFieldNames(operation);
      if (unauthenticated === null) {
        log.attach(entry, {
          operationName: body.operationName ?? operation?.name?.value ?? null,
          fieldNames,
          variables: body.variables,
        });
      } else {
        // Kana answers auth failures as GraphQL errors with HTTP 200 (API.md §1, §13).
        sendJson(res, entry, 200, { errors: [wireError(unauthenticated, 'UNAUTHENTICATED', 'AuthenticationError')] });
        return;
      }
      if (document instanceof GraphQLError) {
        const error = formatGraphQLError(document, { code: 'GRAPHQL_PARSE_FAILED', name: 'SyntaxError' });
        throw new RequestError(400, [error]);
      }
      const validationErrors = validate(schema, document);
      if (validationErrors.length > 0) {
        throw new RequestError(
          400,
          validationErrors.map((e) =>
            formatGraphQLError(e, { code: 'GRAPHQL_VALIDATION_FAILED', name: 'ValidationError' }),
          ),
        );
      }
      await answer(req, res, entry, document, body, faults.take(fieldNames));
    } catch (error) {
      if (error instanceof RequestError) {
        sendJson(res, entry, error.status, { errors: error.errors });
        return;
      }
      const message = error instanceof Error ? error.message : String(error);
      const internal = wireError(`Kana emulator internal error: ${message}`, 'INTERNAL_SERVER_ERROR', 'Error');
      sendJson(res, entry, 500, { errors: [internal] });
    }
  }

  return {
    handle(req, res) {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/graphql') {
        const error = wireError(
          'Not found: the Kana emulator serves POST /graphql, and its dashboard on GET /',
          'NOT_FOUND',
          'Error',
        );
        send(res, null, 404, JSON.stringify({ errors: [error] }));
        return;
      }
      void handleGraphQL(req, res);
    },
    cancelPending() {
      for (const hold of pending) {
        clearTimeout(hold.timer);
        hold.res.destroy();
        hold.cancel();
      }
      pending.clear();
    },
  };
}
