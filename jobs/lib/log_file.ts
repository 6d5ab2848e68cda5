/**
 * A child process's output written to a log file as it comes, so that the
 * file can be tailed while the process runs.
 *
 * Not `child.stdout.pipeTo(file.writable)`: Deno's FsFile.writable (Deno
 * 2.9) holds what is written to it until the stream closes. Seen here:
 * `deno task start`'s .cache/logs/produce.log stayed at 0 bytes for minutes
 * and got every line when the producer stopped (strace shows one write(2)
 * at close); a writer on `file.writable` leaves a file empty even after an
 * awaited write, while `file.write` reaches the file at once.
 *
 * @module
 */

/**
 * Writes every chunk of `source` to `file` as it arrives (a complete write
 * each), then closes `file`. Resolves when `source` ends.
 */
export async function copyToFile(
  source: ReadableStream<Uint8Array>,
  file: Deno.FsFile,
): Promise<void> {
  try {
    for await (const chunk of source) {
      let written = 0;
      while (written < chunk.length) written += await file.write(chunk.subarray(written));
    }
  } finally {
    file.close();
  }
}
