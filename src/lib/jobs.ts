import { z } from "zod";

/**
 * Queue message bodies: the one contract between the features that enqueue work and the queue
 * trigger (src/triggers/queue.ts) that runs it. Queues carry ids, never payloads (128 KB limit),
 * and each body is versioned so a deploy can change it without misreading old messages.
 */

/** One outbound message to deliver (the `mailbot-outbound` queue and its dead-letter queue). */
export const OutboundJob = z.object({
  v: z.literal(1),
  message_id: z.string().regex(/^msg_[0-9a-z]{26}$/),
  account_id: z.string().regex(/^acct_[0-9a-z]{26}$/),
});
export type OutboundJob = z.infer<typeof OutboundJob>;

/** One webhook dispatch to attempt (the `mailbot-webhooks` queue). */
export const WebhookJob = z.object({ v: z.literal(1), dispatch_id: z.string().regex(/^dsp_[0-9a-z]{26}$/) });
export type WebhookJob = z.infer<typeof WebhookJob>;

/** Queue names as wrangler.toml declares them (a renamed queue must be renamed here too). */
export const QUEUES = {
  outbound: "mailbot-outbound",
  outboundDeadLetters: "mailbot-outbound-dlq",
  webhooks: "mailbot-webhooks",
} as const;
