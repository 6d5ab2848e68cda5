/**
 * Ports the local commands bind: is one free, and if not, who holds it.
 *
 * Every command that listens (a job's /metrics, Prometheus, the Kafka nodes)
 * checks its ports with {@link portClashes} and reports a taken one with
 * {@link clashMessage}: the port, what it is for, the process holding it when
 * Linux's /proc tells (best effort: another user's sockets may be unreadable),
 * and how to move it.
 *
 * @module
 */

/** The process that listens on a port. */
export interface PortHolder {
  pid: number;
  /** Its command line, shortened to fit a message. */
  command: string;
}

/** A port a command wants to bind. */
export interface WantedPort {
  port: number;
  /** What it is for, e.g. "detect's /metrics" or "client port of kafka-broker-1". */
  what: string;
  /** How to move it or what to do, e.g. "move it with --metrics-port PORT". */
  advice: string;
  /** The user chose this port (a flag or its TXPIPE_* variable): a clash is a usage error. */
  given?: boolean;
}

/** A wanted port another process holds. */
export interface PortClash extends WantedPort {
  holder?: PortHolder;
}

/** A port was taken; `clash` says which, by whom and what to do. */
export class PortInUseError extends Error {
  override name = "PortInUseError";
  constructor(readonly clash: PortClash) {
    super(clashMessage(clash));
  }
}

/** True when nothing listens on `port` at `hostname` (127.0.0.1 also clashes with 0.0.0.0). */
export function portFree(port: number, hostname = "127.0.0.1"): boolean {
  try {
    Deno.listen({ hostname, port }).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * The socket inodes listening on `port` in the text of /proc/net/tcp or
 * /proc/net/tcp6 (local address `HEXIP:HEXPORT`, state 0A = LISTEN).
 */
export function listeningInodes(procNetTcp: string, port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes: string[] = [];
  for (const line of procNetTcp.split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 10) continue;
    const localPort = cols[1].split(":")[1];
    if (localPort === hexPort && cols[3] === "0A" && cols[9] !== "0") inodes.push(cols[9]);
  }
  return inodes;
}

/**
 * A command line (NUL-separated, as in /proc/PID/cmdline) shortened for a
 * message: the program's base name, the first arguments that fit, and the
 * last argument in full (a JVM's is its config file). A long argument in
 * between (a classpath) is shown as "…".
 */
export function shortCommand(cmdline: string, max = 110): string {
  const [program = "", ...rest] = cmdline.split("\0").filter((a) => a !== "");
  const name = program.split("/").pop()!;
  const full = [name, ...rest].join(" ");
  if (full.length <= max) return full;
  const last = rest.pop() ?? "";
  let head = name;
  for (const a of rest.map((a) => a.length > 40 ? "…" : a)) {
    if (head.length + a.length + last.length + 4 > max) break;
    if (!(a === "…" && head.endsWith("…"))) head += ` ${a}`;
  }
  return head.endsWith("…") ? `${head} ${last}` : `${head} … ${last}`;
}

/**
 * The process listening on `port`, found through /proc/net/tcp{,6} and the
 * socket links in /proc/PID/fd; undefined when it cannot be told (no /proc,
 * or the holder's file descriptors are not readable by this user).
 */
export async function portHolder(port: number): Promise<PortHolder | undefined> {
  const inodes = new Set<string>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(file).catch(() => "");
    for (const inode of listeningInodes(text, port)) inodes.add(`socket:[${inode}]`);
  }
  if (inodes.size === 0) return undefined;
  try {
    for await (const proc of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(proc.name)) continue;
      try {
        for await (const fd of Deno.readDir(`/proc/${proc.name}/fd`)) {
          const target = await Deno.readLink(`/proc/${proc.name}/fd/${fd.name}`).catch(() => "");
          if (!inodes.has(target)) continue;
          const cmdline = await Deno.readTextFile(`/proc/${proc.name}/cmdline`).catch(() => "");
          return { pid: Number(proc.name), command: shortCommand(cmdline) || "?" };
        }
      } catch { /* exited meanwhile, or not ours to read */ }
    }
  } catch { /* no /proc */ }
  return undefined;
}

/** The wanted ports that are taken, each with its holder when it can be told. */
export async function portClashes(wanted: readonly WantedPort[]): Promise<PortClash[]> {
  const clashes: PortClash[] = [];
  for (const w of wanted) {
    if (portFree(w.port)) continue;
    clashes.push({ ...w, holder: await portHolder(w.port) });
  }
  return clashes;
}

/** "port 9466 (detect's /metrics) is already in use by pid 4242 (python3 …); <advice>" */
export function clashMessage(clash: PortClash): string {
  return `${clashLine(clash)}; ${clash.advice}`;
}

/**
 * Several clashes as lines: "port … is already in use by …" for each, and
 * after each group of clashes with the same advice, the advice once ("→ …").
 */
export function clashReport(clashes: readonly PortClash[]): string[] {
  const byAdvice = new Map<string, PortClash[]>();
  for (const c of clashes) byAdvice.set(c.advice, [...(byAdvice.get(c.advice) ?? []), c]);
  return [...byAdvice].flatMap(([advice, group]) => [...group.map(clashLine), `→ ${advice}`]);
}

function clashLine(clash: PortClash): string {
  const by = clash.holder ? `pid ${clash.holder.pid} (${clash.holder.command})` : "another process";
  return `port ${clash.port} (${clash.what}) is already in use by ${by}`;
}
