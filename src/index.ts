// kana-meter's public surface: named exports only.

// Types `req.kana` on Express's Request for every consumer of the package.
import './enforcement/express-augmentation.js';

export type { AuditOptions } from './audit/audit-options.js';
export type {
  DecisionReason,
  DecisionSource,
  EnforceMode,
  EntitlementDecision,
  RefusedDecision,
} from './config/decision.js';
export type { KanaErrorCode, LogCode, SpoolErrorCode } from './config/errors.js';
export { KanaError, logCodes, SpoolError } from './config/errors.js';
export type { KanaLogger } from './config/logger.js';
export type { KanaCall, KanaCallOperation, KanaCallOutcome, KanaMeterMetrics } from './config/metrics.js';
export type { KanaMeterStats } from './config/stats.js';
export type { CloseOptions } from './delivery/queue.js';
export type { SinkFailure, UsageBatch, UsageSink } from './delivery/usage-sink.js';
export type { UsageHold } from './enforcement/usage-hold.js';
export type {
  CheckOptions,
  CheckOutcome,
  CheckResults,
  EntitlementAnswer,
  EntitlementQuery,
  KanaClientOptions,
  UsageInput,
  UsageMutation,
} from './kana/client.js';
export { DEFAULT_CHECK_TIMEOUT_MS, DEFAULT_ENDPOINT, KanaClient, MAX_CHECKS_PER_DOCUMENT } from './kana/client.js';
export { meter } from './meter.js';
export type { IdempotencyClaim, IdempotencyWindow, StoredResponse } from './metering/idempotency-window.js';
export type { DeltaFunction, FeatureOptions } from './metering/metered-feature.js';
export type { RouteMap, RouteTarget } from './metering/routes.js';
export type { KanaMeter, ReadyOptions } from './middleware.js';
export { kanaMeter } from './middleware.js';
export type {
  AnonymousPolicy,
  DeniedHandler,
  IdempotencyKeyOptions,
  KanaErrorPolicy,
  KanaMeterOptions,
  RetryOptions,
  SpoolOptions,
  UndeliveredUsage,
} from './options.js';
export type { MemoryStoreOptions } from './stores/memory-store.js';
export { MemoryStore } from './stores/memory-store.js';
export type {
  AnswerReceipt,
  AnswerRequest,
  CheckRequest,
  CheckTicket,
  IdempotencyWindowOptions,
  KanaMeterStore,
  LeaseState,
  LedgerTotals,
  Promisable,
  ReportRequest,
  ReserveRequest,
  SettleRequest,
  StoreContext,
  StoredAnswer,
  StoreKey,
  StoreStats,
} from './stores/store.js';
