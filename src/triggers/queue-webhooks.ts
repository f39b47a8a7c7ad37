import type { Bindings } from "../env";
import { attemptDispatch } from "../features/webhooks/attempt";
import { WebhookQueueBody } from "../features/webhooks/dispatch";
import { log } from "../lib/log";

/** How long to wait before retrying a message whose processing threw (D1 busy, a bug). */
const ERROR_RETRY_SECONDS = 30;

/**
 * The webhook queue consumer: each message names one dispatch; its attempt runs concurrently
 * with the others of the batch, and each message is acked or retried on its own, so one bad
 * message never fails (or re-sends) the rest. The retry delay is the schedule's, carried by
 * the queue; the state it resumes from is in D1.
 */
export async function consumeWebhooks(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  await Promise.all(
    batch.messages.map(async (message) => {
      const body = WebhookQueueBody.safeParse(message.body);
      if (!body.success) {
        // Not ours to interpret (or from a future version): retrying cannot fix it.
        log.error("invalid webhook queue message", { id: message.id });
        message.ack();
        return;
      }
      try {
        const outcome = await attemptDispatch(env, body.data.dispatch_id);
        if (outcome.done) message.ack();
        else message.retry({ delaySeconds: outcome.retryInSeconds });
      } catch (err) {
        log.error("webhook dispatch failed", { dispatch_id: body.data.dispatch_id, error: String(err) });
        message.retry({ delaySeconds: ERROR_RETRY_SECONDS });
      }
    }),
  );
}
