/** The per-TXPIPE_HOME locks: one holder at a time, named; free again when the holder dies. */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  acquireLock,
  describeHolder,
  LockedError,
  lockPath,
  readHolder,
} from "../stacks/local/lock.ts";

async function withHome(fn: (home: string) => Promise<void>): Promise<void> {
  const home = await Deno.makeTempDir({ prefix: "txpipe-lock-" });
  try {
    await fn(home);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

Deno.test("lock: a second taker gets a LockedError naming the holder's command, pid and start", async () => {
  await withHome(async (home) => {
    const held = await acquireLock("start", { home, command: "deno task start" });
    try {
      await assert.rejects(
        () => acquireLock("start", { home, command: "deno task test" }),
        (err: Error) => {
          assert.ok(err instanceof LockedError);
          assert.equal(err.holder?.pid, Deno.pid);
          assert.equal(err.holder?.command, "deno task start");
          assert.match(
            err.message,
            new RegExp(
              `^deno task start \\(pid ${Deno.pid}, since \\d\\d:\\d\\d:\\d\\d, running for ` +
                `\\d\\d:\\d\\d\\) is already running on ${home}; only one \`deno task start\``,
            ),
          );
          return true;
        },
      );
      // The other lock of the same home is independent.
      const cluster = await acquireLock("cluster", { home, command: "deno task cluster up" });
      await cluster.release();
    } finally {
      await held.release();
    }
    const again = await acquireLock("start", { home, command: "deno task test" });
    assert.equal((await readHolder(lockPath("start", home)))?.command, "deno task test");
    await again.release();
  });
});

Deno.test("lock: a lock file left by a dead process is taken over", async () => {
  await withHome(async (home) => {
    const dead = new Deno.Command("true").spawn();
    await dead.status;
    await Deno.writeTextFile(
      join(home, "start.lock"),
      JSON.stringify({ pid: dead.pid, command: "deno task start", since: new Date(0) }),
    );
    assert.equal(await readHolder(lockPath("start", home)), undefined, "a dead pid holds nothing");
    const held = await acquireLock("start", { home, command: "deno task start" });
    assert.equal((await readHolder(lockPath("start", home)))?.pid, Deno.pid);
    await held.release();
  });
});

Deno.test("lock: kill -9 of the holder frees the lock (the kernel drops it; no stale lock)", async () => {
  await withHome(async (home) => {
    const lockModule = new URL("../stacks/local/lock.ts", import.meta.url).href;
    const holder = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { acquireLock } from "${lockModule}";
         await acquireLock("cluster", { home: ${
          JSON.stringify(home)
        }, command: "deno task cluster up" });
         console.log("held");
         await new Promise((r) => setTimeout(r, 600_000));`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = holder.stdout.getReader();
    const { value } = await reader.read();
    assert.equal(new TextDecoder().decode(value).trim(), "held");
    await assert.rejects(
      () => acquireLock("cluster", { home, command: "deno task cluster down" }),
      new RegExp(`deno task cluster up \\(pid ${holder.pid}, .* is changing the cluster of`),
    );
    holder.kill("SIGKILL");
    await holder.status;
    reader.releaseLock();
    await holder.stdout.cancel();
    const taken = await acquireLock("cluster", { home, command: "deno task cluster down" });
    await taken.release();
  });
});

Deno.test("lock: describeHolder says the date too when the holder started on another day", () => {
  const now = new Date(2025, 5, 2, 10, 0, 0);
  const holder = { pid: 7, command: "deno task start", since: new Date(2025, 5, 1, 23, 59, 0) };
  assert.equal(
    describeHolder(holder, now),
    "deno task start (pid 7, since 2025-06-01 23:59:00, running for 10:01:00)",
  );
  assert.match(describeHolder(undefined), /another txpipe command/);
});
