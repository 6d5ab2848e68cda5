/**
 * How the synthesized stack refers to files of this repository.
 *
 * `cdktf synth` writes the stack to `cdktf.out/stacks/txpipe/cdk.tf.json`, and
 * Terraform (or OpenTofu) runs in that folder, so a repository file is
 * `${path.module}/../../../<file>` there. Uploads read their `source` when
 * the container is created and carry a `source_hash` (`filesha256`), so a
 * changed dashboard or pipeline replaces its container on the next apply,
 * with cdktf or with plain terraform/tofu alike.
 *
 * @module
 */

/** The one stack's name; also its folder under `cdktf.out/stacks/`. */
export const STACK_NAME = "txpipe";

/** Where the synthesized stack lives, relative to the repository root. */
export const STACK_DIR = `cdktf.out/stacks/${STACK_NAME}`;

const FROM_STACK_DIR = "${path.module}/../../..";

/** A Terraform path expression for a repository file, valid in the synthesized stack's folder. */
export function repoFile(relativePath: string): string {
  if (relativePath.startsWith("/") || relativePath.split("/").includes("..")) {
    throw new Error(
      `expected a path inside the repository, relative to its root; got "${relativePath}"`,
    );
  }
  return `${FROM_STACK_DIR}/${relativePath}`;
}

/** A Terraform expression for the SHA-256 of a repository file, evaluated at plan time. */
export function repoFileHash(relativePath: string): string {
  return `\${filesha256("${repoFile(relativePath)}")}`;
}

/**
 * A Terraform expression for the repository root as an absolute path on the
 * machine that runs Terraform (bind mounts need absolute host paths).
 */
export function repoRootAbsolute(): string {
  return `\${abspath("${FROM_STACK_DIR}")}`;
}

/** The repository path a `repoFile` expression points at, or undefined for any other string. */
export function repoPathOf(expression: string): string | undefined {
  const prefix = `${FROM_STACK_DIR}/`;
  return expression.startsWith(prefix) ? expression.slice(prefix.length) : undefined;
}

/** Absolute path of the repository root on this machine (synth time). */
export function repoRoot(): string {
  return decodeURIComponent(new URL("..", import.meta.url).pathname).replace(/\/$/, "");
}

/**
 * Repository-relative paths of the files directly in `dir` whose names end in
 * `suffix`, sorted, read at synth time (a new dashboard needs a new synth,
 * which `cdktf deploy` always does).
 */
export function repoFilesIn(dir: string, suffix: string): string[] {
  const names: string[] = [];
  try {
    for (const entry of Deno.readDirSync(`${repoRoot()}/${dir}`)) {
      if (entry.isFile && entry.name.endsWith(suffix)) names.push(`${dir}/${entry.name}`);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return names.sort();
}
