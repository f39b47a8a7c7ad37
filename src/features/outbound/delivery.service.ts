import { and, eq, inArray, isNull, lt, or, sql } from "drizzle-orm";
import { config } from "../../config";
import { inboxes, type MessageRow, messages, type RecipientProgress } from "../../db/schema";
import { inList } from "../../db/sql";
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
import { eventStatement, headsOf, publishEvents } from "../events/events.service";
import { receiveMail } from "../inbound/inbound.service";
import { attachmentKey } from "../messages/message-store";
import { withBodies } from "../messages/messages.service";
import { assertReputationAllowsSend, recordSent, sentSignals } from "../reputation/reputation.service";
import { blockedEvent, checkSendPolicy, signOutbound } from "../sender-auth/send-policy";
import { INBOX_AND_ACCOUNT } from "./outbound.service";
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
  // Claimed in one statement (a lease, the attempt counted), read only when the claim fails, to
  // say why: one D1 round trip on the path every message takes instead of two.
  const claimed = await db
    .update(messages)
    .set({
      status: "sending",
      leaseUntil: now + SEND_LEASE_MS,
      attempts: sql`${messages.attempts} + 1`,
      updatedAt: now,
    })
    .where(
      and(
        eq(messages.id, job.message_id),
        eq(messages.accountId, job.account_id),
        eq(messages.direction, "outbound"),
        inArray(messages.status, ["queued", "sending"]),
        or(isNull(messages.leaseUntil), lt(messages.leaseUntil, now)),
      ),
    )
    .returning()
    .get();
  if (!claimed) {
    const current = await db
      .select({ direction: messages.direction, status: messages.status, leaseUntil: messages.leaseUntil })
      .from(messages)
      .where(and(eq(messages.id, job.message_id), eq(messages.accountId, job.account_id)))
      .get();
    if (current?.direction !== "outbound") return { kind: "done", status: "missing" };
    if (TERMINAL.has(current.status)) return { kind: "done", status: current.status };
    // Another consumer holds it (or just finished): look again when its lease would end.
    const wait = Math.max(1, Math.ceil(((current.leaseUntil ?? now) - now) / 1000));
    return { kind: "retry", delaySeconds: Math.min(wait + 5, SEND_LEASE_MS / 1000 + 5), reason: "leased" };
  }
  const message = claimed;
  const attempt = message.attempts;

  // The inbox and its account's status in one read (the send path's statement, built once).
  const both = await INBOX_AND_ACCOUNT.get(db, { inboxId: message.inboxId, accountId: message.accountId });
  // Suspending (or closing) an account must stop its queued mail too, not only new sends. No
  // row at all (nothing deletes inboxes or accounts today) is taken as a closed account.
  if (both?.account.status !== "active") {
    const status = both?.account.status ?? "deleted";
    return fail(
      ctx,
      message,
      status === "suspended" ? "account_suspended" : "account_closed",
      `The account was ${status === "suspended" ? "suspended" : "closed"} before the message left.`,
    );
  }
  const inbox = both.inbox;
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
    // Copies that left (or were refused for good) in an earlier attempt are not sent again.
    const progress: Record<string, RecipientProgress> = { ...(message.deliveryProgress ?? {}) };
    const { internal, external } = await splitRecipients(
      ctx,
      recipients.filter((r) => !progress[r]),
    );
    // VERP with a token: each recipient's copy leaves with its own bounce address (HMAC over
    // message and recipient), so a DSN can speak only for the recipient whose address it reached.
    const mailFromOf = async (rcpt: string) =>
      message.bounceAddresses?.[rcpt] ?? (await bounceAddress(env, inbox.address, message.id, rcpt));
    const at = ctx.now();

    let transport: string | null = null;
    let providerMessageId: string | null = null;
    // The last transient refusal of this attempt: the reason (and wait) of the retry.
    let transient: TransportError | null = null;
    for (const rcpt of internal) {
      try {
        await receiveMail(ctx, {
          readRaw: async () => raw,
          envelopeFrom: await mailFromOf(rcpt),
          envelopeTo: rcpt,
          via: "internal",
          requestId: null,
        });
        progress[rcpt] = { state: "accepted", internal: true, at };
      } catch (err) {
        if (err instanceof ContentRejected) {
          // Refused by the receiving inbox's policy: a content refusal, not a bad address.
          progress[rcpt] = { state: "refused", code: "content_rejected", message: err.message, bounce: false, at };
          continue;
        }
        if (!(err instanceof RecipientRejected)) throw err;
        // No inbox by that name (or one refusing mail): a bad address like an outside 550, so a
        // send and a hard bounce for the reputation. Copies our inboxes accepted count as neither.
        progress[rcpt] = { state: "refused", code: "unknown_recipient", message: err.message, bounce: true, at };
      }
    }
    if (internal.length > 0) await saveProgress(ctx, message.id, progress);
    // A single recipient refused for good by the whole transaction fails with the transport's code.
    let soleRefusal: TransportError | null = null;
    if (external.length > 0) {
      const t = selectTransport(env);
      transport = t.name;
      const envelopeOf = async (recipients: string[], mailFrom: string): Promise<OutboundEnvelope> => ({
        mailFrom,
        recipients,
        raw,
        message: t.name === "cloudflare" ? await withBodies(ctx, message) : message,
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
        t.name === "cloudflare"
          ? [{ recipients: external, mailFrom: inbox.address }]
          : await Promise.all(external.map(async (r) => ({ recipients: [r], mailFrom: await mailFromOf(r) })));
      for (const batch of batches) {
        try {
          const sent = await t.send(await envelopeOf(batch.recipients, batch.mailFrom));
          for (const r of sent.accepted) progress[r] = { state: "accepted", at };
          for (const f of sent.rejected) {
            // A transient refusal leaves the recipient pending: it is retried alone later.
            if (!f.permanent) {
              transient = new TransportError(`${f.recipient}: ${f.code} ${f.message}`, false, f.code);
              continue;
            }
            progress[f.recipient] = {
              state: "refused",
              code: f.code,
              message: f.message,
              bounce: f.bounce !== false,
              at,
            };
          }
          providerMessageId ??= sent.providerMessageId;
        } catch (err) {
          if (!(err instanceof TransportError)) throw err;
          if (!err.permanent) {
            // Retried later for these recipients only; the others' copies stand.
            transient = err;
            continue;
          }
          // A bounce only when the transport says the recipient's mailbox refused it and one
          // recipient was tried: a refusal of the whole transaction names nobody else.
          const bounce = err.bounce && batch.recipients.length === 1;
          for (const recipient of batch.recipients) {
            progress[recipient] = { state: "refused", code: err.code, message: err.message, bounce, at };
          }
          if (recipients.length === 1) soleRefusal = err;
        }
        // One small write per transaction: a crash after this point never sends these copies again.
        await saveProgress(ctx, message.id, progress);
      }
    }

    const pending = recipients.filter((r) => !progress[r]);
    if (pending.length > 0) {
      const reason = transient ? `${transient.code}: ${transient.message}` : "not tried";
      if (attempt < MAX_SEND_ATTEMPTS) {
        return await defer(ctx, message, reason, transient?.retryAfterSeconds, pending, recipients.length);
      }
      // Out of retries: the recipients still refused transiently fail, by name.
      for (const r of pending) progress[r] = { state: "failed", code: "retries_exhausted", message: reason, at };
      await saveProgress(ctx, message.id, progress);
    }
    return await finish(ctx, message, recipients, progress, { transport, providerMessageId, soleRefusal });
  } catch (err) {
    if (err instanceof SendBlocked) {
      return fail(ctx, message, "send_blocked", err.message, "blocked", err.details);
    }
    const permanent = err instanceof TransportError && err.permanent;
    const reason = err instanceof TransportError ? `${err.code}: ${err.message}` : String(err).slice(0, 500);
    // What this attempt (and earlier ones) already delivered is in D1, whatever broke here.
    const progress = (await progressOf(ctx, message.id)) ?? message.deliveryProgress ?? {};
    const recipients = [...new Set([...message.to, ...message.cc, ...message.bcc])];
    const pending = recipients.filter((r) => !progress[r]);
    if (permanent || attempt >= MAX_SEND_ATTEMPTS) {
      const code = permanent ? "permanent_failure" : "retries_exhausted";
      // Copies already left: the message is sent to them, and the rest fail by name.
      if (pending.length < recipients.length && Object.values(progress).some((p) => p.state === "accepted")) {
        for (const r of pending) progress[r] = { state: "failed", code, message: reason, at: ctx.now() };
        await saveProgress(ctx, message.id, progress);
        return finish(ctx, message, recipients, progress, {
          transport: null,
          providerMessageId: null,
          soleRefusal: null,
        });
      }
      return fail(ctx, message, code, reason);
    }
    return defer(
      ctx,
      message,
      reason,
      err instanceof TransportError ? err.retryAfterSeconds : undefined,
      pending,
      recipients.length,
    );
  }
}

/** Records where each recipient's copy stands, as soon as a transaction ends (we hold the lease). */
async function saveProgress(
  ctx: ServiceContext,
  messageId: string,
  progress: Record<string, RecipientProgress>,
): Promise<void> {
  await ctx.db
    .update(messages)
    // Each saved step renews the lease: a send to many slow recipients must not outlive it and be
    // claimed by another consumer while copies are in flight. Wall clock on purpose: the job's
    // context clock is fixed at its start.
    .set({ deliveryProgress: progress, leaseUntil: Date.now() + SEND_LEASE_MS })
    .where(and(eq(messages.id, messageId), eq(messages.accountId, ctx.accountId), eq(messages.status, "sending")));
}

async function progressOf(ctx: ServiceContext, messageId: string): Promise<Record<string, RecipientProgress> | null> {
  const row = await ctx.db
    .select({ progress: messages.deliveryProgress })
    .from(messages)
    .where(and(eq(messages.id, messageId), eq(messages.accountId, ctx.accountId)))
    .get()
    .catch(() => undefined);
  return row?.progress ? { ...row.progress } : null;
}

/**
 * Some recipients are still pending after a transient failure: the message goes back to
 * `queued` (with the pending recipients named in `last_error` and the audit) and the queue
 * retries it with backoff; the next attempt sends to those recipients only.
 */
async function defer(
  ctx: ServiceContext,
  message: MessageRow,
  error: string,
  retryAfterSeconds: number | undefined,
  pending: string[],
  total: number,
): Promise<DeliveryOutcome> {
  const attempt = message.attempts;
  const delaySeconds = backoffSeconds(attempt, retryAfterSeconds);
  const reason =
    pending.length < total ? `${error} (pending: ${pending.join(", ")})`.slice(0, 1000) : error.slice(0, 1000);
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
        metadata: {
          attempt,
          error: reason,
          retry_in_seconds: delaySeconds,
          pending_recipients: pending,
          done_recipients: total - pending.length,
        },
      },
    ],
  );
  return { kind: "retry", delaySeconds, reason };
}

/**
 * Every recipient has an outcome: `sent` when at least one copy was accepted (refused and
 * failed recipients named in last_error, event and audit), `failed` when none was; then the
 * reputation is fed with the whole message's sends and bounces.
 */
async function finish(
  ctx: ServiceContext,
  message: MessageRow,
  recipients: string[],
  progress: Record<string, RecipientProgress>,
  opts: { transport: string | null; providerMessageId: string | null; soleRefusal: TransportError | null },
): Promise<DeliveryOutcome> {
  const accepted = recipients.filter((r) => progress[r]?.state === "accepted");
  const rejected: RecipientFailure[] = recipients.flatMap((recipient) => {
    const p = progress[recipient];
    if (!p || p.state === "accepted") return [];
    return [
      {
        recipient,
        code: p.code ?? "refused",
        message: p.message ?? "",
        permanent: p.state === "refused",
        // Retries running out is the path's failure, never the recipient's bounce.
        bounce: p.state === "refused" && p.bounce !== false,
      },
    ];
  });
  if (accepted.length === 0) {
    const reasons = rejected.map((r) => `${r.recipient}: ${r.code} ${r.message}`).join("; ");
    const outcome = opts.soleRefusal
      ? await fail(ctx, message, opts.soleRefusal.code, opts.soleRefusal.message)
      : rejected.every((r) => !r.permanent)
        ? await fail(ctx, message, "retries_exhausted", reasons.slice(0, 1000))
        : await fail(ctx, message, "all_recipients_refused", `Every recipient was refused. ${reasons}`.slice(0, 1000));
    await recordTransportRefusals(ctx, message, rejected, []);
    return outcome;
  }
  const internal = accepted.filter((r) => progress[r]?.internal).length;
  await markSent(ctx, message, {
    accepted,
    rejected,
    providerMessageId: opts.providerMessageId,
    internal,
    transport: opts.transport,
  });
  // Copies delivered to our own inboxes are not sends for the inbox's reputation.
  await recordTransportRefusals(
    ctx,
    message,
    rejected,
    accepted.filter((r) => !progress[r]?.internal),
  );
  return { kind: "done", status: "sent" };
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
        .where(inList(inboxes.address, recipients.map(canonical)))
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
  const results = await commitWithAudit(
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
  await publishEvents(ctx.env, [event.id], headsOf(results));
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
