// The `audit` option: where the audit trail is written and how big it may grow, validated once.

import { checkInteger, knownKeys, optionError, rejectUnknownKeys } from '../config/option-checks.js';
import { DEFAULT_AUDIT_MAX_BYTES, DEFAULT_AUDIT_MAX_FILES } from './audit-file.js';

export interface AuditOptions {
  /**
   * The audit trail: a JSON Lines file, appended to (created 0600; its directory must exist).
   * Rotated files go beside it as `path.1` (newest) to `path.<maxFiles>`. It holds user ids: for
   * many apps that is personal data (see docs/audit.md).
   * @default none: required
   * @example '/var/log/my-api/usage.audit.jsonl'
   */
  path: string;
  /**
   * Size in bytes past which the file is rotated (renamed `path.1`) and a new one started.
   * @default 67108864 (64 MiB)
   * @example 16 * 1024 * 1024
   */
  maxBytes?: number;
  /**
   * Rotated files kept; the oldest beyond this is deleted. Disk use stays under about
   * `maxBytes × (maxFiles + 1)`.
   * @default 4
   * @example 10
   */
  maxFiles?: number;
}

const AUDIT_OPTIONS = knownKeys<AuditOptions>({ path: true, maxBytes: true, maxFiles: true });

export function parseAudit(audit: AuditOptions | undefined): Readonly<Required<AuditOptions>> | undefined {
  if (audit === undefined) return undefined;
  if (typeof audit !== 'object' || audit === null || Array.isArray(audit)) {
    throw optionError('audit', audit, "an object such as { path: './usage.audit.jsonl' }");
  }
  rejectUnknownKeys('audit.', audit, AUDIT_OPTIONS);
  if (typeof audit.path !== 'string' || audit.path.trim() === '') {
    throw optionError('audit.path', audit.path, 'a file path');
  }
  return Object.freeze({
    path: audit.path,
    maxBytes: checkInteger('audit.maxBytes', audit.maxBytes, DEFAULT_AUDIT_MAX_BYTES, 1024),
    maxFiles: checkInteger('audit.maxFiles', audit.maxFiles, DEFAULT_AUDIT_MAX_FILES, 1),
  });
}
