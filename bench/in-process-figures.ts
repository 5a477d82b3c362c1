// The in-process bench's figures from its blocks of requests: each variant's CPU µs per request, and over bare's.

/** One block of requests of one variant: its CPU µs per request, the GC pauses in it, the bytes it allocated. */
export interface Block {
  cpuMicros: number;
  gcMicros: number;
  /** Heap bytes allocated per request; meaningful only in a block without a GC (`gcMicros` 0). */
  bytes: number;
}

/** What one variant cost over a set of rounds. */
export interface Figures {
  /** CPU µs per request: the request path's (a low quantile of the blocks without GC), plus `gcMicros`. */
  micros: number;
  /** Of `micros`: the request path's, GC aside (bare's tells how fast the host ran). */
  pathMicros: number;
  /** Heap bytes allocated per request (the median block's). */
  bytes: number;
  /** GC's share of `micros`: `bytes` at the run's GC µs per allocated byte. */
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

const clean = (block: Block) => block.gcMicros === 0;
/** Heap bytes allocated per request: the median of the blocks that no GC interrupted. */
export const bytesPerRequest = (blocks: readonly Block[]) =>
  quantile(
    blocks.filter(clean).map((block) => block.bytes),
    0.5,
  );

/**
 * GC µs per heap byte allocated, over every variant's blocks: the GC pauses in them over the bytes they allocated.
 * A pause falls in one block in a hundred, paying for the blocks before it, whichever variant they were: so GC is
 * charged to each variant by what it allocates, a steady count, rather than by where its pauses happened to fall.
 */
export function gcPerByte(all: readonly (readonly Block[])[]): number {
  let paused = 0;
  let allocated = 0;
  for (const blocks of all) {
    const bytes = bytesPerRequest(blocks);
    for (const block of blocks) {
      paused += block.gcMicros;
      allocated += bytes;
    }
  }
  return allocated > 0 ? paused / allocated : 0;
}

/**
 * Figures of `blocks` (one per round) against `bare`'s in the same rounds. On this shared host a block's CPU time
 * often takes in time that was not ours (the core given to someone else while ours still counts), up to ten times
 * the block's own; but a block of a few requests, a fraction of a millisecond, often escapes it. So the request
 * path's cost is a low quantile `at` of many short blocks: what a block costs when the host left it alone.
 */
export function figures(blocks: readonly Block[], bare: readonly Block[], at: number, perByte: number): Figures {
  const path = (list: readonly Block[]) =>
    quantile(
      list.filter(clean).map((block) => block.cpuMicros),
      at,
    );
  const bytes = bytesPerRequest(blocks);
  const gcMicros = bytes * perByte;
  const micros = path(blocks) + gcMicros;
  const bareMicros = path(bare) + bytesPerRequest(bare) * perByte;
  const gcOver = gcMicros - bytesPerRequest(bare) * perByte;
  const paired = blocks.flatMap((block, round) => {
    const other = bare[round] as Block;
    return clean(block) && clean(other) ? [block.cpuMicros - other.cpuMicros + gcOver] : [];
  });
  return {
    micros,
    pathMicros: path(blocks),
    bytes,
    gcMicros,
    overMicros: micros - bareMicros,
    overLow: quantile(paired, 0.25),
    overHigh: quantile(paired, 0.75),
  };
}
