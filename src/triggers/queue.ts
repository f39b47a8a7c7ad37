import type { Bindings } from "../env";
import { deadLettered, deliverOutbound } from "../features/outbound/delivery.service";
import { attemptDispatch } from "../features/webhooks/attempt";
import { track } from "../lib/background";
import { systemContext } from "../lib/context";
import { OutboundJob, QUEUES, WebhookJob } from "../lib/jobs";
import { log } from "../lib/log";

/**
 * The `queue()` trigger. Every message is validated (a queue is a trust boundary too), handled
 * on its own and acknowledged or retried on its own, so one bad message never fails the batch.
 */
export function handleQueue(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  return track(consume(batch, env));
}

async function consume(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  if (batch.queue.startsWith(QUEUES.webhooks)) return consumeWebhooks(batch, env);
  if (batch.queue === QUEUES.outbound) return consumeOutbound(batch, env);
  if (batch.queue === QUEUES.outboundDeadLetters) return consumeOutboundDeadLetters(batch, env);
  // No consumer is registered for this queue: keep the messages (retry later, then the
  // dead-letter queue) rather than acknowledge and lose them.
  log.error("no consumer for queue", { queue: batch.queue, count: batch.messages.length });
  batch.retryAll({ delaySeconds: 300 });
}

/** A few sends at a time: SMTP mostly waits on the relay, and an invocation may hold 6 sockets. */
const CONCURRENT_SENDS = 5;
/** How long to wait before retrying a webhook message whose processing threw (D1 busy, a bug). */
const WEBHOOK_ERROR_RETRY_SECONDS = 30;

/**
 * The outbound queue: exceptions (D1 or R2 unavailable) retry with backoff; after the queue's
 * max_retries the message lands in the dead-letter queue, whose consumer marks it failed.
 */
async function consumeOutbound(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  const queue = [...batch.messages];
  const lane = async () => {
    for (let m = queue.shift(); m; m = queue.shift()) await sendOne(m, env);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT_SENDS, queue.length) }, lane));
}

async function sendOne(m: Message<unknown>, env: Bindings): Promise<void> {
  const job = OutboundJob.safeParse(m.body);
  if (!job.success) {
    log.error("invalid outbound queue message dropped", { id: m.id, issues: job.error.issues.length });
    m.ack();
    return;
  }
  try {
    const outcome = await deliverOutbound(systemContext(env, { requestId: m.id }), job.data);
    if (outcome.kind === "retry") m.retry({ delaySeconds: outcome.delaySeconds });
    else m.ack();
  } catch (err) {
    log.error("outbound delivery crashed", { message_id: job.data.message_id, error: String(err) });
    m.retry({ delaySeconds: Math.min(30 * 2 ** Math.max(0, m.attempts - 1), 3600) });
  }
}

/** The dead-letter queue: what the outbound queue gave up on becomes `failed`, visibly. */
async function consumeOutboundDeadLetters(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  for (const m of batch.messages) {
    const job = OutboundJob.safeParse(m.body);
    try {
      if (job.success) await deadLettered(systemContext(env, { requestId: m.id }), job.data);
      m.ack();
    } catch (err) {
      log.error("dead letter handling failed", { id: m.id, error: String(err) });
      m.retry({ delaySeconds: 300 });
    }
  }
}

/**
 * The webhook queue: each message names one dispatch; attempts run concurrently. The retry delay
 * is the schedule's, carried by the queue; the state it resumes from is in D1.
 */
async function consumeWebhooks(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  await Promise.all(
    batch.messages.map(async (message) => {
      const job = WebhookJob.safeParse(message.body);
      if (!job.success) {
        // Not ours to interpret (or from a future version): retrying cannot fix it.
        log.error("invalid webhook queue message", { id: message.id });
        message.ack();
        return;
      }
      try {
        const outcome = await attemptDispatch(systemContext(env, { requestId: message.id }), job.data.dispatch_id);
        if (outcome.done) message.ack();
        else message.retry({ delaySeconds: outcome.retryInSeconds });
      } catch (err) {
        log.error("webhook dispatch failed", { dispatch_id: job.data.dispatch_id, error: String(err) });
        message.retry({ delaySeconds: WEBHOOK_ERROR_RETRY_SECONDS });
      }
    }),
  );
}
