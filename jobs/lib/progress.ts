/**
 * Progress reporting for long-running commands: a live line redrawn on an
 * interactive terminal (stderr), and nothing on a pipe or in a container,
 * where the ECS logs carry the periodic figures instead.
 *
 * @module
 */

/** Formats a count with thousands separators: 1234567 -> "1,234,567". */
export function formatCount(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

/** Formats seconds as mm:ss or h:mm:ss. */
export function formatElapsed(seconds: number): string {
  const s = Math.floor(seconds % 60).toString().padStart(2, "0");
  const m = Math.floor((seconds / 60) % 60).toString().padStart(2, "0");
  const h = Math.floor(seconds / 3600);
  return h > 0 ? `${h}:${m}:${s}` : `${m}:${s}`;
}

/** Formats bytes per second as MB/s with one decimal (1 MB = 10^6 bytes). */
export function formatMBps(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

/** A line redrawn in place on a terminal; silent when stderr is not one. */
export class LiveLine {
  readonly #enabled: boolean;
  #shown = false;
  readonly #encoder = new TextEncoder();

  constructor(enabled = Deno.stderr.isTerminal()) {
    this.#enabled = enabled;
  }

  /** Whether the line is drawn at all. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Redraws the line with `text`. */
  update(text: string): void {
    if (!this.#enabled) return;
    Deno.stderr.writeSync(this.#encoder.encode(`\r\x1b[2K${text}`));
    this.#shown = true;
  }

  /** Ends the live line so that following output starts on a fresh line. */
  done(): void {
    if (this.#enabled && this.#shown) Deno.stderr.writeSync(this.#encoder.encode("\n"));
    this.#shown = false;
  }
}
