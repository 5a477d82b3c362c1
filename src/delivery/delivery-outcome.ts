// What became of usage the queue took: delivered by a call, failed for good, or kept in the spool; told to an outcome listener.

/** delivered: a sink call accepted it. failed: it never will be (reported undelivered). spooled: on disk, for a later round or run. */
export type DeliveryOutcomeKind = 'delivered' | 'failed' | 'spooled';

export interface DeliveryOutcome {
  readonly outcome: DeliveryOutcomeKind;
  /** The delivery call that carried it (numbered per queue, from 1); absent when no call did. */
  readonly call?: number;
  readonly userId: string;
  readonly featureId: string;
  readonly delta: number;
  /** Captured events it holds (0 for the rest of a delta split over several calls). */
  readonly events: number;
  /** Why it failed or was spooled: the error code, or `dropped`, `spilled`, `close`. */
  readonly reason?: string;
}

export type DeliveryOutcomeListener = (outcome: DeliveryOutcome) => void;
