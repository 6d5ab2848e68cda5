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
export type FlagKind = "string" | "int" | "number" | "boolean" | "duration" | "bytes" | "list";

/** One flag: its kind, default, help text and optional bounds or choices. */
export interface FlagSpec {
  readonly kind: FlagKind;
  readonly help: string;
  /** Default when neither the flag nor its environment variable is set. */
  readonly default?: string | number | boolean | readonly string[];
  /** Inclusive lower bound for numbers and durations (ms). */
  readonly min?: number;
  /** Inclusive upper bound for numbers and durations (ms). */
  readonly max?: number;
  /** Allowed values for strings. */
  readonly choices?: readonly string[];
  /** Placeholder shown in --help, e.g. "N". */
  readonly placeholder?: string;
}

/** A command's flags by name, as on the command line (kebab-case). */
export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

/** What a command is, its flags and its positional arguments. */
export interface CommandSpec<F extends FlagSpecs = FlagSpecs> {
  readonly name: string;
  readonly summary: string;
  readonly usage?: string;
  readonly flags: F;
  readonly examples?: readonly string[];
}

/** Any parsed flag value (what a spec not declared `as const` gives). */
export type AnyFlagValue = string | number | boolean | string[];

/**
 * A flag name as a key of the parsed values: `allowed-lateness` →
 * `allowedLateness` (a dash before a lowercase letter goes, the letter is
 * capitalised; any other dash stays, as {@link flagKey} does at run time).
 */
export type FlagKey<S extends string> = S extends `${infer H}-${infer C}${infer R}`
  ? C extends Lowercase<C> ? Uppercase<C> extends C ? `${H}-${FlagKey<`${C}${R}`>}` // not a letter
    : `${H}${Uppercase<C>}${FlagKey<R>}`
  : `${H}-${FlagKey<`${C}${R}`>}`
  : S;

/**
 * The parsed value of one flag: number for int, number, duration (ms) and bytes,
 * boolean, string[] for list, and a string, or the union of its `choices`.
 * A flag of a wide {@link FlagSpec} (not `as const`) gives {@link AnyFlagValue}.
 */
export type FlagValue<F extends FlagSpec> = F["kind"] extends
  "int" | "number" | "duration" | "bytes" ? number
  : F["kind"] extends "boolean" ? boolean
  : F["kind"] extends "list" ? string[]
  : F["kind"] extends "string"
    ? F extends { readonly choices: readonly (infer C extends string)[] } ? C : string
  : AnyFlagValue;

/** Whether the flag always has a value: it has a default. */
type HasDefault<F extends FlagSpec> = F extends
  { readonly default: string | number | boolean | readonly string[] } ? true
  : false;

/**
 * The parsed values of `F`, by camelCased name ({@link FlagKey}): each typed
 * from its spec ({@link FlagValue}), `| undefined` only when it has no default.
 */
export type FlagValues<F extends FlagSpecs> = {
  -readonly [K in keyof F & string as FlagKey<K>]: HasDefault<F[K]> extends true ? FlagValue<F[K]>
    : FlagValue<F[K]> | undefined;
};

/** Parsed values: flags by name (camelCased), plus positional arguments. */
export interface Parsed<F extends FlagSpecs = FlagSpecs> {
  /** Each flag's value ({@link FlagValues}); `help` is true when --help or -h was given. */
  readonly values: FlagValues<F> & { help?: boolean };
  readonly positional: string[];
}

/**
 * `spec`, its types kept: declare a command with it (or `as const` /
 * `satisfies CommandSpec`) and its parsed values are typed from its flags.
 */
export function defineCommand<const F extends FlagSpecs>(spec: CommandSpec<F>): CommandSpec<F> {
  return spec;
}

/** `flags`, their types kept, for flag groups spread into several commands. */
export function defineFlags<const F extends FlagSpecs>(flags: F): F {
  return flags;
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

/** The key of flag `flag` in the parsed values (see {@link FlagKey}): `dead-letters` → `deadLetters`. */
export function flagKey<S extends string>(flag: S): FlagKey<S> {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) as FlagKey<S>;
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

/**
 * Parses a size: bytes, or a number with a unit (KiB, MiB, GiB, powers of
 * 1024; KB, MB, GB, powers of 1000). Undefined when `text` is not one.
 */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?$/i.exec(text.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? "B").toLowerCase();
  const factor = {
    b: 1,
    kib: 1024,
    mib: 1024 ** 2,
    gib: 1024 ** 3,
    kb: 1000,
    mb: 1000 ** 2,
    gb: 1000 ** 3,
  }[unit]!;
  const n = Number(m[1]) * factor;
  return Number.isInteger(n) ? n : undefined;
}

/** A size for --help: 8388608 → "8 MiB". */
export function formatBytes(n: number): string {
  for (const [unit, f] of [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (n >= f && n % f === 0) return `${n / f} ${unit}`;
  }
  return `${n} B`;
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
    case "string": {
      if (raw === "" && !spec.choices) throw bad("a non-empty value");
      if (!spec.choices) return raw;
      // Choices match in either case ("sasl_ssl" is SASL_SSL) and come back as declared.
      const choice = spec.choices.find((c) => c.toLowerCase() === raw.toLowerCase());
      if (choice === undefined) throw bad(`one of ${spec.choices.join(", ")}`);
      return choice;
    }
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
    case "bytes": {
      const n = parseBytes(raw);
      if (n === undefined) throw bad("a size such as 1048576, 512KiB or 8MiB");
      const fmt = (b: number) => ` (${formatBytes(b)})`;
      if (spec.min !== undefined && n < spec.min) throw bad(`at least ${spec.min}${fmt(spec.min)}`);
      if (spec.max !== undefined && n > spec.max) throw bad(`at most ${spec.max}${fmt(spec.max)}`);
      return n;
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
export function parseArgs<F extends FlagSpecs>(
  spec: CommandSpec<F>,
  args: readonly string[],
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): Parsed<F> {
  const flags: FlagSpecs = spec.flags;
  const values: Record<string, AnyFlagValue | undefined> = {};
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
    const flag = flags[name];
    if (!flag) {
      const known = Object.keys(flags).map((f) => `--${f}`).join(", ");
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
    values[flagKey(name)] = convert(name, flag, raw, `--${name}`);
    seen.add(name);
  }
  for (const [name, flag] of Object.entries(flags)) {
    if (seen.has(name)) continue;
    const fromEnv = env(envName(name));
    if (fromEnv !== undefined && fromEnv !== "") {
      values[flagKey(name)] = convert(name, flag, fromEnv, `${envName(name)} (for --${name})`);
    } else if (flag.default !== undefined) {
      // A copy of a list default: the spec's array is never handed out.
      values[flagKey(name)] = typeof flag.default === "object" ? [...flag.default] : flag.default;
    }
  }
  // The one place the values meet their types: each was converted by its spec's kind.
  return { values: values as Parsed<F>["values"], positional };
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
  const rows = Object.entries<FlagSpec>(spec.flags).map(([name, f]) => {
    const ph = f.placeholder ?? (f.kind === "boolean" ? "" : f.kind.toUpperCase());
    const left = `  --${name}${ph ? ` ${ph}` : ""}`;
    const def = f.default === undefined || String(f.default) === ""
      ? ""
      : ` (default: ${
        f.kind === "duration" && typeof f.default === "number"
          ? `${f.default}ms`
          : f.kind === "bytes" && typeof f.default === "number"
          ? formatBytes(f.default)
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
export function parseCommandLine<F extends FlagSpecs>(
  spec: CommandSpec<F>,
  args: readonly string[] = Deno.args,
): Parsed<F> {
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
