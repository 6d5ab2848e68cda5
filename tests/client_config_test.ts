/**
 * The benchmark's client config (tests/bench/client_config.ts): the admin's
 * Java client properties in a 0600 temporary file, deleted after use, and no
 * file at all without credentials. No cluster needed.
 */
import assert from "node:assert/strict";
import { javaClientProperties, type KafkaAuth } from "../jobs/lib/credentials.ts";
import { propertiesText, withClientConfig, writeClientConfig } from "./helpers/client_config.ts";

const AUTH: KafkaAuth = { username: "admin", password: "s3cr3t-Pa55_word", source: "test" };

/** Reads a properties file the simple way Java does for the lines propertiesText writes. */
function parseProperties(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n").filter((l) => l !== "")) {
    const at = line.search(/(?<!\\)=/);
    const unescape = (s: string) =>
      s.replace(
        /\\(u[0-9a-f]{4}|.)/g,
        (_, e: string) =>
          e.length === 5
            ? String.fromCharCode(parseInt(e.slice(1), 16))
            : ({ n: "\n", r: "\r", t: "\t", f: "\f" } as Record<string, string>)[e] ?? e,
      );
    out[unescape(line.slice(0, at))] = unescape(line.slice(at + 1));
  }
  return out;
}

async function entries(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name);
}

Deno.test("client config: a 0600 file of the admin's Java client properties", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const config = await writeClientConfig({ auth: () => AUTH, dir });
    assert.ok(config.path?.startsWith(dir));
    assert.deepEqual(config.args("--command-config"), ["--command-config", config.path]);
    const stat = await Deno.stat(config.path!);
    assert.equal(stat.mode! & 0o777, 0o600);
    const text = await Deno.readTextFile(config.path!);
    assert.deepEqual(parseProperties(text), javaClientProperties(AUTH));
    assert.match(text, /^security\.protocol=SASL_PLAINTEXT$/m);
    assert.match(text, /^sasl\.mechanism=SCRAM-SHA-512$/m);
    assert.match(
      text,
      /^sasl\.jaas\.config=org\.apache\.kafka\.common\.security\.scram\.ScramLoginModule required username="admin" password="s3cr3t-Pa55_word";$/m,
    );
    await config.remove();
    await config.remove(); // twice is fine
    assert.deepEqual(await entries(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client config: nothing is written without credentials", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const seen = await withClientConfig((config) => {
      assert.equal(config.path, undefined);
      assert.deepEqual(config.args("--client-config"), []);
      return entries(dir);
    }, { auth: () => undefined, dir });
    assert.deepEqual(seen, []);
    assert.deepEqual(await entries(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client config: withClientConfig deletes the file after use, even on failure", async () => {
  const dir = await Deno.makeTempDir();
  try {
    let path: string | undefined;
    await assert.rejects(
      withClientConfig((config) => {
        path = config.path;
        return Promise.reject(new Error("the client failed"));
      }, { auth: () => AUTH, dir }),
      /the client failed/,
    );
    assert.ok(path?.startsWith(dir));
    assert.deepEqual(await entries(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("client config: properties text escapes what Java would read as syntax", () => {
  const props = { "a key": " lead\\ing\nnew #é€😀", "sasl.mechanism": "SCRAM-SHA-512" };
  const text = propertiesText(props);
  assert.ok(/^[\x20-\x7e\n]*$/.test(text), "ASCII only");
  assert.equal(text.split("\n").length, 3);
  assert.deepEqual(parseProperties(text), props);
  assert.equal(propertiesText({}), "");
});
