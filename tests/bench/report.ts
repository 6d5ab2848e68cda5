/**
 * Markdown tables of a `deno task bench` result (the ones docs/benchmarks.md
 * shows), drawn from the result JSON alone:
 *
 *   deno run -A tests/bench/report.ts .cache/bench/results-<time>.json
 *
 * @module
 */
import type { BenchResult, ContenderSummary, LatencyResult, Spread } from "./results.ts";
import { ratio } from "./results.ts";

/** 12 345 → "12 345" (thin grouping, as the docs write numbers). */
function n(v: number): string {
  return Math.round(v).toLocaleString("en-US").replaceAll(",", " ");
}

function spreadText(s: Spread): string {
  return s.runs.length > 1 ? `${n(s.median)} (${n(s.min)}–${n(s.max)})` : n(s.median);
}

function mib(bytes: number | undefined): string {
  return bytes === undefined ? "" : `${n(bytes / 2 ** 20)} MiB`;
}

function rows(
  contenders: readonly ContenderSummary[],
  against: Record<string, string[]>,
): string[] {
  const median = (name: string) =>
    contenders.find((c) => c.contender === name)?.recordsPerSecond.median;
  return contenders.map((c) => {
    const ratios = (against[c.contender] ?? []).flatMap((a) => {
      const r = ratio(c.recordsPerSecond.median, median(a));
      return r === undefined ? [] : [`${r.toFixed(2)}× ${a}`];
    });
    const dropped = c.dropped?.some((d) => d > 0)
      ? ` (dropped as late: ${c.dropped.map(n).join(", ")})`
      : "";
    return `| ${c.contender}${dropped} | ${spreadText(c.recordsPerSecond)} | ${
      c.recordsPerSecondFromFirstOutput ? n(c.recordsPerSecondFromFirstOutput.median) : "—"
    } | ${mib(c.peakRssBytes?.median)} | ${c.cpuSeconds?.median.toFixed(1) ?? ""} | ${
      c.kafkaCpuSeconds?.median.toFixed(1) ?? ""
    } | ${ratios.join("; ")} |`;
  });
}

const HEADER = [
  "| contender | records/s from start, median (min–max) | without start-up | peak RSS | CPU s | Kafka CPU s | txpipe ÷ |",
  "| --- | --- | --- | --- | --- | --- | --- |",
];

/** A latency section's table and its maximum sustainable rates. */
function latencyTable(l: LatencyResult): string[] {
  const out = [
    "| job | paced rate | reached | p50 ms | p99 ms | max ms | job's own p50 / p99 ms | peak RSS | lag bounded |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of l.rows) {
    out.push(
      `| ${r.job} | ${n(r.rate)} | ${n(r.achievedRate)} | ${n(r.p50Ms)} | ${n(r.p99Ms)} | ${
        n(r.maxMs)
      } | ${r.jobP50Ms !== undefined ? `${n(r.jobP50Ms)} / ${n(r.jobP99Ms ?? 0)}` : ""} | ${
        mib(r.peakRssBytes)
      } | ${r.sustained ? "yes" : `no: ${r.why ?? ""}`} |`,
    );
  }
  out.push("");
  for (const [job, rate] of Object.entries(l.maxSustainableRate)) {
    out.push(
      `- maximum sustainable rate, ${job}: ${
        rate === null ? "none of the rates tried" : `${n(rate)} records/s`
      }`,
    );
  }
  out.push("");
  return out;
}

/**
 * Which contenders each txpipe contender is divided by, section by section:
 * one definition for the console's tables (bench.ts) and the Markdown.
 */
export const COMPARISONS = {
  catchUp: (contenders: readonly ContenderSummary[]): Record<string, string[]> => ({
    "txpipe aggregate": [
      ...contenders.map((x) => x.contender).filter((name) => name.startsWith("Kafka Streams")),
      "Spark aggregate",
      "ConsumerPerformance",
    ],
    "txpipe detect": ["ConsumerPerformance"],
    "txpipe aggregate, 2 instances": ["txpipe aggregate"],
    "txpipe detect, 2 instances": ["txpipe detect"],
    "txpipe aggregate, 2 threads": ["txpipe aggregate"],
    "txpipe detect, 2 threads": ["txpipe detect"],
  }),
  producer: (contenders: readonly ContenderSummary[]): Record<string, string[]> => ({
    "txpipe produce": contenders.map((x) => x.contender).filter((name) =>
      !name.startsWith("txpipe")
    ),
  }),
  reference: (rev: string): Record<string, string[]> => ({
    "txpipe aggregate": [`txpipe aggregate at ${rev}`, "txpipe detect", "ConsumerPerformance"],
    "txpipe detect": [`txpipe detect at ${rev}`, "ConsumerPerformance"],
    "txpipe detect, 2 threads": [`txpipe detect at ${rev}`, "txpipe detect"],
  }),
};

/** The result's tables, as Markdown. */
export function markdown(result: BenchResult): string {
  const out: string[] = [];
  const m = result.machine;
  out.push(
    `Measured ${
      result.date.slice(0, 16).replace("T", " ")
    } UTC with \`${result.command}\`: ${m.cpus} cores (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.kernel}, Deno ${m.deno}, ${m.java}, Kafka ${m.kafka}; median of ${result.runs} interleaved run(s); the whole bench took ${
      (result.seconds / 60).toFixed(0)
    } min.`,
    "",
  );
  if (result.catchUp) {
    const c = result.catchUp;
    out.push(`**Catch-up over a backlog of ${n(c.records)} records**`, "", ...HEADER);
    out.push(...rows(c.contenders, COMPARISONS.catchUp(c.contenders)));
    out.push("", "**Cross-check of the windows against txpipe aggregate's first run**", "");
    out.push(
      "| contender | windows both closed | differ | emitted twice | only txpipe closed | only the contender closed |",
      "| --- | --- | --- | --- | --- | --- |",
    );
    for (const x of c.crossChecks) {
      out.push(
        `| ${x.contender} | ${n(x.compared)} | ${n(x.mismatched)} | ${n(x.duplicates)} | ${
          n(x.onlyReference)
        } | ${n(x.onlyContender)} |`,
      );
    }
    out.push("");
  }
  if (result.producer) {
    const p = result.producer;
    out.push(
      `**Produce ${n(p.records)} records of about ${n(p.meanRecordBytes)} bytes**`,
      "",
      ...HEADER,
    );
    out.push(...rows(p.contenders, COMPARISONS.producer(p.contenders)));
    out.push("");
  }
  if (result.reference) {
    const r = result.reference;
    out.push(
      `**Today's jobs against the same jobs at ${r.rev}, over a backlog of ${
        n(r.records)
      } records** (every txpipe job over PLAINTEXT)`,
      "",
      ...HEADER,
    );
    out.push(...rows(r.contenders, COMPARISONS.reference(r.rev)));
    out.push("");
    for (const x of r.crossChecks) {
      out.push(
        `- windows of ${x.contender} against ${x.reference}: ${n(x.compared)} both closed, ${
          n(x.mismatched)
        } differ, ${n(x.duplicates)} emitted twice, ${n(x.onlyReference)} only in the reference, ${
          n(x.onlyContender)
        } only in the contender`,
      );
    }
    out.push("");
    if (r.latency) {
      out.push(
        `**Latency under paced load, today's jobs against ${r.rev}** (${r.latency.seconds} s measured per rate, every job over PLAINTEXT)`,
        "",
        ...latencyTable(r.latency),
      );
    }
  }
  if (result.latency) {
    out.push(
      `**Latency under paced load** (${result.latency.seconds} s measured per rate)`,
      "",
      ...latencyTable(result.latency),
    );
  }
  return out.join("\n");
}

if (import.meta.main) {
  const file = Deno.args[0];
  if (!file || file === "--help") {
    console.error("usage: deno run -A tests/bench/report.ts RESULTS.json");
    Deno.exit(file ? 0 : 2);
  }
  console.log(markdown(JSON.parse(await Deno.readTextFile(file)) as BenchResult));
}
