/**
 * Peak memory and CPU time of a benchmark contender, read from /proc: the
 * process and every descendant (Spark's Python driver starts a JVM), sampled
 * until it is stopped. Linux only, like the local cluster.
 *
 * - peak RSS: the highest sum of the tree's resident set sizes seen at one
 *   sample (VmRSS), or the single process's own high-water mark (VmHWM) when
 *   that is higher, which catches a peak between samples;
 * - CPU seconds: user + system time of every process of the tree, the last
 *   value seen of each (a process that exits between samples loses at most
 *   one interval).
 *
 * @module
 */

/** What one contender used. */
export interface ProcessUsage {
  peakRssBytes: number;
  cpuSeconds: number;
}

/** Clock ticks per second of /proc/PID/stat (USER_HZ is 100 on Linux). */
const TICKS = 100;

function readStat(pid: number): { ppid: number; ticks: number } | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name may hold spaces and parentheses: fields follow the last ")".
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) };
  } catch {
    return undefined;
  }
}

function statusKiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
      Deno.readTextFileSync(`/proc/${pid}/status`),
    );
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** `root` and its descendants alive now. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of Deno.readDirSync("/proc")) {
    const pid = Number(e.name);
    if (!Number.isInteger(pid)) continue;
    const s = readStat(pid);
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(pid);
    children.set(s.ppid, list);
  }
  const tree: number[] = [];
  const todo = [root];
  while (todo.length) {
    const pid = todo.pop()!;
    tree.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** Samples a process tree every `intervalMs` until {@link ProcessWatch.stop}. */
export class ProcessWatch {
  #peakKiB = 0;
  #ticks = new Map<number, number>();
  #timer: ReturnType<typeof setInterval>;

  constructor(readonly pid: number, intervalMs = 250) {
    this.sample();
    this.#timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Takes one sample now (also call it just before stopping the process). */
  sample(): void {
    const tree = processTree(this.pid).filter((pid) => readStat(pid) !== undefined);
    let rss = 0;
    for (const pid of tree) {
      rss += statusKiB(pid, "VmRSS");
      const s = readStat(pid);
      if (s) this.#ticks.set(pid, s.ticks);
    }
    const hwm = tree.length === 1 ? statusKiB(this.pid, "VmHWM") : 0;
    this.#peakKiB = Math.max(this.#peakKiB, rss, hwm);
  }

  /** Stops sampling and returns what the tree used. */
  stop(): ProcessUsage {
    clearInterval(this.#timer);
    let ticks = 0;
    for (const t of this.#ticks.values()) ticks += t;
    return { peakRssBytes: this.#peakKiB * 1024, cpuSeconds: ticks / TICKS };
  }

  /** What the tree used so far, sampling on. */
  get usage(): ProcessUsage {
    let ticks = 0;
    for (const t of this.#ticks.values()) ticks += t;
    return { peakRssBytes: this.#peakKiB * 1024, cpuSeconds: ticks / TICKS };
  }
}

/**
 * CPU seconds the local cluster's Kafka JVMs (controllers and brokers, from
 * their pid files under `clusterDir`) have used so far; undefined when none
 * runs. The difference across a run is the cluster's share of its cost.
 */
export function kafkaCpuSeconds(clusterDir: string): number | undefined {
  let ticks = 0;
  let found = false;
  for (
    const entry of (() => {
      try {
        return [...Deno.readDirSync(clusterDir)];
      } catch {
        return [];
      }
    })()
  ) {
    let pid: number;
    try {
      pid = Number(Deno.readTextFileSync(`${clusterDir}/${entry.name}/pid`).trim());
    } catch {
      continue;
    }
    const s = readStat(pid);
    if (s) {
      ticks += s.ticks;
      found = true;
    }
  }
  return found ? ticks / TICKS : undefined;
}

/** Stops a child with SIGTERM (a clean close), then SIGKILL if it has not exited after `graceMs`. */
export async function stopGracefully(
  child: Deno.ChildProcess,
  graceMs: number,
): Promise<Deno.CommandStatus> {
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, graceMs);
  try {
    return await child.status;
  } finally {
    clearTimeout(timer);
  }
}
