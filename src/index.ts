import { app } from "./app";
import type { Bindings } from "./env";
import { handleEmail } from "./triggers/email";
import { handleQueue } from "./triggers/queue";
import { runSweeps } from "./triggers/scheduled";

export { AuditAnchor } from "./durable-objects/audit-anchor";
export { EventHub } from "./durable-objects/event-hub";
export { InboxCounter } from "./durable-objects/inbox-counter";
export { RateLimiter } from "./durable-objects/rate-limiter";

/** The Worker: every trigger is an adapter in src/triggers (HTTP is the Hono app of src/app.ts). */
export default {
  fetch: app.fetch,
  email: (message, env) => handleEmail(message, env),
  queue: (batch, env) => handleQueue(batch, env),
  scheduled: async (_controller, env, ctx) => {
    ctx.waitUntil(runSweeps(env, Date.now()).then(() => undefined));
  },
} satisfies ExportedHandler<Bindings>;
