/**
 * Taken ports are named with their holder and how to move them, never as a
 * stack trace: the port helpers, and a job whose --metrics-port is taken.
 */
import assert from "node:assert/strict";
import {
  clashMessage,
  clashReport,
  listeningInodes,
  portClashes,
  portFree,
  portHolder,
  shortCommand,
} from "../jobs/lib/ports.ts";
import { runScript } from "./helpers/cluster.ts";

/** A port this test process listens on, until `close`. */
function occupy(): { port: number; close: () => void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

Deno.test("ports: the LISTEN socket of a port is found in /proc/net/tcp text (v4 and v6)", () => {
  const text = [
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
    "   0: 0100007F:24BA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1",
    "   1: 0100007F:24BA 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1",
    "   2: 0000000000000000FFFF00000100007F:2384 00000000000000000000000000000000:0000 0A 0 0 0 0 0 5151 1",
  ].join("\n");
  assert.deepEqual(listeningInodes(text, 9402), ["4242"], "the ESTABLISHED one is not a listener");
  assert.deepEqual(listeningInodes(text, 9092), ["5151"]);
  assert.deepEqual(listeningInodes(text, 9093), []);
});

Deno.test("ports: a JVM's command line is shortened to its program, first flags and config file", () => {
  const java = [
    "/usr/lib/jvm/java-17/bin/java",
    "-Xms768m",
    "-Xmx768m",
    "-XX:+UseG1GC",
    `-javaagent:${"/x".repeat(40)}`,
    "-cp",
    "/a.jar:".repeat(200),
    "kafka.Kafka",
    "/work/main/.cache/kafka/cluster/kafka-broker-1/server.properties",
  ].join("\0");
  assert.equal(
    shortCommand(java),
    "java -Xms768m -Xmx768m -XX:+UseG1GC … -cp … " +
      "/work/main/.cache/kafka/cluster/kafka-broker-1/server.properties",
  );
  assert.equal(
    shortCommand("python3\0-m\0http.server\0" + "9466\0"),
    "python3 -m http.server 9466",
  );
});

Deno.test("ports: a taken port is reported with the pid and command of its holder", async () => {
  const taken = occupy();
  try {
    assert.equal(portFree(taken.port), false);
    const holder = await portHolder(taken.port);
    assert.equal(holder?.pid, Deno.pid);
    assert.match(holder!.command, /^deno /);
    const clashes = await portClashes([
      { port: taken.port, what: "detect's /metrics", advice: "move it with --metrics-port PORT" },
    ]);
    assert.equal(clashes.length, 1);
    assert.equal(
      clashMessage(clashes[0]),
      `port ${taken.port} (detect's /metrics) is already in use by pid ${Deno.pid} ` +
        `(${holder!.command}); move it with --metrics-port PORT`,
    );
    assert.deepEqual(
      clashReport([...clashes, { ...clashes[0], what: "x", holder: undefined }]).slice(1),
      [
        `port ${taken.port} (x) is already in use by another process`,
        "→ move it with --metrics-port PORT",
      ],
    );
  } finally {
    taken.close();
  }
  assert.equal(portFree(taken.port), true);
  assert.deepEqual(await portClashes([{ port: taken.port, what: "x", advice: "" }]), []);
});

Deno.test("job: a taken --metrics-port exits 2 naming the port, its holder and the flag; no trace, no Kafka", async () => {
  const taken = occupy();
  try {
    // Brokers nobody listens on: the job must stop at its port, before any connection attempt.
    const common = ["--brokers", "127.0.0.1:1", "--connect-attempts", "1"];
    const run = await runScript("jobs/detect.ts", [
      ...common,
      "--metrics-port",
      String(taken.port),
    ]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(
        `^deno task detect: port ${taken.port} \\(detect's /metrics\\) is already in use by ` +
          `pid ${Deno.pid} \\(deno [^)]*\\); choose another with --metrics-port PORT or ` +
          "TXPIPE_METRICS_PORT \\(0 = any free port\\), or stop that process\n$",
      ),
    );
    assert.doesNotMatch(run.stderr + run.stdout, /Uncaught|AddrInUse|\n\s+at /);
    assert.doesNotMatch(run.stdout, /kafka-connect-retry|unreachable/, "Kafka never contacted");

    const viaEnv = await runScript("jobs/detect.ts", common, {
      env: { TXPIPE_METRICS_PORT: String(taken.port) },
    });
    assert.equal(viaEnv.code, 2, "TXPIPE_METRICS_PORT is the user's choice too");
    assert.match(viaEnv.stderr, new RegExp(`port ${taken.port} \\(detect's /metrics\\)`));
  } finally {
    taken.close();
  }
});
