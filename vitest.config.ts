import { generateKeyPairSync } from "node:crypto";
import { availableParallelism } from "node:os";
import path from "node:path";
import { defineConfig } from "vitest/config";
import { useTestCa } from "./test/global/tls-env.ts";

export default defineConfig(async () => {
  // The test CA first: Miniflare reads NODE_EXTRA_CA_CERTS once, when its module loads, so the
  // plugin is imported only after the variable points at a bundle with the test CA in it.
  useTestCa();
  const { cloudflareTest, readD1Migrations } = await import("@cloudflare/vitest-plugin");
  const migrations = await readD1Migrations(path.join(import.meta.dirname, "migrations"));

  // The shared domain's DKIM key for this run (tests read its public half from the worker's env).
  const dkimPrivateKey = generateKeyPairSync("rsa", { modulusLength: 2048 })
    .privateKey.export({ type: "pkcs8", format: "der" })
    .toString("base64");
  return {
    plugins: [
      cloudflareTest(({ inject }) => ({
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          // Webhook deliveries leave the queue at once instead of after a 1 s batch window. This
          // replaces wrangler.toml's consumer settings, so its retries and DLQ are repeated here.
          queueConsumers: {
            "mailbot-webhooks": { maxBatchTimeout: 0.05, maxRetries: 10, deadLetterQueue: "mailbot-webhooks-dlq" },
            "mailbot-outbound": { maxBatchTimeout: 0.05, maxRetries: 8, deadLetterQueue: "mailbot-outbound-dlq" },
          },
          bindings: {
            TEST_MIGRATIONS: migrations,
            // "development": the shared MAIL_DOMAIN resolves from configuration (see authResolver);
            // any other value would make the gate look it up in real DNS.
            ENVIRONMENT: "development",
            REGISTRATION: "open",
            MAIL_DOMAIN: "mailbot.test",
            ADMIN_TOKEN: "test-admin-token-0123456789",
            INBOUND_SECRET: "test-inbound-secret",
            BOUNCE_SECRET: "test-bounce-secret",
            FEEDBACK_LOOP_SOURCES: "fbl.example-isp.net",
            // The audit chain's key (the development fallback would do, but tests run the real path).
            AUDIT_HMAC_KEY: "test-audit-hmac-key-0123456789abcdef",
            TRUSTED_AUTHSERV_IDS: "mx.cloudflare.net",
            // Generous limits so suites can run fast; the limit tests set their own tier.
            TIER_LIMITS: JSON.stringify({
              sandbox: { requests_per_minute: 100000, burst: 100000 },
              tight: { requests_per_minute: 5, burst: 3, sends_per_inbox_per_day: 10, max_inboxes: 2 },
            }),
            REGISTRATIONS_PER_HOUR: "0",
            // Webhooks: the receiver of test/global/webhook-receiver.ts is on 127.0.0.1; retries
            // come after 1 s instead of 30 s…6 h and a hung receiver times out after 1.5 s.
            WEBHOOK_ALLOW_LOCAL: "true",
            WEBHOOK_RETRY_SCHEDULE: "0,1,1,1,1,1",
            WEBHOOK_TIMEOUT_MS: "1500",
            WEBHOOK_ENCRYPTION_KEY: "test-webhook-encryption-key",
            TEST_WEBHOOK_RECEIVER: `http://127.0.0.1:${inject("webhookReceiverPort")}`,
            OUTBOUND_TRANSPORT: "smtp",
            SMTP_HOST: "127.0.0.1",
            SMTP_PORT: String(inject("smtpPort")),
            SMTP_SECURITY: "none",
            SMTP_USERNAME: "mailbot",
            SMTP_PASSWORD: "test-smtp-password",
            // Sender authentication: MAIL_DOMAIN resolves from configuration in development;
            // custom domains resolve through the fake resolver a test installs.
            DKIM_ENCRYPTION_KEY: "test-dkim-encryption-key",
            DKIM_PRIVATE_KEY: dkimPrivateKey,
          },
        },
      })),
    ],
    test: {
      setupFiles: ["./test/setup.ts"],
      // Real services the Worker talks to during tests, on 127.0.0.1 (ports handed over with provide/inject).
      globalSetup: ["./test/global/webhook-receiver.ts", "./test/global/smtp-server.ts"],
      include: ["test/**/*.test.ts"],
      // A hang guard, not a speed check: with two files at a time on a shared 2-core machine, a
      // CPU-heavy test (50 concurrent sends) can pass Vitest's default of 5 s.
      testTimeout: 20_000,
      // Each test file starts a workerd that loads the Worker's whole module graph; pre-bundled
      // dependencies are a few modules instead of hundreds (setup of a file: ~4.9 s -> ~2.8 s here).
      deps: {
        optimizer: {
          ssr: {
            enabled: true,
            include: [
              "@hono/zod-openapi",
              "@hono/swagger-ui",
              "hono",
              "hono/body-limit",
              "hono/http-exception",
              "zod",
              "drizzle-orm",
              "drizzle-orm/batch",
              "drizzle-orm/d1",
              "drizzle-orm/sqlite-core",
              "@modelcontextprotocol/sdk/types.js",
              "@modelcontextprotocol/sdk/server/index.js",
              "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js",
              "@modelcontextprotocol/sdk/client/index.js",
              "@modelcontextprotocol/sdk/client/streamableHttp.js",
              "postal-mime",
            ],
          },
        },
      },
      // Vitest's default is one file at a time on a 2-core machine (cores - 1). Many files mostly
      // wait (webhook retries, queue batches, long polls), so two at a time at least.
      maxWorkers: Math.max(2, availableParallelism() - 1),
    },
  };
});
