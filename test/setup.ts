import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll } from "vitest";
import { chainingSettled } from "../src/features/audit/audit-chain";

// Each test file gets fresh storage; applying is idempotent when setup runs again.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);

// Audit chaining runs in the background (waitUntil) after each audited write: let the last ones
// finish before the file's environment is torn down, or their logs land in a closed runner.
afterAll(async () => {
  await chainingSettled();
});
