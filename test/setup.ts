import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterAll } from "vitest";
import { backgroundSettled, trackBackground } from "../src/lib/background";

// Each test file gets fresh storage; applying is idempotent when setup runs again.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);

// Audit chaining (waitUntil'd after each audited write) and the queue consumer's batches run in
// the background: let them finish before the file's environment is torn down, or what they still
// do (a log line, a call to a hub) fails into a closed runner (src/lib/background.ts).
trackBackground();
afterAll(async () => {
  await backgroundSettled();
});
