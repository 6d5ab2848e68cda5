/**
 * `deno task synth | deploy | destroy`: the pinned CDKTF CLI (run with npx),
 * with arguments passed through.
 *
 * Terraform reads the CLI configuration file that TF_CLI_CONFIG_FILE names.
 * When the variable names a file that does not exist, every Terraform
 * command prints "There are some problems with the CLI configuration" (shown
 * by cdktf as `[ERROR] default - ...`) although the stack is fine. Only in
 * that case this runs Terraform without a CLI configuration
 * (TF_CLI_CONFIG_FILE=/dev/null, which Terraform reads as empty) and says so
 * in one line; an existing configuration (provider mirrors, credentials) is
 * left alone.
 *
 * @module
 */

/** The CDKTF CLI this repository is synthesised and deployed with. */
export const CDKTF_CLI = "cdktf-cli@0.21.0";

/** The environment changes for the CDKTF CLI, and a note to print when there is one. */
export interface CdktfEnv {
  env: Record<string, string>;
  note?: string;
}

/**
 * The environment the CDKTF CLI runs with, given the variables and a test
 * for whether a file exists: no update check, and no CLI configuration when
 * TF_CLI_CONFIG_FILE names a missing file.
 */
export function cdktfEnv(
  get: (name: string) => string | undefined,
  fileExists: (path: string) => boolean,
): CdktfEnv {
  const env: Record<string, string> = { CHECKPOINT_DISABLE: "1" };
  const config = get("TF_CLI_CONFIG_FILE");
  if (config === undefined || config === "" || fileExists(config)) return { env };
  env.TF_CLI_CONFIG_FILE = "/dev/null";
  return {
    env,
    note: `TF_CLI_CONFIG_FILE names ${config}, which does not exist; ` +
      "running Terraform without a CLI configuration (TF_CLI_CONFIG_FILE=/dev/null)",
  };
}

function fileExists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  const { env, note } = cdktfEnv((n) => Deno.env.get(n), fileExists);
  if (note) console.error(`note: ${note}`);
  // Ctrl-C reaches cdktf and Terraform too (one process group): wait for them to finish.
  Deno.addSignalListener("SIGINT", () => {});
  const child = new Deno.Command("npx", {
    args: ["--yes", CDKTF_CLI, ...Deno.args],
    env,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  Deno.exit((await child.status).code);
}
