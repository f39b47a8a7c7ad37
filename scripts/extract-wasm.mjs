// hash-wasm ships its WebAssembly as base64 and compiles it at run time, which workerd
// forbids. We extract the two modules Argon2id needs into .wasm files so the bundler
// (wrangler / the vitest plugin) hands them to the Worker precompiled. Runs on install.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const entry = require.resolve("hash-wasm/dist/index.esm.js");
const source = readFileSync(entry, "utf8");
const outDir = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "lib", "wasm");
mkdirSync(outDir, { recursive: true });

for (const name of ["argon2", "blake2b"]) {
  const pattern = new RegExp(`var name\\$(\\w+) = "${name}";\\s*var data\\$\\1 = "([A-Za-z0-9+/=]+)";`);
  const match = source.match(pattern);
  if (!match) throw new Error(`hash-wasm layout changed: no embedded "${name}" module in ${entry}`);
  const bytes = Buffer.from(match[2], "base64");
  writeFileSync(join(outDir, `${name}.wasm`), bytes);
  console.log(`extract-wasm: ${name}.wasm (${bytes.length} bytes)`);
}
