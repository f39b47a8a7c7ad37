// Checks that drizzle-kit's last snapshot (migrations/meta) describes src/db/schema.ts, so that
// `npm run db:generate` writes only the next change. drizzle-kit runs against a copy of the meta
// folder: nothing in migrations/ is touched. Run by .ci/run (`npm run db:check`).
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
// Inside the repository: drizzle-kit resolves --out against the working directory.
const scratch = mkdtempSync(join(ROOT, "node_modules", ".schema-check-"));
try {
  cpSync(join(ROOT, "migrations", "meta"), join(scratch, "meta"), { recursive: true });
  const run = spawnSync(
    join(ROOT, "node_modules", ".bin", "drizzle-kit"),
    ["generate", "--dialect", "sqlite", "--schema", "./src/db/schema.ts", "--out", `./${relative(ROOT, scratch)}`],
    { cwd: ROOT, encoding: "utf8", timeout: 120_000 },
  );
  const output = `${run.stdout}${run.stderr}`;
  const written = readdirSync(scratch).filter((f) => f.endsWith(".sql"));
  // Only drizzle-kit's own "nothing to do" passes: it also exits 0 without writing anything when
  // it cannot go on (a rename it would ask about on a terminal, colliding snapshots, a malformed
  // one), and those must fail here too.
  if (run.status === 0 && written.length === 0 && output.includes("No schema changes, nothing to migrate")) {
    console.log("db:check: the last drizzle snapshot matches src/db/schema.ts");
  } else {
    console.error(output);
    if (written.length > 0) console.error(readFileSync(join(scratch, written[0]), "utf8"));
    console.error(
      "db:check: drizzle-kit does not find src/db/schema.ts and its last snapshot in step (above: what it said, and the SQL `npm run db:generate` would write, if any).\n" +
        "Run `npm run db:generate` in a terminal, review the SQL (or replace it with your hand-written migration of the same change), and commit the snapshot and journal with it.",
    );
    if (run.error) console.error(`drizzle-kit did not run: ${run.error.message}`);
    // exitCode, not exit(): the scratch folder is removed below either way.
    process.exitCode = 1;
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
