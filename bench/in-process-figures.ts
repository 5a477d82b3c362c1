// The in-process bench's figures from its blocks of requests: each variant's CPU µs per request, and over bare's.

/** One block of requests of one variant: its CPU µs per request, and how much of it was GC pauses. */
export interface Block {
  cpuMicros: number;
  gcMicros: number;
}

/** What one variant cost over a set of rounds. */
export interface Figures {
  /** CPU µs per request: the median block's, GC pauses aside, plus the mean GC pause per request. */
  micros: number;
  /** Of `micros`: GC pauses per request, the mean over all the blocks. */
  gcMicros: number;
  /** `micros` over bare's, and the quartiles of the same-round differences around it. */
  overMicros: number;
  overLow: number;
  overHigh: number;
}

/** The `q` quantile (0–1) of `values`, interpolated. */
export function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (sorted.length - 1) * q;
  const below = sorted[Math.floor(at)] as number;
  const above = sorted[Math.ceil(at)] as number;
  return below + (above - below) * (at - Math.floor(at));
}

const mutator = (block: Block) => block.cpuMicros - block.gcMicros;
const meanGc = (blocks: readonly Block[]) => blocks.reduce((sum, block) => sum + block.gcMicros, 0) / blocks.length;

/**
 * Figures of `blocks` (one per round) against `bare`'s in the same rounds. On this shared host a block's CPU time
 * now and then takes a burst of time that was not ours (the core given to someone else while ours still counts),
 * up to ten times the block's own: the median of many short blocks leaves those out, where a mean or a long
 * block keeps them. GC pauses are left out of the median too (a scavenge falls in one block in several, paying
 * for the allocations of the blocks before it) and added back as their mean per request.
 */
export function figures(blocks: readonly Block[], bare: readonly Block[], at = 0.5): Figures {
  const micros = quantile(blocks.map(mutator), at) + meanGc(blocks);
  const bareMicros = quantile(bare.map(mutator), at) + meanGc(bare);
  const gcOver = meanGc(blocks) - meanGc(bare);
  const paired = blocks.map((block, round) => mutator(block) - mutator(bare[round] as Block) + gcOver);
  return {
    micros,
    gcMicros: meanGc(blocks),
    overMicros: micros - bareMicros,
    overLow: quantile(paired, 0.25),
    overHigh: quantile(paired, 0.75),
  };
}
