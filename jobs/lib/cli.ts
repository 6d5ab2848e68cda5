/**
 * Declarative command-line flags shared by every txpipe command.
 *
 * Precedence: `--flag` on the command line, then the `TXPIPE_*` environment
 * variable, then the default. A bad value ends the process with exit code 2
 * and a message naming the flag, what was expected and what was given.
 *
 * @module
 */

/** The kinds of value a flag takes. */
export type FlagKind = "string" | "int" | "number" | "boolean" | "duration" | "list";

/** One flag: its kind, default, help text and optional bounds or choices. */
export interface FlagSpec {
  readonly kind: FlagKind;
  readonly help: string;
  /** Default when neither the flag nor its environment variable is set. */
  readonly default?: string | number | boolean | string[];
  /** Inclusive lower bound for numbers and durations (ms). */
  readonly min?: number;
  /** Inclusive upper bound for numbers and durations (ms). */
  readonly max?: number;
  /** Allowed values for strings. */
  readonly choices?: readonly string[];
  /** Placeholder shown in --help, e.g. "N". */
  readonly placeholder?: string;
}

/** What a command is, its flags and its positional arguments. */
export interface CommandSpec {
  readonly name: string;
  readonly summary: string;
  readonly usage?: string;
  readonly flags: Readonly<Record<string, FlagSpec>>;
  readonly examples?: readonly string[];
}

/** Parsed values: flags by name (camelCased), plus positional arguments. */
export interface Parsed {
  readonly values: Record<string, string | number | boolean | string[] | undefined>;
  readonly positional: string[];
}

/** A usage error: the caller prints it and exits with code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

function envName(flag: string): string {
  return `TXPIPE_${flag.replaceAll("-", "_").toUpperCase()}`;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Parses a duration such as `500ms`, `30s`, `5m`, `1h` or a bare number of seconds into ms. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? "s";
  const factor = unit === "ms" ? 1 : unit === "s" ? 1000 : unit === "m" ? 60_000 : 3_600_000;
  return Math.round(n * factor);
}

function convert(
  flag: string,
  spec: FlagSpec,
  raw: string,
  source: string,
): string | number | boolean | string[] {
  const bad = (expected: string) => new UsageError(`${source}: expected ${expected}, got "${raw}"`);
  const bounded = (n: number, unit = "") => {
    if (spec.min !== undefined && n < spec.min) {
      throw bad(`a value >= ${spec.min}${unit}`);
    }
    if (spec.max !== undefined && n > spec.max) {
      throw bad(`a value <= ${spec.max}${unit}`);
    }
    return n;
  };
  switch (spec.kind) {
    case "string":
      if (spec.choices && !spec.choices.includes(raw)) {
        throw bad(`one of ${spec.choices.join(", ")}`);
      }
      if (raw === "") throw bad("a non-empty value");
      return raw;
    case "int": {
      if (!/^-?\d+$/.test(raw.trim())) throw bad("an integer");
      return bounded(Number(raw));
    }
    case "number": {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n)) throw bad("a number");
      return bounded(n);
    }
    case "boolean":
      if (["true", "1", "yes", ""].includes(raw)) return true;
      if (["false", "0", "no"].includes(raw)) return false;
      throw bad("true or false");
    case "duration": {
      const ms = parseDuration(raw);
      if (ms === undefined) throw bad("a duration such as 500ms, 30s, 5m or 1h");
      return bounded(ms, "ms");
    }
    case "list": {
      const items = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
      if (items.length === 0) throw bad("a comma-separated list");
      return items;
    }
  }
  throw new Error(`flag --${flag}: unknown kind ${spec.kind}`);
}

/**
 * Parses `args` against `spec`. Throws {@link UsageError} for unknown flags
 * and bad values; `--help` is reported as `values.help === true`.
 */
export function parseArgs(
  spec: CommandSpec,
  args: readonly string[],
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): Parsed {
  const values: Parsed["values"] = {};
  const seen = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--help" || arg === "-h") {
      values.help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const flag = spec.flags[name];
    if (!flag) {
      const known = Object.keys(spec.flags).map((f) => `--${f}`).join(", ");
      throw new UsageError(`unknown flag --${name}; expected one of ${known}, --help`);
    }
    let raw: string;
    if (eq !== -1) raw = arg.slice(eq + 1);
    else if (flag.kind === "boolean") {
      const next = args[i + 1];
      raw = next !== undefined && ["true", "false"].includes(next) ? args[++i] : "true";
    } else {
      if (i + 1 >= args.length) {
        throw new UsageError(`--${name}: expected a value (${flag.help}), got nothing`);
      }
      raw = args[++i];
    }
    values[camel(name)] = convert(name, flag, raw, `--${name}`);
    seen.add(name);
  }
  for (const [name, flag] of Object.entries(spec.flags)) {
    if (seen.has(name)) continue;
    const fromEnv = env(envName(name));
    if (fromEnv !== undefined && fromEnv !== "") {
      values[camel(name)] = convert(name, flag, fromEnv, `${envName(name)} (for --${name})`);
    } else if (flag.default !== undefined) {
      values[camel(name)] = flag.default;
    }
  }
  return { values, positional };
}

/**
 * Where the value of `flag` comes from: the command line, its `TXPIPE_*`
 * variable, or the default. A problem with a value the user gave (flag or
 * variable) is a usage error, exit code 2.
 */
export function flagSource(
  flag: string,
  args: readonly string[] = Deno.args,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): "flag" | "variable" | "default" {
  if (args.some((a) => a === `--${flag}` || a.startsWith(`--${flag}=`))) return "flag";
  return (env(envName(flag)) ?? "") !== "" ? "variable" : "default";
}

/** The --help text of a command. */
export function helpText(spec: CommandSpec): string {
  const lines = [`${spec.name}: ${spec.summary}`, ""];
  lines.push(`Usage: ${spec.usage ?? `${spec.name} [flags]`}`, "", "Flags:");
  const rows = Object.entries(spec.flags).map(([name, f]) => {
    const ph = f.placeholder ?? (f.kind === "boolean" ? "" : f.kind.toUpperCase());
    const left = `  --${name}${ph ? ` ${ph}` : ""}`;
    const def = f.default === undefined
      ? ""
      : ` (default: ${
        f.kind === "duration" && typeof f.default === "number"
          ? `${f.default}ms`
          : String(f.default)
      })`;
    return [left, `${f.help}${def} [env ${envName(name)}]`];
  });
  rows.push(["  --help", "show this help"]);
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  for (const [l, r] of rows) lines.push(l.padEnd(width) + r);
  if (spec.examples?.length) {
    lines.push("", "Examples:", ...spec.examples.map((e) => `  ${e}`));
  }
  return lines.join("\n");
}

/**
 * Parses `Deno.args` for a command-line entry point: prints --help and
 * exits 0, or prints a usage error and exits 2.
 */
export function parseCommandLine(spec: CommandSpec, args: readonly string[] = Deno.args): Parsed {
  try {
    const parsed = parseArgs(spec, args);
    if (parsed.values.help) {
      console.log(helpText(spec));
      Deno.exit(0);
    }
    return parsed;
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${spec.name}: ${err.message}\nRun with --help for usage.`);
      Deno.exit(2);
    }
    throw err;
  }
}
