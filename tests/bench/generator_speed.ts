/**
 * Generation speed, in process, no Kafka: `take()` over `--count` records
 * (default 1 000 000, in batches of 4 000 as the producer's worker takes
 * them) by this checkout's generator and by a reference one, interleaved
 * (run 1 of each, then run 2 of each, ...), median of `--runs` (default 5).
 *
 *   deno run -A tests/bench/generator_speed.ts --reference /path/to/other/jobs/lib/generator.ts
 *
 * The reference is any older jobs/lib/generator.ts (e.g. extracted with
 * `git archive <commit> jobs/lib jobs/data | tar -x -C /tmp/ref`). Both run
 * with the producer's unthrottled options (seed, fraudRate 0.01, the default
 * population and rate); this one also without hard negatives. A benchmark,
 * not a test: it asserts nothing.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { TransactionGenerator } from "../../jobs/lib/generator.ts";

/** What the benchmark needs of a generator. */
interface Taker {
  take(count: number): unknown[];
}
type Make = () => Taker;

const BATCH = 4_000;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    reference: { type: "string" },
    count: { type: "string", default: "1000000" },
    runs: { type: "string", default: "5" },
  },
});
const count = Number(values.count);
const runs = Number(values.runs);

const variants: Array<[string, Make]> = [];
if (values.reference) {
  const ref = await import(new URL(values.reference, `file://${Deno.cwd()}/`).href) as {
    TransactionGenerator: new (o: object) => Taker;
  };
  variants.push([
    "reference",
    () => new ref.TransactionGenerator({ seed: "bench", fraudRate: 0.01 }),
  ]);
}
variants.push(
  ["this checkout", () => new TransactionGenerator({ seed: "bench", fraudRate: 0.01 })],
  [
    "this checkout, hardNegativeRate 0",
    () => new TransactionGenerator({ seed: "bench", fraudRate: 0.01, hardNegativeRate: 0 }),
  ],
);

/** Milliseconds to take `count` records from a new generator (its construction not counted). */
function time(make: Make): number {
  const g = make();
  const start = performance.now();
  for (let done = 0; done < count; done += BATCH) g.take(Math.min(BATCH, count - done));
  return performance.now() - start;
}

const times = new Map<string, number[]>(variants.map(([name]) => [name, []]));
for (const [, make] of variants) time(make); // warm-up
for (let run = 0; run < runs; run++) {
  for (const [name, make] of variants) times.get(name)!.push(time(make));
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const base = median(times.get(variants[0][0])!);
for (const [name, xs] of times) {
  const m = median(xs);
  console.log(
    `${name.padEnd(36)} median ${m.toFixed(0)} ms, ${(count / m * 1000).toFixed(0)} records/s, ` +
      `×${(m / base).toFixed(3)} of ${variants[0][0]}'s time (runs: ${
        xs.map((x) => x.toFixed(0)).join(" ")
      })`,
  );
}
