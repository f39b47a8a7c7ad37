declare namespace Cloudflare {
  interface Env {
    TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
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
