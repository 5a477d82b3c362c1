// kana-meter's public surface: named exports only.

// Types `req.kana` on Express's Request for every consumer of the package.
import './express-augmentation.js';

export type {
  CheckOptions,
  EntitlementAnswer,
  EntitlementQuery,
  KanaClientOptions,
  UsageInput,
  UsageMutation,
} from './client.js';
export { DEFAULT_CHECK_TIMEOUT_MS, DEFAULT_ENDPOINT, KanaClient } from './client.js';
export type { CloseOptions } from './delivery.js';
export type { DecisionReason, DecisionSource, EntitlementDecision, RefusedDecision } from './entitlements.js';
export type { KanaErrorCode, LogCode } from './errors.js';
export { KanaError, logCodes } from './errors.js';
export type { KanaLogger } from './logger.js';
export { meter } from './meter.js';
export type { DeltaFunction, FeatureOptions } from './metered-feature.js';
export type { KanaCall, KanaCallOperation, KanaCallOutcome, KanaMeterMetrics } from './metrics.js';
export type { KanaMeter } from './middleware.js';
export { kanaMeter } from './middleware.js';
export type {
  DeniedHandler,
  KanaErrorPolicy,
  KanaMeterOptions,
  RetryOptions,
  SpoolOptions,
  UndeliveredUsage,
} from './options.js';
export type { RouteMap, RouteTarget } from './routes.js';
export type { KanaMeterStats } from './stats.js';
