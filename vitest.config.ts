import { createServer } from "node:net";
import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

/** A free loopback port, chosen here because the Worker's bindings must name it before the global setup runs. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export default defineConfig(async () => {
  const migrations = await readD1Migrations(path.join(import.meta.dirname, "migrations"));
  // The real SMTP server (test/global/smtp-server.ts) listens here; outbound mail in tests goes to it.
  process.env.MAILBOT_TEST_SMTP_PORT ??= String(await freePort());
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
            OUTBOUND_TRANSPORT: "smtp",
            SMTP_HOST: "127.0.0.1",
            SMTP_PORT: process.env.MAILBOT_TEST_SMTP_PORT,
            SMTP_SECURITY: "none",
            SMTP_USERNAME: "mailbot",
            SMTP_PASSWORD: "test-smtp-password",
          },
          queueConsumers: {
            // These replace wrangler.toml's consumer settings, so retries and the DLQ are repeated.
            "mailbot-outbound": { maxBatchTimeout: 0.05, maxRetries: 8, deadLetterQueue: "mailbot-outbound-dlq" },
          },
        },
      }),
    ],
    test: {
      setupFiles: ["./test/setup.ts"],
      globalSetup: ["./test/global/smtp-server.ts"],
      include: ["test/**/*.test.ts"],
    },
  };
});
