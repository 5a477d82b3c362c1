// Kana-style errors: the typed resolver error and the Apollo-shaped wire format
// `{ message, locations, path, extensions: { code, exception: { name, message } } }` (API.md §3, §13).
import { GraphQLError } from 'graphql';

/** `extensions.code` values the emulator sends (Apollo Server's codes). */
export type KanaErrorCode =
  | 'BAD_USER_INPUT'
  | 'UNAUTHENTICATED'
  | 'GRAPHQL_PARSE_FAILED'
  | 'GRAPHQL_VALIDATION_FAILED'
  | 'BAD_REQUEST'
  | 'NOT_SUPPORTED'
  | 'INTERNAL_SERVER_ERROR';

/**
 * An error a resolver throws on purpose. `name` becomes `extensions.exception.name`, which is what
 * Kana's SDKs switch on (`UserNotFoundError`, `AuthenticationError`, ...).
 */
export class KanaEmulatorError extends Error {
  readonly code: string;

  constructor(message: string, options: { code: string; name: string }) {
    super(message);
    this.code = options.code;
    this.name = options.name;
  }
}

export interface WireError {
  message: string;
  locations?: readonly { line: number; column: number }[];
  path?: readonly (string | number)[];
  extensions: { code: string; exception: { name: string; message: string } };
}

/** An error outside GraphQL execution (auth, HTTP, scripted faults): no locations, no path. */
export function wireError(message: string, code: string, name: string): WireError {
  return { message, extensions: { code, exception: { name, message } } };
}

/**
 * Formats an error from graphql-js. Errors a resolver threw keep their own code and name; errors
 * graphql-js raised itself get the code Apollo Server would give them (`fallback`).
 */
export function formatGraphQLError(error: GraphQLError, fallback: { code: KanaErrorCode; name: string }): WireError {
  const original = error.originalError;
  let code: string = fallback.code;
  let name = fallback.name;
  if (original instanceof KanaEmulatorError) {
    code = original.code;
    name = original.name;
  } else if (error.path !== undefined && original !== undefined && !(original instanceof GraphQLError)) {
    // Thrown while executing a field (only those errors have a path), yet not a Kana error: a bug
    // in a resolver or a scalar. Input errors graphql-js raises before execution keep the fallback.
    code = 'INTERNAL_SERVER_ERROR';
    name = original.name;
  }
  // Key order as Apollo sends it: message, locations, path, extensions.
  return {
    message: error.message,
    ...(error.locations !== undefined && { locations: error.locations }),
    ...(error.path !== undefined && { path: error.path }),
    extensions: { code, exception: { name, message: error.message } },
  };
}

// Resolver errors for unknown ids. Kana documents the class names (API.md §3) but not the messages,
// so the message texts below are the emulator's own invention.
export function userNotFound(id: string): KanaEmulatorError {
  return new KanaEmulatorError(`User not found: "${id}"`, { code: 'BAD_USER_INPUT', name: 'UserNotFoundError' });
}

export function featureNotFound(id: string): KanaEmulatorError {
  return new KanaEmulatorError(`Feature not found: "${id}"`, { code: 'BAD_USER_INPUT', name: 'FeatureNotFoundError' });
}

export function packageNotFound(id: string): KanaEmulatorError {
  return new KanaEmulatorError(`Package not found: "${id}"`, { code: 'BAD_USER_INPUT', name: 'PackageNotFoundError' });
}

export function subscriptionNotFound(id: string): KanaEmulatorError {
  return new KanaEmulatorError(`Subscription not found: "${id}"`, {
    code: 'BAD_USER_INPUT',
    name: 'SubscriptionNotFoundError',
  });
}

/** Bad input the schema cannot express (duplicate ids, unknown filter values). Message made up. */
export function badInput(message: string): KanaEmulatorError {
  return new KanaEmulatorError(message, { code: 'BAD_USER_INPUT', name: 'Error' });
}

/** A `subscribe` rule violation; the three documented messages are passed verbatim by the caller. */
export function subscriptionError(message: string): KanaEmulatorError {
  return new KanaEmulatorError(message, { code: 'BAD_USER_INPUT', name: 'SubscriptionError' });
}

export function notSupported(field: string): KanaEmulatorError {
  return new KanaEmulatorError(`${field} is not supported by the Kana emulator`, {
    code: 'NOT_SUPPORTED',
    name: 'Error',
  });
}
