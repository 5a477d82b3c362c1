// One enforced request at one gate: the context its stages pass along, its way on (next() at most once) and its deadline.

import type { NextFunction, Request, Response } from 'express';
import type { DecisionSource } from '../config/decision.js';
import type { MeteredFeature } from '../metering/metered-feature.js';
import type { RequestUsage } from '../metering/request-usage.js';

/**
 * The one object a gate makes per enforced request. A class, so every request's context has the
 * same shape (V8 keeps the stages' property reads monomorphic); the step and its deadline are
 * fields and methods here rather than a closure per request.
 */
export class GateRequest {
  /** next() ran, or a refusal is being sent: nothing else may decide the request. */
  decided = false;
  /** The deadline, armed at the gate's first wait. */
  timer: NodeJS.Timeout | undefined = undefined;
  /** The user checked, once read ('' until then). */
  userId = '';
  /** Where the answer the units are taken from came from. */
  source: DecisionSource = 'cache';
  /** The error that came with it (a stale answer's), else undefined. */
  error: unknown = undefined;

  constructor(
    readonly req: Request,
    readonly res: Response,
    /** Express's own next: called through proceed(), at most once. */
    readonly next: NextFunction,
    readonly feature: MeteredFeature,
    readonly usage: RequestUsage,
    /** Shadow mode: what enforcement would refuse goes on, and nothing clients see changes. */
    readonly shadow: boolean,
  ) {}

  /** The client left, or the request was decided already: a late answer leaves it alone. */
  isOver(): boolean {
    return this.decided || this.usage.ended;
  }

  /** Passes the request on to its handler, once; later calls do nothing. */
  proceed(): void {
    if (this.decided) return;
    this.markDecided();
    // Called as a plain function, as Express calls it (never with this context as `this`).
    const { next } = this;
    next();
  }

  /** The request is decided (passed on, or a refusal is being sent): the deadline has nothing left to do. */
  markDecided(): void {
    this.decided = true;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  /** The gate is about to wait: `onDeadline(this)` runs in `ms` unless the request is decided first (armed once). */
  armDeadline(ms: number, onDeadline: (request: GateRequest) => void): void {
    if (this.decided || this.timer !== undefined) return;
    this.timer = setTimeout(onDeadline, ms, this);
    this.timer.unref();
  }
}
