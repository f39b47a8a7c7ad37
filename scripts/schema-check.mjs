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
  if (run.status !== 0) {
    console.error(run.stdout, run.stderr);
    throw new Error(`drizzle-kit generate failed (${run.error?.message ?? `exit ${run.status}`})`);
  }
  const written = readdirSync(scratch).filter((f) => f.endsWith(".sql"));
  if (written.length > 0) {
    console.error(readFileSync(join(scratch, written[0]), "utf8"));
    console.error(
      "db:check: src/db/schema.ts has changes that no drizzle snapshot records (above: what `npm run db:generate` would write).\n" +
        "Run `npm run db:generate`, review the SQL (or replace it with your hand-written migration of the same change), and commit the snapshot and journal with it.",
    );
    process.exit(1);
  }
  console.log("db:check: the last drizzle snapshot matches src/db/schema.ts");
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
