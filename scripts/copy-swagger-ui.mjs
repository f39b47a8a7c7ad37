// /docs is Swagger UI from the `swagger-ui-dist` package pinned in package.json, served by this
// deployment itself (no CDN: it works offline, and what runs is what the lockfile names). Its CSS
// and JS are Workers static assets: this copies them from node_modules into public/swagger-ui/
// (git-ignored), which wrangler.toml's [assets] serves. Runs on install, before dev, test and deploy.
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const from = dirname(require.resolve("swagger-ui-dist/package.json"));
const { version } = JSON.parse(readFileSync(join(from, "package.json"), "utf8"));
const to = join(dirname(fileURLToPath(import.meta.url)), "..", "public", "swagger-ui");
mkdirSync(to, { recursive: true });
for (const file of ["swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"]) {
  copyFileSync(join(from, file), join(to, file));
}
if (!process.argv.includes("--quiet")) console.log(`copy-swagger-ui: swagger-ui-dist ${version} → public/swagger-ui/`);
