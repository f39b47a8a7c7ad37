import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

export default defineConfig(async () => {
  const migrations = await readD1Migrations(path.join(import.meta.dirname, "migrations"));
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          bindings: {
            TEST_MIGRATIONS: migrations,
            ENVIRONMENT: "test",
            REGISTRATION: "open",
            MAIL_DOMAIN: "mailbot.test",
            ADMIN_TOKEN: "test-admin-token-0123456789",
            INBOUND_SECRET: "test-inbound-secret",
            TRUSTED_AUTHSERV_IDS: "mx.cloudflare.net",
            // Generous limits so suites can run fast; the limit tests set their own tier.
            TIER_LIMITS: JSON.stringify({
              sandbox: { requests_per_minute: 100000, burst: 100000 },
              tight: { requests_per_minute: 5, burst: 3, sends_per_inbox_per_day: 10, max_inboxes: 2 },
            }),
            REGISTRATIONS_PER_HOUR: "0",
          },
        },
      }),
    ],
    test: {
      setupFiles: ["./test/setup.ts"],
      include: ["test/**/*.test.ts"],
    },
  };
});
