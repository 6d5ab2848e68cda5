/** The synth/deploy/destroy wrapper: Terraform's CLI configuration is replaced only when missing. */
import assert from "node:assert/strict";
import { cdktfEnv } from "../stacks/cdktf_cli.ts";

const vars = (v: Record<string, string>) => (n: string) => v[n];

Deno.test("cdktf_cli: a TF_CLI_CONFIG_FILE naming a missing file becomes /dev/null, with a note", () => {
  const { env, note } = cdktfEnv(vars({ TF_CLI_CONFIG_FILE: "/root/.terraformrc" }), () => false);
  assert.deepEqual(env, { CHECKPOINT_DISABLE: "1", TF_CLI_CONFIG_FILE: "/dev/null" });
  assert.equal(
    note,
    "TF_CLI_CONFIG_FILE names /root/.terraformrc, which does not exist; " +
      "running Terraform without a CLI configuration (TF_CLI_CONFIG_FILE=/dev/null)",
  );
});

Deno.test("cdktf_cli: an existing CLI configuration, or none named, is left alone", () => {
  const existing = cdktfEnv(vars({ TF_CLI_CONFIG_FILE: "/etc/terraformrc" }), () => true);
  assert.deepEqual(existing, { env: { CHECKPOINT_DISABLE: "1" } });
  assert.deepEqual(cdktfEnv(vars({}), () => false), { env: { CHECKPOINT_DISABLE: "1" } });
});

Deno.test("cdktf_cli: Terraform accepts /dev/null as its CLI configuration without a warning", {
  ignore: new Deno.Command("sh", { args: ["-c", "command -v terraform"] }).outputSync().code !== 0,
}, async () => {
  const out = await new Deno.Command("terraform", {
    args: ["version"],
    env: { TF_CLI_CONFIG_FILE: "/dev/null", CHECKPOINT_DISABLE: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.doesNotMatch(text, /problems with the CLI configuration/);
});
