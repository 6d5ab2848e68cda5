/**
 * Stream threads: one instance of a stream job running its processors in
 * several threads, as Kafka Streams runs `num.stream.threads` (`--threads`).
 *
 * Each thread runs the job's processors exactly as an instance does
 * (jobs/lib/stream.ts): its own Kafka clients, its own members of the job's
 * consumer groups, its own partitions, their transactions and their state.
 * So everything an instance guarantees holds per thread, and a thread that
 * stops or fails is a member leaving the group. Thread 0 is the process's
 * main thread; threads 1 to N-1 are Web Workers (each a V8 isolate of its
 * own, about 30 MiB before it holds any data). The main thread also keeps
 * what is shared: the /metrics endpoint (each worker's metrics summed in, as
 * prom-client's AggregatorRegistry sums a Node cluster's), the signals, the
 * connection check and the topics.
 *
 * A job's threads share the process's one stdout: each log line carries
 * `txpipe.thread`. One thread uses one core; a job whose one thread is busy
 * (detect, docs/benchmarks.md) reads faster with two where a core is free.
 *
 * The thread's side is {@link runThread} (stream_thread.ts is the worker's
 * entry point); the process's side is {@link runThreads}.
 *
 * @module
 */
import { addMetricsSource, type MetricsJson } from "./metrics.ts";
import type { Logger } from "./log.ts";

/** What the process tells a thread. */
export type ToThread =
  | { kind: "start"; thread: number; module: string }
  | { kind: "stop" }
  | { kind: "metrics"; id: number };

/** What a thread tells the process. */
export type FromThread =
  | { kind: "done" }
  | { kind: "exit"; code: number }
  | { kind: "failed"; name: string; message: string; stack?: string }
  | { kind: "metrics"; id: number; metrics: MetricsJson };

/** Whether this code runs in a worker (a stream thread), not the process's main thread. */
function inWorker(): boolean {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  return typeof g.WorkerGlobalScope !== "undefined" && g instanceof g.WorkerGlobalScope;
}

/** From a stream thread: a message to the process (the worker scope's postMessage). */
export function toProcess(m: FromThread): void {
  (self as unknown as { postMessage(m: FromThread): void }).postMessage(m);
}

/**
 * Ends the process with `code` (crash-only: a restart resumes from the last
 * commit). `Deno.exit` in a Web Worker would end only that worker, silently,
 * its partitions stuck with a member that no longer reads; so a stream thread
 * asks the main thread to exit, then stops.
 */
export function exitProcess(code: number): never {
  if (!inWorker()) Deno.exit(code);
  toProcess({ kind: "exit", code });
  throw new Error(`the process is exiting with code ${code}`);
}

/** A thread's failure, as the process reports it. */
export class ThreadError extends Error {
  constructor(readonly thread: number, name: string, message: string, stack?: string) {
    super(`thread ${thread}: ${message}`);
    this.name = `ThreadError(${name})`;
    if (stack) this.stack = `${this.name}: ${this.message}\n(in the thread) ${stack}`;
  }
}

/** How long a scrape waits for a busy thread's metrics before serving its latest. */
const METRICS_WAIT_MS = 5_000;

/**
 * Runs `count` stream threads (workers) of the job module at `module` (a
 * module that exports `STREAM_JOB`, see job.ts), numbered from 1 (the main
 * thread is thread 0), until `stopSignal`, then stops them and waits for each to commit and leave. The
 * first thread to fail stops the others, and this throws its error. While
 * they run, /metrics serves their metrics summed with the process's own.
 */
export async function runThreads(o: {
  module: string;
  count: number;
  log: Logger;
  stopSignal: Promise<void>;
}): Promise<void> {
  const entry = new URL("./stream_thread.ts", import.meta.url);
  const workers: Worker[] = [];
  let failure: ThreadError | undefined;
  let stopAll!: () => void;
  const stopping = new Promise<void>((r) => stopAll = r);
  const pending = new Map<number, (m: MetricsJson | undefined) => void>();
  let nextId = 0;
  const finished = Array.from({ length: o.count }, (_, i) =>
    new Promise<void>((resolve) => {
      const thread = i + 1;
      const worker = new Worker(entry, { type: "module", name: `stream-thread-${thread}` });
      workers.push(worker);
      const fail = (e: ThreadError) => {
        failure ??= e;
        stopAll();
        resolve();
      };
      worker.onmessage = (e: MessageEvent<FromThread>) => {
        const m = e.data;
        if (m.kind === "done") resolve();
        else if (m.kind === "exit") {
          o.log.error({ "txpipe.thread": thread }, `thread ${thread} ends the process (${m.code})`);
          Deno.exit(m.code);
        } else if (m.kind === "failed") fail(new ThreadError(thread, m.name, m.message, m.stack));
        else if (m.kind === "metrics") {
          pending.get(m.id)?.(m.metrics);
          pending.delete(m.id);
        }
      };
      worker.onerror = (e) => {
        e.preventDefault();
        fail(new ThreadError(thread, "Error", e.message));
      };
      worker.postMessage({ kind: "start", thread, module: o.module } satisfies ToThread);
    }));
  // Each worker's latest metrics: a scrape that a busy worker does not answer
  // in time serves them again, so that its counters never seem to go back.
  const latest: Array<MetricsJson | undefined> = [];
  const removeSource = addMetricsSource(async () => {
    const replies = workers.map((w, i) =>
      new Promise<MetricsJson | undefined>((resolve) => {
        const id = nextId++;
        const timer = setTimeout(() => {
          if (pending.delete(id)) resolve(latest[i]);
        }, METRICS_WAIT_MS);
        pending.set(id, (m) => {
          clearTimeout(timer);
          if (m !== undefined) latest[i] = m;
          resolve(latest[i]);
        });
        w.postMessage({ kind: "metrics", id } satisfies ToThread);
      })
    );
    return (await Promise.all(replies)).filter((m) => m !== undefined);
  });
  o.log.info(
    { "txpipe.threads": o.count },
    `stream threads 1 to ${o.count} started (workers)`,
  );
  try {
    await Promise.race([o.stopSignal, stopping]);
    for (const w of workers) w.postMessage({ kind: "stop" } satisfies ToThread);
    await Promise.all(finished);
  } finally {
    removeSource();
    for (const resolve of pending.values()) resolve(undefined);
    for (const w of workers) w.terminate();
  }
  if (failure) throw failure;
}
