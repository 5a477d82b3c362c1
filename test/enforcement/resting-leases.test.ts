// RestingLeases: entries wake at their time, in order, only for their latest time, and never once taken out.

import { describe, expect, it } from 'vitest';
import { RestingLeases } from '../../src/enforcement/resting-leases.js';

describe('RestingLeases', () => {
  it('wakes each entry once its time has come, in the order they came to rest', () => {
    const resting = new RestingLeases<string>();
    resting.add('a', 100);
    resting.add('b', 200);
    resting.add('c', 300);
    expect(resting.wake(99)).toEqual([]);
    expect(resting.wake(200)).toEqual(['a', 'b']);
    expect(resting.size).toBe(1);
    expect([...resting.entries()]).toEqual(['c']);
    expect(resting.wake(1000)).toEqual(['c']);
    expect(resting.size).toBe(0);
  });

  it('wakes an entry only for its latest time, and not at all once taken out', () => {
    const resting = new RestingLeases<string>();
    resting.add('a', 100);
    resting.add('b', 100);
    resting.delete('b'); // a request came
    resting.add('a', 250); // rested again, until later
    expect(resting.wake(200)).toEqual([]);
    expect(resting.wake(250)).toEqual(['a']);
    expect(resting.wake(1000)).toEqual([]);
  });

  it('wakes each entry once after much coming and going, its queue compacted on the way', () => {
    const resting = new RestingLeases<number>();
    const woken: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      resting.add(i % 50, i); // each of 50 entries rests again and again, until later each time
      woken.push(...resting.wake(i - 100));
    }
    expect(woken).toEqual([]); // none was ever due for its latest time
    const last = resting.wake(Number.POSITIVE_INFINITY);
    expect(last.sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(resting.size).toBe(0);
  });
});
