/**
 * The locks that keep the local commands of one TXPIPE_HOME from racing.
 *
 *   <home>/start.lock    held for its whole run by the command that may stop
 *                        the cluster when it exits: `deno task start` or
 *                        `deno task test`. One at a time, so whoever started
 *                        the cluster is the one that stops it.
 *   <home>/cluster.lock  held while a command changes the cluster:
 *                        `deno task cluster up|stop|jars` (and `down|reset`,
 *                        which also take start.lock: they would pull the
 *                        cluster from under a running start), and start's
 *                        and the test runner's own up and down.
 *
 * A lock is an exclusive flock(2) on its file. The kernel drops it when the
 * holder exits, however it exits (kill -9 too), so a lock is never stale and
 * a reused pid is never mistaken for its holder. The file names the holder
 * (pid, command, since) for the message of whoever finds it taken. Only the
 * command-line entry points take locks; `clusterUp` and `clusterDown` do
 * not, so tests that call them under `deno task test` cannot deadlock.
 *
 * @module
 */
import { join } from "node:path";
import { formatElapsed } from "../../jobs/lib/progress.ts";

/** The two locks of a TXPIPE_HOME (see the module documentation). */
export type LockName = "start" | "cluster";

/** Who holds a lock, as its file says. */
export interface LockHolder {
  pid: number;
  /** e.g. "deno task start" */
  command: string;
  /** When it took the lock. */
  since: Date;
}

/** A lock this process holds. */
export interface HeldLock {
  readonly name: LockName;
  readonly path: string;
  /** Releases it (exiting does too). */
  release(): Promise<void>;
}

/** The lock was taken; the message names the holder and what to do. */
export class LockedError extends Error {
  override name = "LockedError";
  constructor(readonly lock: LockName, readonly holder: LockHolder | undefined, home: string) {
    super(lockedMessage(lock, holder, home));
  }
}

/** Options of {@link acquireLock}. */
export interface LockOptions {
  /** The TXPIPE_HOME whose lock it is (cluster.ts's `homeDir()`). */
  home: string;
  /** Who takes it, as the holder's message will name it, e.g. "deno task start". */
  command: string;
  /** Keep trying this long before giving up (default 0: fail at once). */
  waitMs?: number;
  /** Said once when the lock is taken and waitMs > 0. */
  onWait?: (holder: LockHolder | undefined) => void;
}

/** The file of lock `name` in `home`. */
export function lockPath(name: LockName, home: string): string {
  return join(home, `${name}.lock`);
}

/** Takes lock `name` of `options.home`, or throws a {@link LockedError} naming the holder. */
export async function acquireLock(name: LockName, options: LockOptions): Promise<HeldLock> {
  const home = options.home;
  const path = lockPath(name, home);
  await Deno.mkdir(home, { recursive: true });
  // Opened without truncating: the holder's details stay readable until we hold it.
  const file = await Deno.open(path, { read: true, write: true, create: true });
  const deadline = Date.now() + (options.waitMs ?? 0);
  let said = false;
  while (!(await file.tryLock(true))) {
    if (Date.now() >= deadline) {
      const holder = await readHolder(path);
      file.close();
      throw new LockedError(name, holder, home);
    }
    if (!said && options.onWait) options.onWait(await readHolder(path));
    said = true;
    await new Promise((r) => setTimeout(r, 500));
  }
  const holder = { pid: Deno.pid, command: options.command, since: new Date().toISOString() };
  await file.truncate(0);
  await file.write(new TextEncoder().encode(JSON.stringify(holder) + "\n"));
  let released = false;
  return {
    name,
    path,
    async release() {
      if (released) return;
      released = true;
      await file.truncate(0).catch(() => {});
      await file.unlock().catch(() => {});
      file.close();
    },
  };
}

/** Takes several locks in order; on failure releases those already taken and rethrows. */
export async function acquireLocks(
  names: readonly LockName[],
  options: LockOptions,
): Promise<HeldLock[]> {
  const held: HeldLock[] = [];
  try {
    for (const name of names) held.push(await acquireLock(name, options));
  } catch (err) {
    for (const lock of held.reverse()) await lock.release();
    throw err;
  }
  return held;
}

/**
 * The holder a lock file names, or undefined when it names none (being
 * written) or a process that is gone (the lock is being released).
 */
export async function readHolder(path: string): Promise<LockHolder | undefined> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const raw = JSON.parse(await Deno.readTextFile(path));
      const pid = Number(raw.pid);
      const since = new Date(raw.since);
      if (Number.isInteger(pid) && !Number.isNaN(since.getTime()) && await alive(pid)) {
        return { pid, command: String(raw.command), since };
      }
    } catch { /* empty or half written */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  return undefined;
}

async function alive(pid: number): Promise<boolean> {
  try {
    await Deno.stat(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** "deno task start (pid 4242, since 14:02:11, running for 03:05)" */
export function describeHolder(holder: LockHolder | undefined, now: Date = new Date()): string {
  if (!holder) return "another txpipe command (it did not say which)";
  const t = holder.since;
  const day = t.toDateString() === now.toDateString()
    ? ""
    : `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} `;
  const time = `${day}${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
  const running = formatElapsed(Math.max(0, (now.getTime() - t.getTime()) / 1000));
  return `${holder.command} (pid ${holder.pid}, since ${time}, running for ${running})`;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

/** The message of a {@link LockedError}. */
export function lockedMessage(
  lock: LockName,
  holder: LockHolder | undefined,
  home: string,
): string {
  const who = describeHolder(holder);
  return lock === "start"
    ? `${who} is already running on ${home}; only one \`deno task start\` or \`deno task test\` ` +
      "runs per TXPIPE_HOME (it stops the cluster it started when it ends). " +
      "Stop that one first (Ctrl-C in its terminal), then run again."
    : `${who} is changing the cluster of ${home}; wait until it has finished, then run again.`;
}
