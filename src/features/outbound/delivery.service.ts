import { and, eq, inArray, isNull, lt, or } from "drizzle-orm";
import { config } from "../../config";
import { accounts, type InboxRow, inboxes, type MessageRow, messages } from "../../db/schema";
import { type BaseContext, forAccount, type ServiceContext } from "../../lib/context";
import { AppError, ContentRejected, RecipientRejected, SendBlocked } from "../../lib/errors";
import type { OutboundJob } from "../../lib/jobs";
import { log } from "../../lib/log";
import { canonicalRecipient } from "../../mail/address";
import type { ReportFinding } from "../../mail/dsn-arf";
import { normalizeMessageId } from "../../mail/parse";
import { commitWithAudit } from "../audit/audit.service";
import { bounceAddress } from "../bounces/bounce-address";
import { recordFindings } from "../bounces/bounces.service";
import { eventStatement, publishEvents } from "../events/events.service";
import { receiveMail } from "../inbound/inbound.service";
import { attachmentKey } from "../messages/message-store";
import { withBodies } from "../messages/messages.service";
import { assertReputationAllowsSend, recordSent, sentSignals } from "../reputation/reputation.service";
import { blockedEvent, checkSendPolicy, signOutbound } from "../sender-auth/send-policy";
import { type OutboundEnvelope, selectTransport, TransportError, type TransportResult } from "./transports";
import type { RecipientFailure } from "./transports/types";

/** Attempts before a message that keeps failing transiently is marked `failed`. */
export const MAX_SEND_ATTEMPTS = 8;
/** How long one consumer holds a message; a redelivery inside it waits instead of sending twice. */
export const SEND_LEASE_MS = 5 * 60_000;

export type DeliveryOutcome =
  | { kind: "done"; status: string }
  | { kind: "retry"; delaySeconds: number; reason: string };

const TERMINAL = new Set(["sent", "delivered", "bounced", "failed", "blocked"]);

/** Backoff before attempt `attempt + 1`: 30 s, 1 min, 2 min, 4 min … capped at 1 h, with ±20 % jitter. */
export function backoffSeconds(attempt: number, hintSeconds?: number): number {
  const base = Math.min(30 * 2 ** Math.max(0, attempt - 1), 3600);
  const jittered = Math.round(base * (0.8 + Math.random() * 0.4));
  return Math.min(Math.max(jittered, hintSeconds ?? 0), 12 * 3600);
}

/**
 * Delivers one queued message: claims it (a lease, so a redelivered queue message never sends
 * twice), hands internal recipients to the inbound pipeline and the rest to the configured
 * transport, then records `sent` / `failed` with event and audit. Transient failures return a
 * retry with backoff; after MAX_SEND_ATTEMPTS the message is `failed`.
 */
export async function deliverOutbound(base: BaseContext, job: OutboundJob): Promise<DeliveryOutcome> {
  const { db, env } = base;
  const now = base.now();
  const ctx = forAccount({ ...base, now: () => now }, job.account_id);
  const current = await db
    .select()
    .from(messages)
    .where(and(eq(messages.id, job.message_id), eq(messages.accountId, job.account_id)))
    .get();
  if (current?.direction !== "outbound") return { kind: "done", status: "missing" };
  if (TERMINAL.has(current.status)) return { kind: "done", status: current.status };

  const claimed = await db
    .update(messages)
    .set({ status: "sending", leaseUntil: now + SEND_LEASE_MS, attempts: current.attempts + 1, updatedAt: now })
    .where(
      and(
        eq(messages.id, current.id),
        inArray(messages.status, ["queued", "sending"]),
        or(isNull(messages.leaseUntil), lt(messages.leaseUntil, now)),
        eq(messages.attempts, current.attempts),
      ),
    )
    .returning()
    .get();
  if (!claimed) {
    // Another consumer holds it (or just finished): look again when its lease would end.
    const wait = Math.max(1, Math.ceil(((current.leaseUntil ?? now) - now) / 1000));
    return { kind: "retry", delaySeconds: Math.min(wait + 5, SEND_LEASE_MS / 1000 + 5), reason: "leased" };
  }
  const message = claimed;
  const attempt = message.attempts;

  const inbox = (await db.select().from(inboxes).where(eq(inboxes.id, message.inboxId)).get()) as InboxRow;
  // Suspending (or closing) an account must stop its queued mail too, not only new sends.
  const account = await db
    .select({ status: accounts.status })
    .from(accounts)
    .where(eq(accounts.id, message.accountId))
    .get();
  if (account?.status !== "active") {
    const status = account?.status ?? "deleted";
    return fail(
      ctx,
      message,
      status === "suspended" ? "account_suspended" : "account_closed",
      `The account was ${status === "suspended" ? "suspended" : "closed"} before the message left.`,
    );
  }
  if (inbox.status !== "active") {
    return fail(
      ctx,
      message,
      "inbox_disabled",
      `The inbox was disabled (${inbox.disabledReason}) before the message left.`,
    );
  }
  // Queued mail of an inbox its counter has disabled (D1 may not show it yet), or of an account
  // over its thresholds, does not leave either.
  try {
    await assertReputationAllowsSend(ctx, inbox.id);
  } catch (err) {
    if (err instanceof AppError && err.kind === "forbidden") return fail(ctx, message, err.code, err.message);
    throw err;
  }

  try {
    const object = await env.MAIL_BUCKET.get(message.rawKey);
    if (!object) return fail(ctx, message, "raw_missing", "The stored message bytes are missing.");
    let raw: Uint8Array = new Uint8Array(await object.arrayBuffer());
    await checkSendPolicy(ctx, {
      inbox,
      from: { address: inbox.address, name: inbox.displayName },
      recipients: [...message.to, ...message.cc, ...message.bcc],
      subject: message.subject ?? "",
      text: message.bodyText,
      html: message.bodyHtml,
      attachments: message.attachments.map((a) => ({
        filename: a.filename ?? "",
        contentType: a.content_type,
        size: a.size,
      })),
      raw,
      stage: "deliver",
    });
    const signed = await signOutbound(ctx, inbox, raw);
    if (signed !== raw) {
      // The raw endpoint serves exactly what left: the signed bytes replace the composed ones.
      await env.MAIL_BUCKET.put(message.rawKey, signed, { httpMetadata: { contentType: "message/rfc822" } });
      raw = signed;
    }

    const recipients = [...new Set([...message.to, ...message.cc, ...message.bcc])];
    const { internal, external } = await splitRecipients(ctx, recipients);
    // VERP with a token: each recipient's copy leaves with its own bounce address (HMAC over
    // message and recipient), so a DSN can speak only for the recipient whose address it reached.
    const mailFromOf = async (rcpt: string) =>
      message.bounceAddresses?.[rcpt] ?? (await bounceAddress(env, inbox.address, message.id, rcpt));

    const result: TransportResult & { internal: number; transport: string | null } = {
      accepted: [],
      rejected: [],
      providerMessageId: null,
      internal: 0,
      transport: null,
    };
    for (const rcpt of internal) {
      try {
        await receiveMail(ctx, {
          readRaw: async () => raw,
          envelopeFrom: await mailFromOf(rcpt),
          envelopeTo: rcpt,
          via: "internal",
          requestId: null,
        });
        result.accepted.push(rcpt);
        result.internal++;
      } catch (err) {
        if (err instanceof ContentRejected) {
          // Refused by the receiving inbox's policy: a content refusal, not a bad address.
          result.rejected.push({
            recipient: rcpt,
            code: "content_rejected",
            message: err.message,
            permanent: true,
            bounce: false,
          });
          continue;
        }
        if (!(err instanceof RecipientRejected)) throw err;
        // No inbox by that name (or one refusing mail): a bad address like an outside 550, so a
        // send and a hard bounce for the reputation. Copies our inboxes accepted count as neither.
        result.rejected.push({ recipient: rcpt, code: "unknown_recipient", message: err.message, permanent: true });
      }
    }
    if (external.length > 0) {
      const transport = selectTransport(env);
      result.transport = transport.name;
      const envelopeOf = async (recipients: string[], mailFrom: string): Promise<OutboundEnvelope> => ({
        mailFrom,
        recipients,
        raw,
        message: transport.name === "cloudflare" ? await withBodies(ctx, message) : message,
        attachment: async (id) => {
          const obj = await env.MAIL_BUCKET.get(attachmentKey(message.accountId, message.inboxId, message.id, id));
          if (!obj) throw new TransportError(`Attachment ${id} is missing`, true, "attachment_missing");
          return new Uint8Array(await obj.arrayBuffer());
        },
      });
      // Cloudflare Email Service owns the envelope (its own bounce handling is the authenticated
      // source): one call for everyone. Every other transport gets one transaction per recipient,
      // each with that recipient's bounce address.
      const batches =
        transport.name === "cloudflare"
          ? [{ recipients: external, mailFrom: inbox.address }]
          : await Promise.all(external.map(async (r) => ({ recipients: [r], mailFrom: await mailFromOf(r) })));
      for (const batch of batches) {
        try {
          const sent = await transport.send(await envelopeOf(batch.recipients, batch.mailFrom));
          result.accepted.push(...sent.accepted);
          result.rejected.push(...sent.rejected);
          result.providerMessageId ??= sent.providerMessageId;
        } catch (err) {
          if (!(err instanceof TransportError)) throw err;
          const nothingLeft = result.accepted.length === 0;
          // Nothing has left yet: a transient failure retries the whole message, a permanent
          // one with nothing delivered anywhere fails it (a bounce only when the transport says
          // the recipient's mailbox refused it, and one recipient was tried: a refusal of the
          // whole transaction names nobody else).
          if (!err.permanent && nothingLeft) throw err;
          const bounce = err.permanent && err.bounce && batch.recipients.length === 1;
          if (err.permanent && nothingLeft && batches.length === 1 && result.internal === 0) {
            const outcome = await fail(ctx, message, err.code, err.message);
            if (bounce) {
              await recordTransportRefusals(
                ctx,
                message,
                batch.recipients.map((recipient) => ({
                  recipient,
                  code: err.code,
                  message: err.message,
                  permanent: true,
                })),
                [],
              );
            }
            return outcome;
          }
          // Copies already left for other recipients: this recipient's failure is recorded (a
          // transient one is not retried alone: the message is not sent twice to the others).
          result.rejected.push(
            ...batch.recipients.map((recipient) => ({
              recipient,
              code: err.code,
              message: err.message,
              permanent: err.permanent,
              bounce,
            })),
          );
        }
      }
    }
    if (result.accepted.length === 0) {
      const reasons = result.rejected.map((r) => `${r.recipient}: ${r.code} ${r.message}`).join("; ");
      const outcome = await fail(
        ctx,
        message,
        "all_recipients_refused",
        `Every recipient was refused. ${reasons}`.slice(0, 1000),
      );
      await recordTransportRefusals(ctx, message, result.rejected, []);
      return outcome;
    }
    await markSent(ctx, message, result);
    // Copies delivered to our own inboxes are not sends for the inbox's reputation.
    await recordTransportRefusals(
      ctx,
      message,
      result.rejected,
      result.accepted.filter((r) => !internal.includes(r)),
    );
    return { kind: "done", status: "sent" };
  } catch (err) {
    if (err instanceof SendBlocked) {
      return fail(ctx, message, "send_blocked", err.message, "blocked", err.details);
    }
    const permanent = err instanceof TransportError && err.permanent;
    const reason = err instanceof TransportError ? `${err.code}: ${err.message}` : String(err).slice(0, 500);
    if (permanent || attempt >= MAX_SEND_ATTEMPTS) {
      return fail(ctx, message, permanent ? "permanent_failure" : "retries_exhausted", reason);
    }
    const delaySeconds = backoffSeconds(attempt, err instanceof TransportError ? err.retryAfterSeconds : undefined);
    await ctx.db
      .update(messages)
      .set({ status: "queued", leaseUntil: null, lastError: reason, updatedAt: ctx.now() })
      .where(and(eq(messages.id, message.id), eq(messages.status, "sending")));
    await commitWithAudit(
      ctx,
      [],
      [
        {
          action: "message.send_deferred",
          target: { type: "message", id: message.id },
          inboxId: message.inboxId,
          metadata: { attempt, error: reason, retry_in_seconds: delaySeconds },
        },
      ],
    );
    return { kind: "retry", delaySeconds, reason };
  }
}

/**
 * Feeds a finished attempt to the inbox's reputation: every recipient that was tried counts as a
 * send (accepted, or refused by the receiving side), and each refusal of the receiving side is a
 * bounce (hard when permanent) through the same path as a DSN: message marked, event, audit,
 * suppression, counter. Refusals that are our configuration's doing (`bounce: false`) count as
 * neither. The send itself is already recorded, so a failure here is logged, never retried.
 */
async function recordTransportRefusals(
  ctx: ServiceContext,
  message: MessageRow,
  rejected: RecipientFailure[],
  accepted: string[],
): Promise<void> {
  const bounced = rejected.filter((r) => r.bounce !== false);
  const attempted = [...accepted, ...bounced.map((r) => r.recipient)];
  try {
    if (bounced.length === 0) return await recordSent(ctx, message.inboxId, message.id, attempted);
    const findings: ReportFinding[] = bounced.map((r) => ({
      kind: "bounce",
      bounceType: r.permanent ? "hard" : "soft",
      recipient: r.recipient,
      statusCode: /^[245]\.\d{1,3}\.\d{1,3}$/.test(r.code)
        ? r.code
        : (/\b([245]\.\d{1,3}\.\d{1,3})\b/.exec(r.message)?.[1] ?? null),
      diagnostic: `${r.code} ${r.message}`.slice(0, 1000),
      feedbackType: null,
    }));
    await recordFindings(ctx, message.id, findings, { source: "transport", carrierId: message.id }, [
      ...sentSignals(message.id, attempted),
    ]);
  } catch (err) {
    log.error("bounce recording failed", { message_id: message.id, error: String(err) });
  }
}

/** Splits recipients into this deployment's inboxes (delivered internally) and the outside world. */
async function splitRecipients(
  ctx: ServiceContext,
  recipients: string[],
): Promise<{ internal: string[]; external: string[] }> {
  const owned = new Set(
    (
      await ctx.db
        .select({ address: inboxes.address })
        .from(inboxes)
        .where(inArray(inboxes.address, recipients.map(canonical)))
        .all()
    ).map((r) => r.address),
  );
  const internal = recipients.filter((r) => owned.has(canonical(r)));
  const shared = `@${config(ctx.env).mailDomain.toLowerCase()}`;
  // An address on the shared domain that no inbox owns is still ours: deliver it internally so
  // it is refused as unknown, instead of sending it out to our own MX.
  const unknownOwn = recipients.filter((r) => !owned.has(canonical(r)) && r.endsWith(shared));
  return {
    internal: [...internal, ...unknownOwn],
    external: recipients.filter((r) => !internal.includes(r) && !unknownOwn.includes(r)),
  };
}

function canonical(address: string): string {
  return canonicalRecipient(address).address;
}

async function markSent(
  ctx: ServiceContext,
  message: MessageRow,
  result: TransportResult & { internal: number; transport: string | null },
): Promise<void> {
  const now = ctx.now();
  // Cloudflare Email Service writes its own Message-ID: replies will reference that one.
  const providerId = result.transport === "cloudflare" ? normalizeMessageId(result.providerMessageId) : null;
  const rejected = result.rejected.map((r) => `${r.recipient}: ${r.code} ${r.message}`).join("; ");
  const event = eventStatement(
    ctx,
    "message.sent",
    { inboxId: message.inboxId, threadId: message.threadId, messageId: message.id },
    {
      message_id: message.id,
      inbox_id: message.inboxId,
      thread_id: message.threadId,
      from_address: message.fromAddress,
      to: message.to,
      cc: message.cc,
      subject: message.subject,
      rfc_message_id: providerId ?? message.rfcMessageId,
      accepted: result.accepted,
      rejected: result.rejected.map((r) => ({ recipient: r.recipient, code: r.code, message: r.message })),
    },
  );
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(messages)
        .set({
          status: "sent",
          sentAt: now,
          leaseUntil: null,
          lastError: rejected ? `Some recipients were refused: ${rejected}`.slice(0, 1000) : null,
          providerMessageId: result.providerMessageId,
          ...(providerId ? { rfcMessageId: providerId } : {}),
          updatedAt: now,
        })
        .where(and(eq(messages.id, message.id), eq(messages.status, "sending"))),
      event.statement,
    ],
    [
      {
        action: "message.sent",
        target: { type: "message", id: message.id },
        inboxId: message.inboxId,
        metadata: {
          attempt: message.attempts,
          transport: result.transport,
          internal_recipients: result.internal,
          accepted: result.accepted.length,
          rejected: result.rejected,
          provider_message_id: result.providerMessageId,
          event_id: event.id,
        },
      },
    ],
  );
  await publishEvents(ctx.env, [event.id]);
}

async function fail(
  ctx: ServiceContext,
  message: MessageRow,
  code: string,
  reason: string,
  status: "failed" | "blocked" = "failed",
  details?: unknown,
): Promise<DeliveryOutcome> {
  const now = ctx.now();
  const blocked =
    status === "blocked"
      ? blockedEvent(ctx, {
          inboxId: message.inboxId,
          messageId: message.id,
          threadId: message.threadId,
          fromAddress: message.fromAddress ?? "",
          to: message.to,
          subject: message.subject,
          details,
          stage: "deliver",
        })
      : null;
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(messages)
        .set({ status, leaseUntil: null, lastError: `${code}: ${reason}`.slice(0, 1000), updatedAt: now })
        .where(and(eq(messages.id, message.id), inArray(messages.status, ["queued", "sending"]))),
      ...(blocked ? [blocked.statement] : []),
    ],
    [
      {
        action: status === "blocked" ? "message.send_blocked" : "message.failed",
        target: { type: "message", id: message.id },
        inboxId: message.inboxId,
        metadata: {
          attempt: message.attempts,
          code,
          reason: reason.slice(0, 1000),
          ...(blocked ? { details: details ?? null, event_id: blocked.id } : {}),
        },
      },
    ],
  );
  if (blocked) await publishEvents(ctx.env, [blocked.id]);
  return { kind: "done", status };
}

/** A message the queue gave up on (dead-letter queue): failed, visibly, unless it already finished. */
export async function deadLettered(base: BaseContext, job: OutboundJob): Promise<void> {
  const { db } = base;
  const row = await db
    .select()
    .from(messages)
    .where(and(eq(messages.id, job.message_id), eq(messages.accountId, job.account_id)))
    .get();
  if (!row || TERMINAL.has(row.status)) return;
  const ctx = forAccount(base, job.account_id);
  await fail(
    ctx,
    row,
    "dead_lettered",
    `The queue gave up after repeated errors. Last error: ${row.lastError ?? "none"}`,
  );
}
