/**
 * Summarises a V8 `.cpuprofile` (from `deno run --cpu-prof`) by category of
 * self time: where a producer run spends its CPU (generation, JSON encoding,
 * kafkajs record encoding, CRC32C, Buffer work, garbage collection, idle).
 *
 *   deno run -A tests/bench/cpuprofile.ts /tmp/prof            # newest profile in a directory
 *   deno run -A tests/bench/cpuprofile.ts a.cpuprofile --top 30 # also the 30 hottest functions
 *
 * Runtime frames (Buffer internals, native ops, a bare `writeBuffer`) are
 * charged to the nearest caller in project or kafkajs code, so "Buffer
 * (kafkajs encoding)" is the Buffer allocation and copying kafkajs's encoder
 * causes. A tool for the report, not a test: it asserts nothing.
 *
 * @module
 */

const HELP = `Usage: deno run -A tests/bench/cpuprofile.ts <file.cpuprofile | directory> [--top N]

Prints the self time of a V8 CPU profile (deno run --cpu-prof) by category, in
percent of all samples, idle included, and of busy time. A directory means its
newest .cpuprofile.

  --top N   also list the N functions with the most self time (default 0)
  --help    this text`;

interface CallFrame {
  functionName: string;
  url: string;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Categories of frames that have a category of their own (first match wins). */
const OWN: Array<[string, (f: CallFrame) => boolean]> = [
  // A worker's thread waits in op_worker_maybe_wait_for_debugger until its first message.
  [
    "idle",
    (f) => f.functionName === "(idle)" || f.functionName === "op_worker_maybe_wait_for_debugger",
  ],
  ["garbage collection", (f) => f.functionName === "(garbage collector)"],
  ["kafkajs CRC32C", (f) => /kafkajs.*crc32C/i.test(f.url)],
  ["kafkajs record encoding", (f) => /kafkajs.*\/src\/protocol\//.test(f.url)],
  [
    "kafkajs grouping by partition",
    (f) => /kafkajs.*(groupMessagesPerPartition|partitioners)/.test(f.url),
  ],
  ["kafkajs other", (f) => /kafkajs/.test(f.url)],
  ["generation", (f) => /jobs\/lib\/(generator|currency)\.ts/.test(f.url)],
  ["JSON encoding", (f) => /jobs\/lib\/transaction\.ts/.test(f.url)],
  ["producer (txpipe)", (f) => /jobs\/(produce\.ts|lib\/)/.test(f.url)],
];

/** The category of a frame of its own, or undefined for runtime code. */
export function ownCategory(f: CallFrame): string | undefined {
  return OWN.find(([, match]) => match(f))?.[0];
}

/** How a runtime frame is named under its caller's category. */
function runtimeKind(f: CallFrame): string {
  if (/buffer/i.test(f.url) || /Buffer|copy/.test(f.functionName)) return "Buffer";
  if (/encode|utf8|op_encod/i.test(f.functionName)) return "text encoding";
  return "runtime";
}

/** Self time in microseconds by category, and by function. */
export function summarise(
  p: Profile,
): { byCategory: Map<string, number>; byFunction: Map<string, number> } {
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const categoryOf = new Map<number, string>();
  const category = (id: number): string => {
    const known = categoryOf.get(id);
    if (known) return known;
    const frame = nodes.get(id)!.callFrame;
    let c = ownCategory(frame);
    if (!c) {
      let up = parent.get(id);
      let owner: string | undefined;
      while (up !== undefined && !owner) {
        owner = ownCategory(nodes.get(up)!.callFrame);
        up = parent.get(up);
      }
      const kind = runtimeKind(frame);
      c = owner && owner !== "idle" ? `${kind} (${owner})` : `${kind} (other)`;
    }
    categoryOf.set(id, c);
    return c;
  };
  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    const c = category(id);
    byCategory.set(c, (byCategory.get(c) ?? 0) + dt);
    const f = nodes.get(id)!.callFrame;
    const name = `${f.functionName || "(anonymous)"} ${f.url.split("/").slice(-2).join("/")}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + dt);
  });
  return { byCategory, byFunction };
}

function newestProfile(dir: string): string {
  const files = [...Deno.readDirSync(dir)]
    .filter((e) => e.isFile && e.name.endsWith(".cpuprofile"))
    .map((e) => `${dir}/${e.name}`)
    .sort((a, b) => Deno.statSync(b).mtime!.getTime() - Deno.statSync(a).mtime!.getTime());
  if (files.length === 0) throw new Error(`no .cpuprofile in ${dir}`);
  return files[0];
}

function table(rows: Map<string, number>, total: number, busy: number, limit = Infinity): string {
  return [...rows].sort((a, b) => b[1] - a[1]).slice(0, limit).map(([name, us]) => {
    const ofBusy = name === "idle" ? "" : `${((us / busy) * 100).toFixed(1).padStart(5)} %`;
    return `${((us / total) * 100).toFixed(1).padStart(5)} %  ${ofBusy.padStart(7)}  ${
      (us / 1e6).toFixed(2).padStart(6)
    } s  ${name}`;
  }).join("\n");
}

function main(args: string[]): number {
  if (args.includes("--help") || args.includes("-h") || args.length === 0) {
    console.log(HELP);
    return args.length === 0 ? 2 : 0;
  }
  const topAt = args.indexOf("--top");
  const top = topAt >= 0 ? Number(args[topAt + 1]) : 0;
  const path = args.find((a, i) => !a.startsWith("--") && (topAt < 0 || i !== topAt + 1));
  if (path === undefined) {
    console.error("cpuprofile: expected a .cpuprofile file or a directory, given none");
    return 2;
  }
  const file = Deno.statSync(path).isDirectory ? newestProfile(path) : path;
  const { byCategory, byFunction } = summarise(JSON.parse(Deno.readTextFileSync(file)));
  const total = [...byCategory.values()].reduce((a, b) => a + b, 0);
  const busy = total - (byCategory.get("idle") ?? 0);
  console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(busy / 1e6).toFixed(2)} s busy`);
  console.log(" of all  of busy   self    category");
  console.log(table(byCategory, total, busy));
  if (top > 0) {
    console.log(`\nthe ${top} functions with the most self time:`);
    console.log(table(byFunction, total, busy, top));
  }
  return 0;
}

if (import.meta.main) Deno.exit(main(Deno.args));
