/**
 * The entry point of a stream thread (a Web Worker, see threads.ts): it
 * imports the job module it is told, runs the job's processors until told to
 * stop ({@link runThread} in job.ts), and answers the process's requests for
 * its metrics.
 *
 * @module
 */
import { runThread, type StreamJob } from "./job.ts";
import type { FlagSpecs } from "./cli.ts";
import { registry } from "./metrics.ts";
import { toProcess, type ToThread } from "./threads.ts";

/** The worker's global scope (its types are not those of the main thread's). */
const scope = self as unknown as { onmessage: ((e: MessageEvent<ToThread>) => void) | null };
let stop!: () => void;
const stopSignal = new Promise<void>((r) => stop = r);

scope.onmessage = async (e: MessageEvent<ToThread>) => {
  const m = e.data;
  if (m.kind === "stop") stop();
  else if (m.kind === "metrics") {
    toProcess({ kind: "metrics", id: m.id, metrics: await registry.getMetricsAsJSON() });
  } else if (m.kind === "start") {
    try {
      const job: StreamJob<FlagSpecs> = (await import(m.module)).STREAM_JOB;
      if (job === undefined) throw new Error(`${m.module} exports no STREAM_JOB`);
      await runThread(job, m.thread, stopSignal);
      toProcess({ kind: "done" });
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      toProcess({ kind: "failed", name: e.name, message: e.message, stack: e.stack });
    }
  }
};
