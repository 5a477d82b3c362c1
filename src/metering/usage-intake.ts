// The queue stage: a captured usage event is written to the audit trail, queued for delivery and counted against the allowance.

import type { AuditTrail } from '../audit/audit-trail.js';
import type { DeliveryQueue } from '../delivery/queue.js';
import type { RequestUsage } from './request-usage.js';

/** Where captured usage came from: a metered request, `record()`, or a hold's `commit()`. */
export type UsageSource = RequestUsage | 'record' | 'hold';

export class UsageIntake {
  /** Set by close(): usage captured from now on is reported undelivered, not queued. */
  closed = false;

  constructor(
    readonly queue: DeliveryQueue,
    /** Counts queued usage against the allowance until Kana confirms it. */
    private readonly countUsage: (userId: string, featureId: string, delta: number) => void,
    private readonly audit: AuditTrail | undefined,
  ) {}

  /** Queues the event, or reports it undelivered when it was captured after close() began (`late`). */
  take(userId: string, featureId: string, delta: number, source: UsageSource, late: boolean): void {
    if (this.audit) {
      if (typeof source === 'string') this.audit.capturedOutsideRequest(userId, featureId, delta, source);
      else this.audit.capturedFromRequest(source.req, source, userId, featureId, delta);
    }
    if (late) {
      this.queue.rejectClosed(userId, featureId, delta);
      return;
    }
    this.queue.enqueue(userId, featureId, delta);
    this.countUsage(userId, featureId, delta);
  }
}
