/**
 * The suite's topics go when the test file that made them ends, not only when
 * the whole suite does.
 *
 * Why: a broker's replica fetchers and delayed fetches go through every
 * partition it holds at each fetch, idle or not. On this 2-core machine,
 * with 420 idle topics on the cluster (about 2 300 partition replicas per
 * broker, about what single test files and probes had left on a long-lived
 * cluster), the brokers spent 3–4× the CPU on the same catch-up, and the
 * aggregation took 1.5–1.7× as long (docs/benchmarks.md, "Idle partitions
 * cost the brokers CPU"). The suite itself left its topics until its end.
 *
 * `deno test` runs each test file in an isolate of its own, one file after
 * the other, and an isolate's `unload` event fires once its file has ended:
 * every job and client the file started is stopped by then. The handler
 * cannot wait for Kafka, so it starts tests/helpers/drop_topics.ts, which
 * deletes the file's topics while the next file runs. The names carry a
 * random id each, so the next file's topics are never among them.
 *
 * @module
 */

const names = new Set<string>();
const prefixes = new Set<string>();
let hooked = false;

/**
 * Deletes `topics` when this test file ends, and with `prefix`, every topic
 * whose name begins with it (a job's internal topics, named after its app
 * id).
 */
export function dropWhenFileEnds(t: { topics?: readonly string[]; prefix?: string }): void {
  for (const topic of t.topics ?? []) names.add(topic);
  if (t.prefix) prefixes.add(t.prefix);
  if (hooked) return;
  hooked = true;
  globalThis.addEventListener("unload", () => {
    if (names.size === 0 && prefixes.size === 0) return;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./drop_topics.ts", import.meta.url).pathname,
        JSON.stringify({ names: [...names], prefixes: [...prefixes] }),
      ],
      cwd: new URL("../../", import.meta.url).pathname, // deno.json's imports
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    child.unref(); // the suite goes on meanwhile, and may end first
  });
}
