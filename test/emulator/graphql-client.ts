// Test helper: POST a GraphQL document to a running emulator with fetch, plus a common seed.
import type { EmulatorSeed, KanaEmulator } from '../../src/emulator/index.js';

export interface WireError {
  message: string;
  locations?: { line: number; column: number }[];
  path?: (string | number)[];
  extensions: { code: string; exception: { name: string; message: string } };
}

export interface GraphQLResponse<T = any> {
  status: number;
  headers: Headers;
  data?: T | null;
  errors?: WireError[];
}

export interface PostOptions {
  /** The Authorization header; null sends none. @default the emulator's key */
  authorization?: string | null;
  operationName?: string;
  /** Send `variables` as a JSON string, as Kana's curl examples do. */
  stringifyVariables?: boolean;
  signal?: AbortSignal;
}

export async function post<T = any>(
  emulator: KanaEmulator,
  query: string,
  variables?: Record<string, unknown>,
  options: PostOptions = {},
): Promise<GraphQLResponse<T>> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const authorization = options.authorization === undefined ? emulator.apiKey : options.authorization;
  if (authorization !== null) headers.authorization = authorization;
  const body = {
    query,
    variables: options.stringifyVariables === true ? JSON.stringify(variables) : variables,
    operationName: options.operationName,
  };
  const response = await fetch(emulator.url, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    signal: options.signal,
  });
  const json = (await response.json()) as { data?: T | null; errors?: WireError[] };
  return { status: response.status, headers: response.headers, ...json };
}

export const CREATE_USAGE_EVENT =
  'mutation createUsageEvent($input: CreateUsageEventInput!) { createUsageEvent(input: $input) }';
export const RECORD_USAGE =
  'mutation recordUsage($input: CreateUsageEventInput!) { recordUsage(input: $input) { recorded reason } }';
export const CAN_USE_FEATURE = `query canUseFeature($userId: String!, $featureId: String!, $delta: Int) {
  canUseFeature(userId: $userId, featureId: $featureId, delta: $delta) { access reason consumption { used budget overageEnabled } }
}`;
export const SHOW_USAGE = `query showUsage($userId: String!, $featureId: String!) {
  showUsage(userId: $userId, featureId: $featureId) {
    current { periodStart periodEnd consumption { used budget overageEnabled } }
    past { periodStart periodEnd consumption { used budget overageEnabled } }
  }
}`;
export const SUBSCRIBE = `mutation subscribe($userId: String!, $packageIds: [String!]!) {
  subscribe(userId: $userId, packageIds: $packageIds) { id userId status package { id isAddon } }
}`;

/** The docs' example data (API.md §7): user "124", a consumable `api-calls`, a binary `sso`. */
export function docsSeed(): EmulatorSeed {
  return {
    users: [{ id: '124', name: 'Test User', email: 'test@usekana.com', billingId: 'cus_Lp1bSKob4laHDD' }],
    features: [
      { id: 'api-calls', name: 'API Call', type: 'CONSUMABLE', unitLabel: 'call', unitLabelPlural: 'calls' },
      { id: 'sso', name: 'Single sign-on', type: 'BINARY' },
    ],
    packages: [
      { id: 'free-plan', features: [{ id: 'api-calls', limit: 50, resetPeriod: 'MONTH' }] },
      { id: 'pro-plan', features: [{ id: 'api-calls', limit: 1000, resetPeriod: 'MONTH' }, { id: 'sso' }] },
      { id: 'extra-500-api-calls', isAddon: true, features: [{ id: 'api-calls', limit: 500, resetPeriod: 'MONTH' }] },
    ],
  };
}
