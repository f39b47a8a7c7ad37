declare namespace Cloudflare {
  interface Env {
    TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
    /** Base URL of the test run's webhook receiver (test/global/webhook-receiver.ts). */
    TEST_WEBHOOK_RECEIVER: string;
  }
  interface GlobalProps {
    mainModule: typeof import("../src/index");
    durableNamespaces: "InboxCounter" | "RateLimiter";
  }
}

declare module "*?raw" {
  const content: string;
  export default content;
}
