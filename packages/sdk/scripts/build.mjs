// Builds dist/ (ESM + .d.ts) with this package's TypeScript, and copies the generated wire types.
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
rmSync(`${root}dist`, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const run = spawnSync(process.execPath, [tsc, "-p", root], { stdio: "inherit" });
if (run.status !== 0) process.exit(run.status ?? 1);
copyFileSync(`${root}src/openapi.d.ts`, `${root}dist/openapi.d.ts`);
chmodSync(`${root}dist/cli.js`, 0o755);
