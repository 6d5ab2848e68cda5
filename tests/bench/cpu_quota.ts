/**
 * A CPU budget for one benchmark process, as a container's CPU limit gives
 * it (Docker's `--cpus`, a Kubernetes limit): a cgroup whose CFS quota is
 * `cpus` × its period. `deno task bench --cpus-per-instance 0.25` puts every
 * txpipe stream job instance into one of its own, so that one instance and
 * two compare as on machines that are not shared with the brokers
 * (docs/benchmarks.md, "Two instances with a CPU budget each").
 *
 * Linux only, and root: cgroup v1's `cpu` hierarchy (cpu.cfs_quota_us), or
 * cgroup v2 with the cpu controller enabled at its root (cpu.max).
 *
 * @module
 */
import { join } from "node:path";

const V1 = "/sys/fs/cgroup/cpu";
const V2 = "/sys/fs/cgroup";
const PERIOD_US = 100_000;

let count = 0;

/** Where budgets can be made here, or why not. */
export function cpuQuotaSupport(): { root: string; v2: boolean } | { problem: string } {
  try {
    Deno.statSync(join(V1, "cpu.cfs_quota_us"));
    return { root: V1, v2: false };
  } catch { /* not cgroup v1's cpu hierarchy */ }
  try {
    const enabled = Deno.readTextFileSync(join(V2, "cgroup.subtree_control")).split(/\s+/);
    if (enabled.includes("cpu")) return { root: V2, v2: true };
  } catch { /* not cgroup v2 either */ }
  return {
    problem: "no cgroup cpu controller found: neither cgroup v1's /sys/fs/cgroup/cpu nor " +
      "cgroup v2 with cpu in /sys/fs/cgroup/cgroup.subtree_control",
  };
}

/** A cgroup limited to `cpus` cores; processes join it by pid; {@link CpuBudget.remove} after. */
export class CpuBudget {
  readonly dir: string;
  readonly #v2: boolean;

  constructor(readonly cpus: number) {
    if (!(cpus > 0)) throw new Error(`a CPU budget must be above 0 cores, not ${cpus}`);
    const support = cpuQuotaSupport();
    if ("problem" in support) throw new Error(support.problem);
    this.#v2 = support.v2;
    this.dir = join(support.root, `txpipe-bench-${Deno.pid}-${++count}`);
    try {
      Deno.mkdirSync(this.dir);
      const quota = Math.round(cpus * PERIOD_US);
      if (support.v2) {
        Deno.writeTextFileSync(join(this.dir, "cpu.max"), `${quota} ${PERIOD_US}`);
      } else {
        Deno.writeTextFileSync(join(this.dir, "cpu.cfs_period_us"), String(PERIOD_US));
        Deno.writeTextFileSync(join(this.dir, "cpu.cfs_quota_us"), String(quota));
      }
    } catch (err) {
      this.remove();
      throw new Error(
        `cannot make a cgroup limited to ${cpus} cores in ${this.dir} (root is needed): ` +
          (err as Error).message,
      );
    }
  }

  /** Moves a process, every thread of it, and so the children it starts later, into the budget. */
  add(pid: number): void {
    Deno.writeTextFileSync(join(this.dir, "cgroup.procs"), String(pid));
  }

  /** CPU time the budget's processes were refused: throttled periods and seconds. */
  throttled(): { periods: number; seconds: number } {
    try {
      const stat = Deno.readTextFileSync(join(this.dir, "cpu.stat"));
      const field = (name: string) =>
        Number(new RegExp(`^${name} (\\d+)`, "m").exec(stat)?.[1] ?? 0);
      return {
        periods: field("nr_throttled"),
        seconds: this.#v2 ? field("throttled_usec") / 1e6 : field("throttled_time") / 1e9,
      };
    } catch {
      return { periods: 0, seconds: 0 };
    }
  }

  /** Removes the cgroup once its processes have exited (a cgroup with processes stays). */
  remove(): void {
    try {
      Deno.removeSync(this.dir);
    } catch { /* already gone, or processes left: the kernel refuses, harmlessly */ }
  }
}
