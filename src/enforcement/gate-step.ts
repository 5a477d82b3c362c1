// One gate's way on for one request: next() at most once, and the deadline that decides the request if nothing else has.

import type { NextFunction } from 'express';

/** The `next` a gate passes along: calls the real one once, then does nothing; `decided` once it or a refusal ran. */
export type GateStep = NextFunction & { decided: boolean; timer: NodeJS.Timeout | undefined };

export function stepFor(next: NextFunction): GateStep {
  const step = ((error?: unknown) => {
    if (step.decided) return;
    settleStep(step);
    next(error as undefined);
  }) as GateStep;
  step.decided = false;
  step.timer = undefined;
  return step;
}

/** Whether the request was decided already (passed on or refused); false for a plain `next`. */
export function isDecided(next: NextFunction): boolean {
  return (next as Partial<GateStep>).decided === true;
}

/** The request is decided (a refusal is being sent): the deadline has nothing left to do. */
export function settleStep(next: NextFunction): void {
  const step = next as Partial<GateStep>;
  if (step.decided === undefined) return;
  step.decided = true;
  if (step.timer !== undefined) {
    clearTimeout(step.timer);
    step.timer = undefined;
  }
}

/** The gate is about to wait: `onDeadline` runs in `ms` unless the request is decided first (armed once). */
export function armDeadline(next: NextFunction, ms: number, onDeadline: () => void): void {
  const step = next as Partial<GateStep>;
  if (step.decided !== false || step.timer !== undefined) return;
  step.timer = setTimeout(onDeadline, ms);
  step.timer.unref();
}
