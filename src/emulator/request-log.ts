// The emulator's log of /graphql requests: bounded per request and in total, the oldest dropped first.

import type { EmulatorRequest } from './graphql-endpoint.js';

/** Most requests kept. */
export const MAX_LOGGED_REQUESTS = 10_000;
/** Most bytes of variables and names kept over all the requests logged. */
export const MAX_LOGGED_BYTES = 16 * 1024 * 1024;
/** Variables larger than this (as JSON) are not kept: the entry says `variablesOmitted: true`. */
export const MAX_LOGGED_VARIABLES_BYTES = 64 * 1024;

/** What an entry costs besides its variables and names (an estimate of its fields). */
const ENTRY_BYTES = 128;

export class RequestLog {
  #entries: EmulatorRequest[] = [];
  #costs: number[] = [];
  #bytes = 0;

  /** Logs a request (metadata only; details are attached with attach() once the key was checked). */
  add(entry: EmulatorRequest): void {
    this.#entries.push(entry);
    this.#costs.push(ENTRY_BYTES);
    this.#bytes += ENTRY_BYTES;
    this.#trim();
  }

  /** Attaches what an authorized request carried: its operation, root fields and (if small enough) variables. */
  attach(entry: EmulatorRequest, details: Pick<EmulatorRequest, 'operationName' | 'fieldNames' | 'variables'>): void {
    const index = this.#entries.lastIndexOf(entry);
    if (index === -1) return; // dropped already
    const variablesBytes = details.variables === null ? 0 : JSON.stringify(details.variables).length;
    const keepVariables = variablesBytes <= MAX_LOGGED_VARIABLES_BYTES;
    entry.operationName = details.operationName;
    entry.fieldNames = details.fieldNames;
    entry.variables = keepVariables ? details.variables : null;
    if (!keepVariables) entry.variablesOmitted = true;
    const names = (details.operationName?.length ?? 0) + details.fieldNames.reduce((sum, name) => sum + name.length, 0);
    const cost = ENTRY_BYTES + names + (keepVariables ? variablesBytes : 0);
    this.#bytes += cost - (this.#costs[index] as number);
    this.#costs[index] = cost;
    this.#trim();
  }

  entries(): readonly EmulatorRequest[] {
    return this.#entries;
  }

  clear(): void {
    this.#entries = [];
    this.#costs = [];
    this.#bytes = 0;
  }

  #trim(): void {
    let drop = 0;
    let bytes = this.#bytes;
    while (
      drop < this.#entries.length - 1 &&
      (this.#entries.length - drop > MAX_LOGGED_REQUESTS || bytes > MAX_LOGGED_BYTES)
    ) {
      bytes -= this.#costs[drop] as number;
      drop++;
    }
    if (drop === 0) return;
    this.#entries.splice(0, drop);
    this.#costs.splice(0, drop);
    this.#bytes = bytes;
  }
}
