import { and, desc, eq, gte, lt, sql } from "drizzle-orm";
import { config } from "../../config";
import { once } from "../../db/client";
import { insertRow, type Statement } from "../../db/compiled";
import {
  type AccountRow,
  accounts,
  attachments as attachmentsTable,
  type DroppedRecipient,
  type InboxRow,
  inboxes,
  type MessageRow,
  messages,
} from "../../db/schema";
import type { SlotDecision } from "../../durable-objects/rate-limiter";
import { rateLimiter } from "../../durable-objects/rate-limiter.client";
import type { BaseContext, ServiceContext } from "../../lib/context";
import { fromBase64, toHex } from "../../lib/crypto";
import {
  AppError,
  Forbidden,
  InternalError,
  LoopSuspected,
  MessageTooLarge,
  NotFound,
  RateLimited,
  Unprocessable,
  ValidationFailed,
} from "../../lib/errors";
import { newId } from "../../lib/ids";
import type { OutboundJob } from "../../lib/jobs";
import { log } from "../../lib/log";
import { NEW_ACCOUNT_SEND_LIMIT, tierLimits } from "../../lib/tiers";
import { DAY_MS, iso } from "../../lib/time";
import { canonicalRecipient, stripControls } from "../../mail/address";
import { type ComposeAttachment, composeMessage, type MailAddress } from "../../mail/compose";
import { htmlToText } from "../../mail/html-text";
import { type AuditEntry, commitWithAudit } from "../audit/audit.service";
import { bounceAddresses } from "../bounces/bounce-address";
import { publishEvents } from "../events/events.service";
import { attachmentKey, bodyKey, inlineOrR2, newMessageRow, rawKey } from "../messages/message-store";
import { assertInboxAllowed, withBodies } from "../messages/messages.service";
import { assertReputationAllowsSend } from "../reputation/reputation.service";
import { forgetKnownSenders, policyOf } from "../screening/screening.service";
import { blockedEvent, checkSendPolicy } from "../sender-auth/send-policy";
import { type Screened, screenRecipients } from "../suppressions/suppressions.service";
import { PARTICIPANT_LIMIT, threadStatement } from "../threads/threading";
import {
  type AttachmentInput,
  type ForwardInput,
  MAX_OUTBOUND_BYTES,
  MAX_RECIPIENTS,
  parseAddress,
  type ReplyToMessageInput,
  type SendMessageInput,
} from "./outbound.schemas";
import { transportName } from "./transports";

/** A message to send, whatever verb (send, reply, forward) produced it. */
interface Draft {
  kind: "send" | "reply" | "forward";
  to: MailAddress[];
  cc: MailAddress[];
  bcc: MailAddress[];
  replyTo: MailAddress | null;
  subject: string;
  text: string | null;
  html: string | null;
  attachments: ComposeAttachment[];
  headers: [string, string][];
  labels: string[];
  inReplyTo: string | null;
  references: string[];
  /** The thread it continues (replies, forwards); null starts a new one. */
  threadId: string | null;
  parentId: string | null;
  /** Recipients left out at acceptance (suppressed), with why. */
  dropped?: DroppedRecipient[];
  /** Who wrote it: an agent's mail carries `Auto-Submitted` (RFC 3834), a person's does not. */
  writtenBy?: "agent" | "human" | undefined;
  /** The parent's automatic marker (replies): answering automatic mail is `auto-replied`. */
  parentAutomatic?: string | null;
}

/** `POST /v1/inboxes/:inbox_id/messages`: accepts a new message for sending (status `queued`). */
export async function sendMessage(ctx: ServiceContext, inboxId: string, input: SendMessageInput): Promise<MessageRow> {
  const draft: Draft = {
    kind: "send",
    to: input.to,
    cc: input.cc,
    bcc: input.bcc,
    replyTo: input.reply_to ?? null,
    subject: input.subject,
    text: input.body_text ?? null,
    html: input.body_html ?? null,
    attachments: decodeAttachments(input.attachments),
    headers: Object.entries(input.headers ?? {}),
    labels: input.labels ?? [],
    inReplyTo: null,
    references: [],
    threadId: null,
    parentId: null,
    writtenBy: input.written_by,
  };
  // The inbox and the recipients' suppressions are independent reads: one wait instead of two
  // (in production each is a round trip to the primary). Only under the recipient cap, which is
  // what bounds the suppression query; over it, acceptDraft refuses before any query over them.
  const screening =
    recipientsOf(draft).length <= MAX_RECIPIENTS
      ? screenRecipients(ctx, { to: draft.to, cc: draft.cc, bcc: draft.bcc })
      : undefined;
  // Settled, not Promise.all: the inbox's answer (a 404 for an inbox the caller may not use)
  // comes first even when the suppression read fails; that failure surfaces in acceptDraft.
  const [loaded] = await Promise.allSettled([loadInbox(ctx, inboxId), screening]);
  if (loaded.status === "rejected") throw loaded.reason;
  const { inbox, account } = loaded.value;
  return acceptDraft(ctx, inbox, account, draft, screening);
}

/** `POST /v1/messages/:id/reply`: answers a message in its thread (`In-Reply-To`, `References`, one `Re:`). */
export async function replyToMessage(
  ctx: ServiceContext,
  messageId: string,
  input: ReplyToMessageInput,
): Promise<MessageRow> {
  const parent = await loadMessage(ctx, messageId);
  const { inbox, account } = await loadInbox(ctx, parent.inboxId);
  const own = canonicalRecipient(inbox.address).address;
  // Addresses taken from an inbound message's headers are the sender's text: each is checked
  // again as a send's input would be, and what does not pass is left out.
  const notOwn = (a: string) => parseAddress(a) !== null && canonicalRecipient(a).address !== own;
  // Replying to mail we sent ourselves (a follow-up) goes to its recipients again.
  const primary =
    parent.direction === "inbound"
      ? [parent.replyTo ?? parent.fromAddress].filter((a): a is string => Boolean(a))
      : parent.to;
  let to = primary.filter(notOwn);
  let cc: string[] = [];
  if (input.reply_all) {
    const others = parent.direction === "inbound" ? [...parent.to, ...parent.cc] : parent.cc;
    cc = others.filter((a) => notOwn(a) && !to.includes(a));
    if (to.length === 0 && cc.length > 0) to = cc.splice(0, 1);
  }
  if (to.length === 0) {
    throw new ValidationFailed(
      [{ path: "message_id", message: "The message has no sender address other than this inbox to reply to" }],
      "There is no one to reply to.",
    );
  }
  const references = [...parent.references, ...(parent.rfcMessageId ? [parent.rfcMessageId] : [])];
  return acceptDraft(ctx, inbox, account, {
    kind: "reply",
    to: unique(to).map((address) => ({ address })),
    cc: unique(cc).map((address) => ({ address })),
    bcc: [],
    replyTo: null,
    subject: replySubject(parent.subject),
    text: input.body_text ?? null,
    html: input.body_html ?? null,
    attachments: decodeAttachments(input.attachments),
    headers: Object.entries(input.headers ?? {}),
    labels: input.labels ?? [],
    inReplyTo: parent.rfcMessageId,
    // RFC 5322 §3.6.4: the parent's References (or its In-Reply-To), then the parent's id; the
    // oldest are dropped past 100 (Cloudflare refuses replies with more).
    references: unique(references.length > 1 ? references : [parent.inReplyTo, ...references].filter(isString)).slice(
      -100,
    ),
    threadId: parent.threadId,
    parentId: parent.id,
    writtenBy: input.written_by,
    parentAutomatic: parent.autoSubmitted,
  });
}

/** `POST /v1/messages/:id/forward`: sends a message on to new recipients, its attachments included. */
export async function forwardMessage(ctx: ServiceContext, messageId: string, input: ForwardInput): Promise<MessageRow> {
  const parent = await loadMessage(ctx, messageId);
  const { inbox, account } = await loadInbox(ctx, parent.inboxId);
  // The stored sizes decide first: a 25 MiB original is refused without loading a byte of it.
  const attachedBytes = parent.attachments.reduce((sum, a) => sum + a.size, 0);
  if (attachedBytes > MAX_OUTBOUND_BYTES) {
    await refuseEarly(
      ctx,
      inbox,
      "forward",
      new MessageTooLarge(
        `The original's attachments are ${attachedBytes} bytes; a message may be at most ${MAX_OUTBOUND_BYTES} bytes (5 MiB).`,
        { limit_bytes: MAX_OUTBOUND_BYTES, size: attachedBytes },
      ),
      { attachments: parent.attachments.length },
    );
  }
  const full = await withBodies(ctx, parent);
  const original = { text: full.bodyText, html: full.bodyHtml };
  const header = [
    "---------- Forwarded message ---------",
    `From: ${parent.fromName ? `${parent.fromName} <${parent.fromAddress}>` : (parent.fromAddress ?? "")}`,
    `Date: ${iso(parent.receivedAt ?? parent.sentAt ?? parent.createdAt)}`,
    `Subject: ${parent.subject ?? ""}`,
    `To: ${parent.to.join(", ")}`,
    ...(parent.cc.length > 0 ? [`Cc: ${parent.cc.join(", ")}`] : []),
  ];
  const text = [
    input.body_text ?? "",
    "",
    ...header,
    "",
    original.text ?? (original.html ? htmlToText(original.html) : ""),
  ].join("\n");
  const html =
    original.html !== null || input.body_html !== undefined
      ? `${input.body_html ?? escapeHtml(input.body_text ?? "").replace(/\n/g, "<br>")}<br><br><div>${header
          .map(escapeHtml)
          .join("<br>")}</div><br>${original.html ?? `<pre>${escapeHtml(original.text ?? "")}</pre>`}`
      : null;
  return acceptDraft(ctx, inbox, account, {
    kind: "forward",
    to: input.to,
    cc: input.cc,
    bcc: [],
    replyTo: null,
    subject: /^\s*(fwd?|fw)\s*:/i.test(parent.subject ?? "")
      ? stripControls(parent.subject as string)
      : `Fwd: ${stripControls(parent.subject ?? "")}`,
    text,
    html,
    attachments: await readAttachments(ctx, parent),
    headers: [],
    labels: input.labels ?? [],
    inReplyTo: null,
    references: parent.rfcMessageId ? [parent.rfcMessageId] : [],
    threadId: parent.threadId,
    parentId: parent.id,
    writtenBy: input.written_by,
  });
}

/** A refusal decided before anything is composed or loaded: audited like the others, then thrown. */
async function refuseEarly(
  ctx: ServiceContext,
  inbox: InboxRow,
  kind: Draft["kind"],
  err: AppError,
  extra: Record<string, unknown>,
): Promise<never> {
  await commitWithAudit(
    ctx,
    [],
    [
      {
        action: "message.send_refused",
        target: { type: "inbox", id: inbox.id },
        inboxId: inbox.id,
        metadata: { reason: err.code, message: err.message, details: err.details ?? null, kind, ...extra },
      },
    ],
  );
  throw err;
}

/**
 * Checks a draft in API.md's order (inbox active, send limit, policy, size), then stores it and
 * queues it. A refusal sends nothing and is audited with its reason; a send-limit slot taken for
 * a request that is refused later, or that fails to commit, is given back.
 */
async function acceptDraft(
  ctx: ServiceContext,
  inbox: InboxRow,
  account: AccountRow,
  given: Draft,
  /** The suppression read of the draft's recipients, when the caller started it already. */
  screening?: Promise<Screened<MailAddress>>,
): Promise<MessageRow> {
  const input = withAutoSubmitted(given);
  // The recipient cap comes before any query over the recipients: it is what bounds them.
  const requested = recipientsOf(input);
  if (requested.length > MAX_RECIPIENTS) {
    const err = new Unprocessable(
      "too_many_recipients",
      `A message may have at most ${MAX_RECIPIENTS} recipients (to, cc and bcc together); this one has ${requested.length}.`,
      { limit: MAX_RECIPIENTS, recipients: requested.length },
    );
    await refuseEarly(ctx, inbox, input.kind, err, { recipients: requested.length });
  }
  // Suppressed recipients (hard bounces, complaints) are left out before the message is composed;
  // when none remain the send is refused, after the inbox check (API.md's order).
  const screened = await (screening ?? screenRecipients(ctx, { to: input.to, cc: input.cc, bcc: input.bcc }));
  const allSuppressed = screened.dropped.length > 0 && screened.remaining === 0;
  const draft: Draft =
    screened.dropped.length > 0 && !allSuppressed ? { ...input, ...screened.kept, dropped: screened.dropped } : input;
  const now = ctx.now();
  const messageId = newId("msg", now);
  const domain = inbox.address.slice(inbox.address.lastIndexOf("@") + 1);
  const rfcMessageId = `<${messageId}@${domain}>`;
  const from: MailAddress = { address: inbox.address, name: inbox.displayName };
  const text = draft.text ?? (draft.html !== null ? htmlToText(draft.html) : null);
  const raw = composeMessage({
    from,
    to: draft.to,
    cc: draft.cc,
    replyTo: draft.replyTo,
    subject: draft.subject,
    text,
    html: draft.html,
    messageId: rfcMessageId,
    date: new Date(now),
    inReplyTo: draft.inReplyTo,
    references: draft.references,
    headers: draft.headers,
    attachments: draft.attachments,
  });
  const recipients = unique([...draft.to, ...draft.cc, ...draft.bcc].map((a) => a.address));
  const refuse = async (err: AppError, extra: Record<string, unknown> = {}): Promise<never> => {
    // Content blocks and suspected loops are events too (`message.blocked`): a watcher must hear of both.
    const blocked =
      err.code === "send_blocked" || err.code === "loop_suspected"
        ? blockedEvent(ctx, {
            inboxId: inbox.id,
            messageId: null,
            threadId: draft.threadId,
            fromAddress: inbox.address,
            to: draft.to.map((a) => a.address),
            subject: draft.subject,
            details: err.details,
            stage: "accept",
          })
        : null;
    if (blocked) extra = { ...extra, event_id: blocked.id };
    await commitWithAudit(ctx, blocked ? [blocked.statement] : [], [
      {
        action: err.code === "send_blocked" ? "message.send_blocked" : "message.send_refused",
        target: { type: "inbox", id: inbox.id },
        inboxId: inbox.id,
        metadata: {
          reason: err.code,
          message: err.message,
          details: err.details ?? null,
          kind: draft.kind,
          recipients: recipients.length,
          size: raw.byteLength,
          ...extra,
        },
      },
    ]);
    if (blocked) await publishEvents(ctx.env, [blocked.id]);
    throw err;
  };

  if (inbox.status !== "active") {
    await refuse(
      new Forbidden("inbox_disabled", `The inbox ${inbox.address} is disabled and cannot send.`, {
        disabled_reason: inbox.disabledReason,
      }),
    );
  }
  if (allSuppressed) {
    await refuse(
      new Unprocessable(
        "recipient_suppressed",
        "Every recipient of this message is suppressed (an earlier hard bounce or complaint). Lift a suppression with DELETE /v1/suppressions/:address.",
        { recipients: screened.dropped },
      ),
    );
  }

  // The send limit first (a caller over it costs no DNS lookup, scoring or counter call); then the
  // content and sender policy, the reputation gate and the loop check, which are independent
  // reads, run at once (one wait instead of three), their refusals still reported in the
  // documented order (policy and size, then reputation, then loops). A slot taken for a send
  // refused later is given back.
  const slots = await takeSendSlots(ctx, inbox, account, messageId);
  if (slots.refused) await refuse(slots.refused);
  const policyInput = {
    inbox,
    from,
    recipients,
    subject: draft.subject,
    text,
    html: draft.html,
    attachments: draft.attachments.map((a) => ({
      filename: a.filename,
      contentType: a.contentType,
      size: a.content.byteLength,
      // Markup attachments are read (their first 256 KiB) for script: the classic harvest file.
      text:
        /html|svg|xml/i.test(a.contentType) || /\.(html?|svg|xhtml|mht)$/i.test(a.filename)
          ? new TextDecoder().decode(a.content.subarray(0, 256 * 1024))
          : null,
    })),
    raw,
    stage: "accept" as const,
  };
  const [policy, reputation, loop] = await Promise.allSettled([
    checkSendPolicy(ctx, policyInput),
    // API.md rule 6: the account's rates over all its inboxes, and the inbox's counter itself (a
    // disable it decided that D1 does not show yet), refuse here, before anything is queued.
    assertReputationAllowsSend(ctx, inbox.id),
    // Rule 7: an automatic reply that would feed a mail loop.
    assertNoLoop(ctx, inbox, draft),
  ]);
  let policyStatements: Statement[] = [];
  try {
    if (policy.status === "rejected") throw policy.reason;
    policyStatements = policy.value.statements;
    if (raw.byteLength > MAX_OUTBOUND_BYTES) {
      throw new MessageTooLarge(
        `The message is ${raw.byteLength} bytes once encoded; the limit is ${MAX_OUTBOUND_BYTES} bytes (5 MiB).`,
        { limit_bytes: MAX_OUTBOUND_BYTES, size: raw.byteLength },
      );
    }
    if (reputation.status === "rejected") throw reputation.reason;
    if (loop.status === "rejected") throw loop.reason;
  } catch (err) {
    await slots.release();
    if (err instanceof AppError) await refuse(err);
    throw err;
  }

  try {
    const row = await storeOutbound(ctx, inbox, draft, {
      messageId,
      rfcMessageId,
      from,
      text,
      raw,
      recipients,
      policyStatements,
    });
    // Its recipients are the inbox's correspondents now (the screener's look-alike check).
    forgetKnownSenders(inbox.id);
    await enqueue(ctx, row);
    return row;
  } catch (err) {
    await slots.release();
    throw err;
  }
}

/** Every recipient address of a draft (to, cc and bcc), once each. */
function recipientsOf(draft: Draft): string[] {
  return unique([...draft.to, ...draft.cc, ...draft.bcc].map((a) => a.address));
}

/** The draft's `Auto-Submitted` value, from its headers (null: written by a person). */
function automaticMarker(draft: Draft): string | null {
  const value = draft.headers.find(([name]) => name.toLowerCase() === "auto-submitted")?.[1];
  const token = value?.trim().toLowerCase().split(/[\s;]/)[0];
  return token && token !== "no" ? token : null;
}

/**
 * Our own outbound mail says it is automatic (RFC 3834) unless the request says a person wrote
 * it, so the other side's agents and autoresponders do not answer it blindly; a reply to mail
 * that is itself automatic is `auto-replied`. A caller's own `Auto-Submitted` header wins.
 */
function withAutoSubmitted(draft: Draft): Draft {
  if (draft.headers.some(([name]) => name.toLowerCase() === "auto-submitted")) return draft;
  if (draft.writtenBy === "human") return draft;
  const value = draft.kind === "reply" && draft.parentAutomatic ? "auto-replied" : "auto-generated";
  return { ...draft, headers: [...draft.headers, ["Auto-Submitted", value]] };
}

/** Automatic replies in one thread over this window count against the inbox's limit. */
const LOOP_WINDOW_MS = 60 * 60 * 1000;
/** An answer within this many seconds of the message it answers is "within seconds". */
const PING_PONG_SECONDS = 60;
/** Quick alternating answers in a row (this reply included) that make a ping-pong. */
const PING_PONG_EXCHANGES = 6;

/**
 * API.md sending rule 7. Only automatic replies are held back (a person's reply is never a
 * loop): more than the inbox's `auto_reply_limit` automatic replies in the thread within an
 * hour, or a ping-pong (the thread's last messages alternate between this inbox and one other
 * address, each answered within seconds) refuse the send with 422 `loop_suspected`.
 */
async function assertNoLoop(ctx: ServiceContext, inbox: InboxRow, draft: Draft): Promise<void> {
  if (draft.kind !== "reply" || !draft.threadId || automaticMarker(draft) === null) return;
  const now = ctx.now();
  const limit = policyOf(inbox).autoReplyLimit;
  const recent = await ctx.db
    .select({
      direction: messages.direction,
      createdAt: messages.createdAt,
      autoSubmitted: messages.autoSubmitted,
      inReplyTo: messages.inReplyTo,
      fromAddress: messages.fromAddress,
      to: messages.to,
    })
    .from(messages)
    .where(
      and(
        eq(messages.threadId, draft.threadId),
        eq(messages.accountId, inbox.accountId),
        eq(messages.inboxId, inbox.id),
        gte(messages.createdAt, now - LOOP_WINDOW_MS),
      ),
    )
    .orderBy(desc(messages.id))
    .limit(200)
    .all();
  const automaticReplies = recent.filter(
    (m) => m.direction === "outbound" && m.autoSubmitted !== null && m.inReplyTo !== null,
  ).length;
  if (automaticReplies >= limit) {
    throw new LoopSuspected(
      `This thread has had ${automaticReplies} automatic replies within the last hour; the inbox's limit is ${limit}. Looks like a mail loop: reply as a person (written_by: "human") or wait.`,
      {
        reason: "loop_suspected",
        loop: "thread_limit",
        thread_id: draft.threadId,
        automatic_replies: automaticReplies,
        limit,
        window_seconds: LOOP_WINDOW_MS / 1000,
      },
    );
  }
  // Ping-pong: walk back from this reply while the thread alternates direction quickly.
  const counterpart = draft.to[0]?.address ?? null;
  let exchanges = 1;
  let later = now;
  let expect: "inbound" | "outbound" = "inbound";
  for (const m of recent.slice(0, PING_PONG_EXCHANGES * 2)) {
    const other = m.direction === "inbound" ? m.fromAddress : (m.to[0] ?? null);
    if (m.direction !== expect || other !== counterpart || later - m.createdAt > PING_PONG_SECONDS * 1000) break;
    exchanges++;
    later = m.createdAt;
    expect = expect === "inbound" ? "outbound" : "inbound";
  }
  if (exchanges >= PING_PONG_EXCHANGES) {
    throw new LoopSuspected(
      `This reply would be the ${exchanges}th answer in a row between ${inbox.address} and ${counterpart}, each within ${PING_PONG_SECONDS} seconds: a ping-pong between two automatic senders.`,
      {
        reason: "loop_suspected",
        loop: "ping_pong",
        thread_id: draft.threadId,
        counterpart,
        exchanges,
        limit: PING_PONG_EXCHANGES,
        answer_within_seconds: PING_PONG_SECONDS,
      },
    );
  }
}

interface Composed {
  messageId: string;
  rfcMessageId: string;
  from: MailAddress;
  text: string | null;
  raw: Uint8Array;
  recipients: string[];
  /** Writes the send policy left for the acceptance batch (the spray fingerprint). */
  policyStatements?: Statement[];
}

/** Raw bytes and attachments to R2, then message + thread + audit in one batch. */
async function storeOutbound(ctx: ServiceContext, inbox: InboxRow, draft: Draft, c: Composed): Promise<MessageRow> {
  const env = ctx.env;
  const now = ctx.now();
  const written: string[] = [];
  try {
    const keyOfRaw = rawKey(inbox.accountId, inbox.id, c.messageId);
    // Every R2 put at once (raw, attachments, large bodies): none depends on another, and all
    // are awaited before the batch that makes the message visible. Keys are noted before the
    // puts, so a failure removes whatever did land.
    written.push(keyOfRaw);
    const rawPut = env.MAIL_BUCKET.put(keyOfRaw, c.raw, {
      httpMetadata: { contentType: "message/rfc822" },
      customMetadata: { direction: "outbound" },
    });
    const attachmentsPut = Promise.all(
      draft.attachments.map(async (a) => {
        const id = newId("att", now);
        const key = attachmentKey(inbox.accountId, inbox.id, c.messageId, id);
        written.push(key);
        await env.MAIL_BUCKET.put(key, a.content, {
          httpMetadata: { contentType: a.contentType },
          customMetadata: { filename: a.filename },
        });
        return {
          meta: {
            id,
            filename: a.filename,
            content_type: a.contentType,
            size: a.content.byteLength,
            content_id: a.contentId ?? null,
            disposition: a.disposition ?? "attachment",
          } as const,
          key,
          sha256: toHex(await crypto.subtle.digest("SHA-256", a.content)),
        };
      }),
    );
    const [, attachmentMeta, bodyText, bodyHtml] = await Promise.all([
      rawPut,
      attachmentsPut,
      inlineOrR2(env, c.text, bodyKey(inbox.accountId, inbox.id, c.messageId, "txt"), written),
      inlineOrR2(env, draft.html, bodyKey(inbox.accountId, inbox.id, c.messageId, "html"), written),
    ]);

    const threadId = draft.threadId ?? newId("thr", now);
    const headers: Record<string, string | string[]> = {
      from: c.from.name ? `${c.from.name} <${c.from.address}>` : c.from.address,
      to: draft.to.map(display).join(", "),
      subject: draft.subject,
      date: new Date(now).toUTCString(),
      "message-id": c.rfcMessageId,
      "mime-version": "1.0",
    };
    if (draft.cc.length > 0) headers.cc = draft.cc.map(display).join(", ");
    if (draft.replyTo) headers["reply-to"] = display(draft.replyTo);
    if (draft.inReplyTo) headers["in-reply-to"] = draft.inReplyTo;
    if (draft.references.length > 0) headers.references = draft.references.join(" ");
    for (const [name, value] of draft.headers) headers[name.toLowerCase()] = value;

    const row = newMessageRow({
      id: c.messageId,
      accountId: inbox.accountId,
      inboxId: inbox.id,
      threadId,
      direction: "outbound",
      status: "queued",
      fromAddress: c.from.address,
      fromName: c.from.name ?? null,
      autoSubmitted: automaticMarker(draft),
      to: draft.to.map((a) => a.address),
      cc: draft.cc.map((a) => a.address),
      bcc: draft.bcc.map((a) => a.address),
      replyTo: draft.replyTo?.address ?? null,
      subject: draft.subject,
      bodyText: bodyText.inline,
      bodyHtml: bodyHtml.inline,
      bodyTextKey: bodyText.key,
      bodyHtmlKey: bodyHtml.key,
      headers,
      rfcMessageId: c.rfcMessageId,
      inReplyTo: draft.inReplyTo,
      references: draft.references,
      labels: unique(draft.labels),
      attachments: attachmentMeta.map((a) => a.meta),
      size: c.raw.byteLength,
      envelopeFrom: c.from.address,
      rawKey: keyOfRaw,
      // Unique per inbox with inbound keys (Message-IDs): an outbound row can never collide with one.
      dedupeKey: `out:${c.messageId}`,
      searchText: c.text ?? "",
      searchAddresses: [c.from.address, ...c.recipients].join(" "),
      droppedRecipients: draft.dropped ?? [],
      // Where the transport owns the envelope (Cloudflare Email Service), its own bounce and
      // complaint results are the authenticated source: there is no address of ours to show.
      bounceAddresses:
        transportName(env) === "cloudflare" ? {} : await bounceAddresses(env, inbox.address, c.messageId, c.recipients),
      createdAt: now,
    });
    const participants = unique([c.from.address, ...c.recipients]).slice(0, PARTICIPANT_LIMIT);
    const statements: Statement[] = [insertRow(messages, row), ...(c.policyStatements ?? [])];
    for (const a of attachmentMeta) {
      statements.push(
        insertRow(attachmentsTable, {
          id: a.meta.id,
          accountId: inbox.accountId,
          inboxId: inbox.id,
          messageId: c.messageId,
          filename: a.meta.filename,
          contentType: a.meta.content_type,
          size: a.meta.size,
          contentId: a.meta.content_id,
          disposition: a.meta.disposition,
          r2Key: a.key,
          sha256: a.sha256,
          createdAt: now,
        }),
      );
    }
    statements.push(
      threadStatement(ctx, {
        existing: draft.threadId,
        id: threadId,
        inboxId: inbox.id,
        subject: draft.subject,
        participants,
        labels: [],
        now,
      }),
    );
    const audit: AuditEntry[] = [
      {
        action: "message.send_attempted",
        target: { type: "message", id: row.id },
        inboxId: inbox.id,
        metadata: {
          outcome: "queued",
          kind: draft.kind,
          parent_id: draft.parentId,
          thread_id: threadId,
          recipients: c.recipients.length,
          dropped_recipients: draft.dropped ?? [],
          attachments: draft.attachments.length,
          size: row.size,
          rfc_message_id: row.rfcMessageId,
        },
      },
    ];
    await commitWithAudit(ctx, statements, audit);
    return row;
  } catch (err) {
    await env.MAIL_BUCKET.delete(written);
    throw err;
  }
}

/**
 * Hands the message to the outbound queue. If the queue refuses, the message stays `queued` in D1
 * and the scheduled sweep (`requeueStale`) hands it over again: the 202 the caller gets is true.
 */
async function enqueue(ctx: ServiceContext, row: MessageRow): Promise<void> {
  const job: OutboundJob = { v: 1, message_id: row.id, account_id: row.accountId };
  try {
    await ctx.env.OUTBOUND_QUEUE.send(job);
  } catch (err) {
    log.error("outbound enqueue failed", { message_id: row.id, error: String(err) });
  }
}

/** Messages still `queued` this long after their last change are handed to the queue again. */
const STALE_QUEUED_MS = 15 * 60_000;

/** Re-enqueues messages whose queue message was lost (enqueue failure, a purge). Run by `scheduled()`. */
export async function requeueStale(ctx: BaseContext): Promise<number> {
  const now = ctx.now();
  const stale = await ctx.db
    .select({ id: messages.id, accountId: messages.accountId })
    .from(messages)
    .where(and(eq(messages.status, "queued"), lt(messages.updatedAt, now - STALE_QUEUED_MS)))
    .limit(100)
    .all();
  if (stale.length === 0) return 0;
  await ctx.env.OUTBOUND_QUEUE.sendBatch(
    stale.map((m) => ({ body: { v: 1, message_id: m.id, account_id: m.accountId } satisfies OutboundJob })),
  );
  return stale.length;
}

interface SendSlots {
  refused: AppError | null;
  release: () => Promise<void>;
}

/**
 * The send limits, decided by Durable Objects so they hold exactly under concurrency: the
 * new-account limit (10 per rolling 24 h for the first 7 days) on one object per account, then
 * the tier's per-inbox daily limit on one object per inbox.
 */
async function takeSendSlots(
  ctx: ServiceContext,
  inbox: InboxRow,
  account: AccountRow,
  messageId: string,
): Promise<SendSlots> {
  const now = ctx.now();
  const perInbox = tierLimits(config(ctx.env).tiers, account.tier).sends_per_inbox_per_day;
  const isNew = account.newAccountUntil !== null && now < account.newAccountUntil;
  const subjects = [...(isNew ? [`send:account:${account.id}`] : []), `send:inbox:${inbox.id}`];
  // Both objects are asked at once (one round trip); a slot taken where the other refused is given back.
  const decisions = await Promise.all(
    subjects.map((subject, i) =>
      rateLimiter(ctx.env, subject).reserve(
        messageId,
        isNew && i === 0 ? NEW_ACCOUNT_SEND_LIMIT : perInbox,
        DAY_MS,
        now,
      ),
    ),
  );
  const release = async () => {
    await Promise.all(
      subjects
        .filter((_, i) => decisions[i]?.allowed)
        .map((subject) => rateLimiter(ctx.env, subject).release(messageId)),
    );
  };
  const refusedAt = decisions.findIndex((d) => !d.allowed);
  if (refusedAt === -1) return { refused: null, release };
  await release();
  const d = decisions[refusedAt] as SlotDecision;
  const refused =
    isNew && refusedAt === 0
      ? sendLimitError(
          `New accounts may send ${NEW_ACCOUNT_SEND_LIMIT} messages per rolling 24 hours during their first 7 days.`,
          d,
          { scope: "new_account", new_account_until: iso(account.newAccountUntil) },
        )
      : sendLimitError(
          `This inbox may send ${perInbox} messages per rolling 24 hours on the ${account.tier} tier.`,
          d,
          {
            scope: "inbox",
            tier: account.tier,
          },
        );
  return { refused, release: async () => {} };
}

function sendLimitError(
  message: string,
  d: { limit: number; used: number; retryAfterMs: number; resetAtMs: number },
  extra: Record<string, unknown>,
): AppError {
  const retryAfter = Math.max(1, Math.ceil(d.retryAfterMs / 1000));
  return new RateLimited("send_limit_exceeded", `${message} Try again in ${retryAfter} s.`, retryAfter, undefined, {
    limit: d.limit,
    used: d.used,
    window_hours: 24,
    resets_at: iso(d.resetAtMs),
    ...extra,
  });
}

/** The caller's inbox and its account, in one query. */
async function loadInbox(ctx: ServiceContext, inboxId: string): Promise<{ inbox: InboxRow; account: AccountRow }> {
  assertInboxAllowed(ctx, inboxId);
  const row = await INBOX_AND_ACCOUNT.get(ctx.db, { inboxId, accountId: ctx.accountId });
  if (!row) throw new NotFound("Inbox");
  return row;
}

/** An inbox and its account, scoped by account (the send path and the delivery consumer). */
export const INBOX_AND_ACCOUNT = once((db) =>
  db
    .select({ inbox: inboxes, account: accounts })
    .from(inboxes)
    .innerJoin(accounts, eq(accounts.id, inboxes.accountId))
    .where(and(eq(inboxes.id, sql.placeholder("inboxId")), eq(inboxes.accountId, sql.placeholder("accountId"))))
    .prepare(),
);

async function loadMessage(ctx: ServiceContext, messageId: string): Promise<MessageRow> {
  const row = await ctx.db
    .select()
    .from(messages)
    .where(and(eq(messages.id, messageId), eq(messages.accountId, ctx.accountId)))
    .get();
  if (!row || (ctx.inboxIds && !ctx.inboxIds.includes(row.inboxId))) throw new NotFound("Message");
  return row;
}

async function readAttachments(ctx: ServiceContext, row: MessageRow): Promise<ComposeAttachment[]> {
  return Promise.all(
    row.attachments.map(async (a) => {
      const object = await ctx.env.MAIL_BUCKET.get(attachmentKey(row.accountId, row.inboxId, row.id, a.id));
      if (!object) throw new InternalError("attachment_missing", "An attachment of the original message is missing.");
      return {
        filename: a.filename ?? "attachment",
        contentType: a.content_type,
        content: new Uint8Array(await object.arrayBuffer()),
        contentId: a.content_id,
        disposition: a.disposition,
      };
    }),
  );
}

function decodeAttachments(list: AttachmentInput[]): ComposeAttachment[] {
  return list.map((a) => ({
    filename: a.filename,
    contentType: a.content_type,
    content: fromBase64(a.content),
    contentId: a.content_id ? a.content_id.replace(/^<|>$/g, "") : null,
    disposition: a.content_id ? "inline" : "attachment",
  }));
}

/** One `Re:`: kept when the subject already starts with it, added otherwise. */
function replySubject(subject: string | null): string {
  const s = stripControls(subject ?? "").trim();
  return /^re\s*:/i.test(s) ? s : `Re: ${s}`;
}

function display(a: MailAddress): string {
  return a.name ? `${a.name} <${a.address}>` : a.address;
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function unique<T>(items: T[]): T[] {
  return [...new Set(items)];
}

function isString(v: unknown): v is string {
  return typeof v === "string";
}
