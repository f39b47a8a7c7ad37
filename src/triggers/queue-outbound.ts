import type { Bindings } from "../env";
import { deadLettered, deliverOutbound, OutboundJob } from "../features/outbound/delivery.service";
import { log } from "../lib/log";

/**
 * The outbound queue's consumer: one message at a time, each acknowledged or retried on its own,
 * so one bad message never fails the batch. Exceptions (D1 or R2 unavailable) retry with backoff;
 * after the queue's max_retries the message lands in the dead-letter queue, whose consumer
 * (below) marks it failed so the user sees it.
 */
export async function consumeOutbound(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  const queue = [...batch.messages];
  // A few messages at a time: SMTP spends most of its time waiting on the relay, and a Worker
  // may hold at most 6 open sockets per invocation.
  const lane = async () => {
    for (let m = queue.shift(); m; m = queue.shift()) await consumeOne(m, env);
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENT_SENDS, queue.length) }, lane));
}

const CONCURRENT_SENDS = 5;

async function consumeOne(m: Message<unknown>, env: Bindings): Promise<void> {
  const job = OutboundJob.safeParse(m.body);
  if (!job.success) {
    log.error("invalid outbound queue message dropped", { id: m.id, issues: job.error.issues.length });
    m.ack();
    return;
  }
  try {
    const outcome = await deliverOutbound(env, job.data);
    if (outcome.kind === "retry") m.retry({ delaySeconds: outcome.delaySeconds });
    else m.ack();
  } catch (err) {
    log.error("outbound delivery crashed", { message_id: job.data.message_id, error: String(err) });
    m.retry({ delaySeconds: Math.min(30 * 2 ** Math.max(0, m.attempts - 1), 3600) });
  }
}

/** The dead-letter queue's consumer: what the outbound queue gave up on becomes `failed`. */
export async function consumeOutboundDeadLetters(batch: MessageBatch<unknown>, env: Bindings): Promise<void> {
  for (const m of batch.messages) {
    const job = OutboundJob.safeParse(m.body);
    try {
      if (job.success) await deadLettered(env, job.data);
      m.ack();
    } catch (err) {
      log.error("dead letter handling failed", { id: m.id, error: String(err) });
      m.retry({ delaySeconds: 300 });
    }
  }
}
