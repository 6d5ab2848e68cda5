/**
 * The README and docs/ as a reader follows them: every relative link names a
 * file of the repository, every `#anchor` a heading of its page (as GitHub
 * makes heading anchors), and nothing points outside the repository.
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";

const ROOT = new URL("../", import.meta.url).pathname;

function pages(): string[] {
  const docs = [...Deno.readDirSync(join(ROOT, "docs"))]
    .filter((e) => e.isFile && e.name.endsWith(".md"))
    .map((e) => `docs/${e.name}`)
    .sort();
  return ["README.md", ...docs];
}

/**
 * A heading's anchor as GitHub makes it: lower case, every character that is
 * not a letter, digit, mark, space, "-" or "_" removed (backticks, dots,
 * colons, parentheses, dashes other than "-"), spaces as "-"; a repeated
 * anchor gets "-1", "-2", ...
 */
export function headingAnchor(text: string): string {
  return text.toLowerCase().replace(/[^\p{L}\p{N}\p{M}\p{Pc} -]/gu, "").replaceAll(" ", "-");
}

/** A page's headings' anchors (fenced code left out). */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    const m = fenced ? null : /^#{1,6} +(.*?)\s*$/.exec(line);
    if (!m) continue;
    const base = headingAnchor(m[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Every Markdown link target of a page outside fenced code: `[text](target)`. */
function links(markdown: string): string[] {
  const out: string[] = [];
  let fenced = false;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("```")) fenced = !fenced;
    if (fenced) continue;
    for (const m of line.replace(/`[^`]*`/g, "").matchAll(/\]\(([^)\s]+)\)/g)) out.push(m[1]);
  }
  return out;
}

Deno.test("docs: heading anchors are made as GitHub makes them", () => {
  assert.equal(
    headingAnchor("What `CONCURRENT_TRANSACTIONS` waits for (2026-12-07, 06:00–07:45 UTC)"),
    "what-concurrent_transactions-waits-for-2026-12-07-06000745-utc",
  );
  assert.equal(
    headingAnchor("Where the aggregation's time goes now (2026-12-07, 00:00 UTC)"),
    "where-the-aggregations-time-goes-now-2026-12-07-0000-utc",
  );
  assert.equal(
    headingAnchor("The aggregation (`jobs/aggregate.ts`)"),
    "the-aggregation-jobsaggregatets",
  );
  assert.deepEqual([...anchors("# A\n## A\n```\n# not a heading\n```\n### A.")], [
    "a",
    "a-1",
    "a-2",
  ]);
});

Deno.test("docs: every link of the README and docs/ names a file of the repository and a heading of it; none leaves the repository", () => {
  const problems: string[] = [];
  let checked = 0;
  for (const page of pages()) {
    const text = Deno.readTextFileSync(join(ROOT, page));
    for (const link of links(text)) {
      if (/^[a-z]+:/i.test(link)) continue; // https:, mailto: ...
      checked++;
      const [path, anchor] = link.split("#", 2);
      const target = path === "" ? page : normalize(join(dirname(page), path));
      if (relative(ROOT, join(ROOT, target)).startsWith("..")) {
        problems.push(`${page}: ${link} points outside the repository`);
        continue;
      }
      let body: string | undefined;
      try {
        const info = Deno.statSync(join(ROOT, target));
        if (info.isFile && target.endsWith(".md")) body = Deno.readTextFileSync(join(ROOT, target));
      } catch {
        problems.push(`${page}: ${link}: no file ${target}`);
        continue;
      }
      if (anchor !== undefined && body !== undefined && !anchors(body).has(anchor)) {
        problems.push(`${page}: ${link}: ${target} has no heading #${anchor}`);
      }
    }
  }
  assert.ok(checked > 100, `links found: ${checked}`);
  assert.deepEqual(problems, []);
});
