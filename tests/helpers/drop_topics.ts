/**
 * Deletes the topics of one finished test file (see topic_cleanup.ts): the
 * names and name prefixes in its one argument (JSON), as the admin. Runs on
 * its own, after the file's isolate is gone, so it says nothing on the
 * terminal: a failure is appended to `<TXPIPE_HOME>/test-logs/drop-topics.log`
 * and costs nothing more, since `deno task test` deletes every `test_…` and
 * `test-…` topic left at its end anyway.
 *
 * @module
 */
import { join } from "node:path";
import { homeDir } from "../../stacks/local/cluster.ts";
import { deleteTopicsWhere } from "./cluster.ts";

// Never outlives the suite by long: a cluster stopped meanwhile ends it here.
const deadline = setTimeout(() => Deno.exit(0), 30_000);

const { names, prefixes } = JSON.parse(Deno.args[0] ?? "{}") as {
  names?: string[];
  prefixes?: string[];
};
try {
  const wanted = new Set(names ?? []);
  await deleteTopicsWhere((t) => wanted.has(t) || (prefixes ?? []).some((p) => t.startsWith(p)));
} catch (err) {
  const line = `${new Date().toISOString()} ${(err as Error).message}\n`;
  await Deno.writeTextFile(join(homeDir(), "test-logs", "drop-topics.log"), line, { append: true })
    .catch(() => {});
} finally {
  clearTimeout(deadline);
}
