// Usage as GraphQL: several usage mutations in one document, aliased, and the answer read mutation by mutation.

import type { KanaError } from '../config/errors.js';
import type { UsageBatch } from '../delivery/usage-sink.js';
import type { FieldError } from './check-document.js';
import { badResponse, classifyFailure } from './retry-policy.js';

/**
 * Most usage mutations sent in one document. As for checks, twenty keeps a document small (under
 * 3 KB with its variables) and quick to execute, and a failed call sends back at most twenty keys.
 */
export const MAX_USAGE_PER_DOCUMENT = 20;

/** The mutation that records usage: Kana's usage guide names it createUsageEvent; the current reference, recordUsage. */
export type UsageMutation = 'createUsageEvent' | 'recordUsage';

const SELECTION: Record<UsageMutation, string> = { createUsageEvent: '', recordUsage: ' { recorded reason }' };

/** Documents for n > 1 mutations, built once per (mutation, n). */
const documents = new Map<string, string>();

/** The document recording `batches` (2 to MAX_USAGE_PER_DOCUMENT): aliases u0, u1, ..., each with its own input. */
export function usageDocument(
  mutation: UsageMutation,
  batches: readonly UsageBatch[],
): { document: string; variables: Record<string, unknown> } {
  const variables: Record<string, unknown> = {};
  batches.forEach(({ userId, featureId, delta }, i) => {
    variables[`i${i}`] = { userId, featureId, delta };
  });
  const id = `${mutation}:${batches.length}`;
  let document = documents.get(id);
  if (document === undefined) {
    const parameters: string[] = [];
    const fields: string[] = [];
    for (let i = 0; i < batches.length; i++) {
      parameters.push(`$i${i}: CreateUsageEventInput!`);
      fields.push(`  u${i}: ${mutation}(input: $i${i})${SELECTION[mutation]}`);
    }
    document = `mutation ${mutation}s(${parameters.join(', ')}) {\n${fields.join('\n')}\n}`;
    documents.set(id, document);
  }
  return { document, variables };
}

/**
 * Reads one mutation's answer: undefined when Kana recorded it, else the KanaError it failed with.
 * `data` is the answer's data (possibly partial), `field` the mutation's response key, and
 * `errors` the errors of that field only.
 */
export function readUsageResult(
  mutation: UsageMutation,
  data: Record<string, unknown> | null,
  field: string,
  errors: readonly FieldError[] | undefined,
): KanaError | undefined {
  if (errors?.length) return classifyFailure({ kind: 'graphql', errors });
  const answer = data?.[field];
  if (mutation === 'recordUsage') {
    const result = answer as { recorded?: unknown; reason?: string | null } | null | undefined;
    if (result == null || typeof result.recorded !== 'boolean') return badResponse(data);
    return result.recorded ? undefined : classifyFailure({ kind: 'not-recorded', reason: result.reason });
  }
  if (answer === true) return undefined;
  // Kana's Boolean is nullable: null without an error of its own is a failure to record, as false is.
  if (answer === false || answer === null) return classifyFailure({ kind: 'not-recorded' });
  return badResponse(data);
}
