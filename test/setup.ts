import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";

// Each test file gets fresh storage; applying is idempotent when setup runs again.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
