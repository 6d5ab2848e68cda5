/** Repeatable randomness for tests: the same seed, the same sequence. */

/** A seeded pseudo-random number in [0, 1) (a 32-bit linear congruential generator). */
export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}
