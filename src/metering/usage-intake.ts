// The queue stage: a captured usage event is written to the audit trail, queued for delivery and counted against the allowance.

import type { Request, Response } from 'express';
import type { AuditTrail } from '../audit/audit-trail.js';
import type { DeliveryQueue } from '../delivery/queue.js';
import type { RequestUsage } from './request-usage.js';

/** Where usage captured outside a request came from: `record()`, or a hold's `commit()`. */
export type UsageSource = 'record' | 'hold';

export class UsageIntake {
  /** Set by close(): usage captured from now on is reported undelivered, not queued. */
  closed = false;

  constructor(
    readonly queue: DeliveryQueue,
    /** Counts queued usage against the allowance until Kana confirms it. */
    private readonly countUsage: (userId: string, featureId: string, delta: number) => void,
    private readonly audit: AuditTrail | undefined,
  ) {}

  /** Usage of a metered request whose response ended: queued, or reported undelivered when it ended after close() began. */
  takeFromResponse(res: Response, usage: RequestUsage, userId: string, featureId: string, delta: number): void {
    this.audit?.capturedFromRequest(res.req as Request, usage, userId, featureId, delta);
    this.#queue(userId, featureId, delta, usage.late);
  }

  /** Usage from record() or a hold's commit(): queued, or reported undelivered after close(). */
  take(userId: string, featureId: string, delta: number, source: UsageSource): void {
    this.audit?.capturedOutsideRequest(userId, featureId, delta, source);
    this.#queue(userId, featureId, delta, this.closed);
  }

  #queue(userId: string, featureId: string, delta: number, late: boolean): void {
    if (late) {
      this.queue.rejectClosed(userId, featureId, delta);
      return;
    }
    this.queue.enqueue(userId, featureId, delta);
    this.countUsage(userId, featureId, delta);
  }
}
