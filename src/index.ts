import { app } from "./app";
import { createDb } from "./db/client";
import type { Bindings } from "./env";
import { purgeExpired } from "./features/idempotency/idempotency.service";
import { purgeRelaySignatures } from "./features/inbound/relay-auth";
import { requeueStale } from "./features/outbound/outbound.service";
import { reapplyPending } from "./features/reputation/reputation.service";
import { sweepSendFingerprints } from "./features/sender-auth/send-policy";
import { sweepWebhooks } from "./features/webhooks/dispatch";
import { log } from "./lib/log";
import { handleEmail } from "./triggers/email";
import { consumeOutbound, consumeOutboundDeadLetters } from "./triggers/queue-outbound";
import { consumeWebhooks } from "./triggers/queue-webhooks";

/** Queue names as wrangler.toml declares them (a renamed queue must be renamed here too). */
const OUTBOUND_QUEUE = "mailbot-outbound";

export { InboxCounter } from "./durable-objects/inbox-counter";
export { RateLimiter } from "./durable-objects/rate-limiter";

export default {
  fetch: app.fetch,

  async email(message, env) {
    await handleEmail(message, env);
  },

  async queue(batch, env) {
    if (batch.queue.startsWith("mailbot-webhooks")) return consumeWebhooks(batch, env);
    if (batch.queue === OUTBOUND_QUEUE) return consumeOutbound(batch, env);
    if (batch.queue === `${OUTBOUND_QUEUE}-dlq`) return consumeOutboundDeadLetters(batch, env);
    // No consumer is registered yet for this queue: keep the messages (retry later, then the
    // dead-letter queue) rather than acknowledge and lose them.
    log.error("no consumer for queue", { queue: batch.queue, count: batch.messages.length });
    batch.retryAll({ delaySeconds: 300 });
  },

  async scheduled(_controller, env, ctx) {
    const db = createDb(env.DB);
    const now = Date.now();
    ctx.waitUntil(
      Promise.all([
        purgeExpired(db, now),
        purgeRelaySignatures(db, now),
        sweepWebhooks(env, now),
        requeueStale({ db, env }, now),
        reapplyPending(env, now),
        sweepSendFingerprints(db, now),
      ]).then(([idempotency, relay, webhooks, requeued, reputation, fingerprints]) =>
        log.info("scheduled sweep", {
          idempotency_keys: idempotency,
          relay_signatures: relay,
          // Events whose fan-out was missed, dispatches whose queue message was lost.
          webhook_events_swept: webhooks.events,
          webhook_dispatches_requeued: webhooks.dispatches,
          outbound_requeued: requeued,
          // Reputation signals whose counter call had failed, applied now.
          reputation_signals_reapplied: reputation,
          send_fingerprints_swept: fingerprints,
        }),
      ),
    );
  },
} satisfies ExportedHandler<Bindings>;
