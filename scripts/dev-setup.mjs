// `predev`: gets a fresh clone ready for `wrangler dev` and says so in a few lines.
// 1. Creates .dev.vars from .dev.vars.example on the first run, replacing each __random__ with a
//    fresh secret, so a new clone runs with no manual setup.
// 2. Applies the local D1 migrations. wrangler prints a table of every migration twice (~400
//    lines); that output is kept only when it fails, and a one-line summary is printed instead.
// 3. Prints what a new user needs (where the API is, the local ADMIN_TOKEN) last, so it is not
//    scrolled away.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

let created = false;
if (!existsSync(".dev.vars")) {
  const text = readFileSync(".dev.vars.example", "utf8").replace(/__random__/g, () =>
    randomBytes(24).toString("base64url"),
  );
  writeFileSync(".dev.vars", text, { mode: 0o600 });
  created = true;
}
const vars = readFileSync(".dev.vars", "utf8");
const value = (name) => vars.match(new RegExp(`^${name}=(.*)$`, "m"))?.[1]?.trim() ?? "";

// The wrangler bin starts with `#!/usr/bin/env node`: keep this Node (22 under `npm run`) first.
const wrangler = join("node_modules", ".bin", "wrangler");
const migrate = spawnSync(wrangler, ["d1", "migrations", "apply", "mailbot", "--local"], {
  encoding: "utf8",
  env: { ...process.env, CI: "true", PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}` },
});
const output = `${migrate.stdout ?? ""}${migrate.stderr ?? ""}`;
if (migrate.status !== 0) {
  process.stderr.write(output);
  console.error(`\nApplying the local D1 migrations failed (${migrate.error?.message ?? `exit ${migrate.status}`}).`);
  process.exit(1);
}
const applied = [...new Set(output.match(/\d{4}_[\w-]+\.sql(?=\s*│\s*✅)/g) ?? [])];
const first = applied[0];
const last = applied.at(-1);

console.log(
  [
    "",
    created ? "Created .dev.vars (local settings and fresh random secrets; git-ignored)." : "Using .dev.vars.",
    applied.length === 0
      ? "Local D1: migrations up to date."
      : `Local D1: applied ${applied.length} migration${applied.length === 1 ? "" : "s"} (${first}${applied.length > 1 ? ` … ${last}` : ""}).`,
    `Local ADMIN_TOKEN (operator bearer for /v1/admin/*): ${value("ADMIN_TOKEN")}`,
    "The API comes up on the URL wrangler prints below (http://localhost:8787 unless you pass --port);",
    "the walk-through is in README.md. Local state lives in .wrangler/state: delete it to start over.",
    "",
  ].join("\n"),
);
