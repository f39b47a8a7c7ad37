import { and, eq, sql } from "drizzle-orm";
import { config } from "../../config";
import { type Db, once } from "../../db/client";
import { insertRow, type Statement } from "../../db/compiled";
import { isUniqueViolation } from "../../db/errors";
import { type AttachmentMeta, accounts, attachments, type InboxRow, inboxes, messages } from "../../db/schema";
import { type BaseContext, forAccount, type ServiceContext } from "../../lib/context";
import { sha256Hex, toHex } from "../../lib/crypto";
import { AppError, ContentRejected, MessageTooLarge, RecipientRejected } from "../../lib/errors";
import { newId } from "../../lib/ids";
import { log } from "../../lib/log";
import { bareAddress, canonicalRecipient } from "../../mail/address";
import { readReport } from "../../mail/dsn-arf";
import { htmlToPlain } from "../../mail/html-text";
import {
  authenticationVerdicts,
  messageFingerprint,
  minimalMail,
  type ParsedMail,
  parseMail,
  rawMessageId,
} from "../../mail/parse";
import { type AuditEntry, commitWithAudit } from "../audit/audit.service";
import { parseBounceTag } from "../bounces/bounce-address";
import { releaseClaims, reportStatements } from "../bounces/bounces.service";
import { eventStatement, headsOf, publishEvents } from "../events/events.service";
import { attachmentKey, bodyKey, inlineOrR2, newMessageRow, rawKey } from "../messages/message-store";
import { applySignals, type ReputationSignal } from "../reputation/reputation.service";
import type { Screening } from "../screening/screener";
import {
  type Disposition,
  dispose,
  noteKnownSender,
  policyOf,
  screenInbound,
  senderAuthenticated,
  unhonouredAllow,
} from "../screening/screening.service";
import { findThread, PARTICIPANT_LIMIT, threadStatement } from "../threads/threading";

/** The label of a message whose Message-ID another, different message of the inbox already had. */
export const MESSAGE_ID_COLLISION_LABEL = "message_id_collision";

/** Email Routing's own limit; the HTTP relay endpoint applies the same. */
export const MAX_INBOUND_BYTES = 25 * 1024 * 1024;

export interface InboundMail {
  /** The exact bytes received, read only once the recipient is known to exist. */
  readRaw: () => Promise<Uint8Array>;
  envelopeFrom: string | null;
  envelopeTo: string;
  via: "email_routing" | "inbound_webhook" | "internal";
  requestId: string | null;
}

export interface InboundResult {
  outcome: "stored" | "duplicate";
  messageId: string;
  inboxId: string;
  accountId: string;
}

/** The inbound size refusal (Email Routing's own 25 MiB limit, the relay endpoint's too). */
export function inboundTooLarge(size: number): MessageTooLarge {
  return new MessageTooLarge(`The message is ${size} bytes; the limit is ${MAX_INBOUND_BYTES} bytes (25 MiB).`, {
    limit_bytes: MAX_INBOUND_BYTES,
  });
}

/**
 * Finds the inbox an envelope recipient reaches, or refuses it with a reason for the sender.
 * With `disabled`, a disabled inbox of an active account is returned too (the caller accepts
 * only reports of its own mail there, see `acceptedWhileDisabled`).
 */
export async function resolveRecipient(
  db: Db,
  envelopeTo: string,
  opts: { disabled?: boolean } = {},
): Promise<{ inbox: InboxRow }> {
  const { address } = canonicalRecipient(envelopeTo);
  const row = await RECIPIENT.get(db, { address });
  if (!row) throw new RecipientRejected(`No mailbox here is called ${address}.`);
  if (row.accountStatus !== "active") throw new RecipientRejected(`The mailbox ${address} is not accepting mail.`);
  if (row.inbox.status !== "active" && !opts.disabled) {
    throw new RecipientRejected(`The mailbox ${address} is disabled.`);
  }
  return { inbox: row.inbox };
}

/**
 * Whether a disabled inbox (auto-disabled for its rates, or deactivated) takes this mail: only
 * what reports on mail it already sent, so bounces and complaints of mail in flight are still
 * recorded, suppress their recipients and count: mail to its VERP bounce address
 * (`local+msg_…@domain`) naming one of its outbound messages, or a DSN / ARF report.
 */
async function acceptedWhileDisabled(db: Db, inbox: InboxRow, envelopeTo: string, raw: Uint8Array): Promise<boolean> {
  const tag = parseBounceTag(envelopeTo)?.messageId;
  if (tag) {
    const own = await db
      .select({ id: messages.id })
      .from(messages)
      .where(and(eq(messages.id, tag), eq(messages.inboxId, inbox.id), eq(messages.direction, "outbound")))
      .get();
    if (own) return true;
  }
  return readReport(await parseMail(raw)) !== null;
}

/**
 * The inbound pipeline, shared by Email Routing, the relay webhook and internal delivery: resolve
 * the recipient, keep the raw bytes in R2 before anything can fail on them, parse, keep each
 * attachment, thread, and write message + attachments + thread + event + audit in one batch.
 * A redelivery of the same mail to the same inbox stores nothing twice.
 */
export async function receiveMail(base: BaseContext, input: InboundMail): Promise<InboundResult> {
  const { db, env } = base;
  const now = base.now();
  const { inbox } = await resolveRecipient(db, input.envelopeTo, { disabled: true });
  const raw = await input.readRaw();
  if (raw.byteLength > MAX_INBOUND_BYTES) throw inboundTooLarge(raw.byteLength);
  if (inbox.status !== "active" && !(await acceptedWhileDisabled(db, inbox, input.envelopeTo, raw))) {
    throw new RecipientRejected(`The mailbox ${inbox.address} is disabled.`);
  }
  const mail = { ...input, raw };
  const ctx = forAccount({ ...base, requestId: mail.requestId, now: () => now }, inbox.accountId);

  // A redelivery of the same mail is a duplicate; a different mail reusing a known Message-ID
  // is not (a forged first copy must not shadow the real one). The first mail with a Message-ID
  // is keyed by it; when that key is taken, the fingerprints (what the two messages say: see
  // messageFingerprint) decide: the same, a duplicate; different, the new one is stored too,
  // keyed by Message-ID + fingerprint and labelled as a Message-ID collision.
  const rfcId = rawMessageId(mail.raw);
  let dedupeKey = rfcId ?? `sha256:${await sha256Hex(mail.raw)}`;
  let collidesWith: string | null = null;
  const first = await findByDedupe(db, inbox.id, dedupeKey);
  if (first) {
    const fingerprint = rfcId ? await messageFingerprint(mail.raw) : null;
    const stored = fingerprint ? await storedFingerprint(env, first.rawKey) : null;
    const same = !fingerprint || stored === null || stored === fingerprint;
    if (same) return { outcome: "duplicate", messageId: first.id, inboxId: inbox.id, accountId: inbox.accountId };
    dedupeKey = `${rfcId} ${fingerprint}`;
    const again = await findByDedupe(db, inbox.id, dedupeKey);
    if (again) return { outcome: "duplicate", messageId: again.id, inboxId: inbox.id, accountId: inbox.accountId };
    collidesWith = first.id;
  }

  const messageId = newId("msg", now);
  const keyOfRaw = rawKey(inbox.accountId, inbox.id, messageId);
  // The raw bytes go to R2 while the isolate parses them; nothing is screened or written before
  // they are stored (parseMail never throws), so no received mail is ever lost.
  const [parsed] = await Promise.all([
    parseMail(mail.raw),
    env.MAIL_BUCKET.put(keyOfRaw, mail.raw, {
      httpMetadata: { contentType: "message/rfc822" },
      customMetadata: { envelope_from: mail.envelopeFrom ?? "", envelope_to: mail.envelopeTo, via: mail.via },
    }),
  ]);
  const written = [keyOfRaw];
  const ids: StoreIds = {
    messageId,
    dedupeKey,
    rawKey: keyOfRaw,
    written,
    collidesWith,
    screening: null,
    quarantine: false,
  };
  try {
    // Screened before anything else is written, so the inbox's policy can still refuse it.
    const screened = await screenAndDispose(ctx, inbox, mail, parsed, ids);
    try {
      return await storeParsed(ctx, inbox, mail, parsed, { ...ids, ...screened });
    } catch (err) {
      if (!isSizeLimit(err)) throw err;
      // Something in the parsed mail hit a D1 size limit (a hostile message found one the caps
      // missed): keep the mail anyway, once more with only what the header block says, flagged.
      log.error("parsed mail too large for D1", { error: String(err) });
      await env.MAIL_BUCKET.delete(written.splice(1));
      const minimal = minimalMail(mail.raw, `stored without its parsed content: ${String(err).slice(0, 200)}`);
      return await storeParsed(ctx, inbox, mail, minimal, { ...ids, ...screened });
    }
  } catch (err) {
    // Only a lost race (the same mail stored by a concurrent delivery) undoes the R2 writes;
    // any other failure leaves the raw object in place, so nothing received is ever lost.
    if (isUniqueViolation(err, "messages.inbox_id, messages.dedupe_key")) {
      await env.MAIL_BUCKET.delete(written);
      const winner = await findByDedupe(db, inbox.id, dedupeKey);
      if (winner) return { outcome: "duplicate", messageId: winner.id, inboxId: inbox.id, accountId: inbox.accountId };
    }
    throw err;
  }
}

/** D1 refusing a statement for its size (not a transient failure, which must surface and be retried). */
function isSizeLimit(err: unknown): boolean {
  if (err instanceof AppError) return false;
  const text = `${(err as Error)?.message ?? ""} ${String((err as { cause?: unknown })?.cause ?? "")}`;
  return /TOOBIG|too big|too large|too long|too many SQL variables|LENGTH_LIMIT/i.test(text);
}

async function findByDedupe(
  db: Db,
  inboxId: string,
  dedupeKey: string,
): Promise<{ id: string; rawKey: string | null } | null> {
  const row = await BY_DEDUPE_KEY.get(db, { inboxId, dedupeKey });
  return row ?? null;
}

/**
 * The fingerprint of a stored message, from its raw object (read only when a Message-ID is seen
 * again: redeliveries and collisions). A row without its raw bytes cannot be compared: it is
 * treated as the same mail, as before fingerprints existed.
 */
async function storedFingerprint(env: BaseContext["env"], key: string | null): Promise<string | null> {
  if (!key) return null;
  const object = await env.MAIL_BUCKET.get(key);
  if (!object) return null;
  return messageFingerprint(new Uint8Array(await object.arrayBuffer()));
}

interface StoreIds {
  messageId: string;
  dedupeKey: string;
  rawKey: string;
  /** R2 keys written so far (the caller removes them if the mail turns out to be a duplicate). */
  written: string[];
  /** Another message of the inbox with the same Message-ID and different content, if any. */
  collidesWith: string | null;
  screening: Screening | null;
  /** Held by the inbox's policy: stored with label `quarantine`, hidden until released. */
  quarantine: boolean;
}

/**
 * Screens the parsed mail and applies the inbox's policy. A refusal is audited and the raw object
 * removed (nothing of a refused mail is kept), then thrown: Email Routing rejects at SMTP time,
 * the relay answers 422.
 */
async function screenAndDispose(
  ctx: ServiceContext,
  inbox: InboxRow,
  mail: InboundMail,
  parsed: ParsedMail,
  ids: StoreIds,
): Promise<{ screening: Screening; quarantine: boolean }> {
  const trusted = trustedAuthservIdsFor(ctx.env, mail.via);
  const authentication = authenticationVerdicts(parsed.headers, trusted);
  const screening = await screenInbound(ctx.db, inbox, parsed, authentication, ctx.now());
  const policy = policyOf(inbox);
  const sender = parsed.fromAddress ?? mail.envelopeFrom;
  // Only a From header can be authenticated (DMARC speaks for it); an envelope sender standing in never is.
  const authenticated = senderAuthenticated(parsed.fromAddress, parsed.headers, trusted);
  const ignoredAllow = unhonouredAllow(policy, sender, authenticated);
  if (ignoredAllow) {
    // Weightless: it changes no verdict, it tells the reader why the allow rule did not apply.
    screening.signals.push({
      id: "sender.allow_unauthenticated",
      weight: 0,
      evidence: `From matches allow rule "${ignoredAllow}" but no trusted DMARC pass authenticates it; screened like any mail`,
    });
  }
  // A report (DSN, ARF) is never refused: a real one drives bounces and complaints, which happens
  // whether or not it is held. But the report type is the sender's own word (a Content-Type), so
  // it exempts nothing else: a "report" the policy would refuse is kept, quarantined.
  const decided = dispose(policy, screening, sender, authenticated);
  const disposition: Disposition =
    parsed.reportType && decided.action === "reject"
      ? { action: "store", quarantine: true, reason: decided.reason }
      : decided;
  if (disposition.action === "reject") {
    await ctx.env.MAIL_BUCKET.delete(ids.written.splice(0));
    await commitWithAudit(
      ctx,
      [],
      [
        {
          action: "message.rejected",
          target: { type: "inbox", id: inbox.id },
          inboxId: inbox.id,
          metadata: {
            reason: disposition.reason,
            rule: disposition.rule,
            from: parsed.fromAddress,
            envelope_from: mail.envelopeFrom,
            via: mail.via,
            verdict: screening.verdict,
            score: screening.score,
            signals: screening.signals.map((s) => s.id),
          },
        },
      ],
    );
    throw new ContentRejected(
      disposition.reason === "sender_blocked"
        ? `The mailbox ${inbox.address} does not accept mail from this sender.`
        : `The mailbox ${inbox.address} refused this message: its content looks like an attack on an AI agent (${screening.signals
            .slice(0, 3)
            .map((s) => s.id)
            .join(", ")}).`,
      { reason: disposition.reason, verdict: screening.verdict, score: screening.score, signals: screening.signals },
    );
  }
  return { screening, quarantine: disposition.quarantine };
}

async function storeParsed(
  ctx: ServiceContext,
  inbox: InboxRow,
  mail: InboundMail & { raw: Uint8Array },
  parsed: ParsedMail,
  ids: StoreIds,
): Promise<InboundResult> {
  const env = ctx.env;
  const now = ctx.now();

  // Attachments, large bodies and the thread lookup all at once: none depends on another.
  const attachmentRows = allOrFirstError(
    parsed.attachments.map(async (a) => {
      const id = newId("att", now);
      const key = attachmentKey(inbox.accountId, inbox.id, ids.messageId, id);
      ids.written.push(key);
      // Hashed before the put: after it, the same digest cost ~0.3 ms of CPU per attachment
      // (CPU profile of receiveMail in workerd) against ~0.02 ms here.
      const digest = toHex(await crypto.subtle.digest("SHA-256", a.content));
      await env.MAIL_BUCKET.put(key, a.content, {
        httpMetadata: { contentType: a.contentType },
        customMetadata: { filename: a.filename ?? "" },
      });
      return {
        id,
        accountId: inbox.accountId,
        inboxId: inbox.id,
        messageId: ids.messageId,
        filename: a.filename,
        contentType: a.contentType,
        size: a.content.byteLength,
        contentId: a.contentId,
        disposition: a.disposition,
        r2Key: key,
        sha256: digest,
        createdAt: now,
      };
    }),
  );

  // Settled, not raced: when one fails, the others' R2 writes have finished (and noted their
  // keys) before the caller cleans up, so no object is left behind unlisted.
  const [attachmentsStored, bodyText, bodyHtml, thread] = await allOrFirstError([
    attachmentRows,
    inlineOrR2(env, parsed.bodyText, bodyKey(inbox.accountId, inbox.id, ids.messageId, "txt"), ids.written),
    inlineOrR2(env, parsed.bodyHtml, bodyKey(inbox.accountId, inbox.id, ids.messageId, "html"), ids.written),
    findThread(ctx, inbox.id, parsed),
  ] as const);

  const trusted = trustedAuthservIdsFor(env, mail.via);
  const participants = [
    ...new Set([parsed.fromAddress, ...parsed.to, ...parsed.cc].filter((a): a is string => Boolean(a))),
  ].slice(0, PARTICIPANT_LIMIT);
  const labels = [
    "unread",
    ...(ids.collidesWith ? [MESSAGE_ID_COLLISION_LABEL] : []),
    ...(ids.quarantine ? ["quarantine"] : []),
  ];
  const threadId = thread ?? newId("thr", now);

  const attachmentMeta: AttachmentMeta[] = attachmentsStored.map((a) => ({
    id: a.id,
    filename: a.filename,
    content_type: a.contentType,
    size: a.size,
    content_id: a.contentId,
    disposition: a.disposition,
  }));
  const searchBody = parsed.bodyText ?? (parsed.bodyHtml ? htmlToPlain(parsed.bodyHtml) : "");
  // Stamped when the row is written (the id was minted when receiving began), so a long-poll
  // that started while this mail was being parsed still sees it as new.
  const writtenAt = Date.now();
  const row = newMessageRow({
    id: ids.messageId,
    accountId: inbox.accountId,
    inboxId: inbox.id,
    threadId,
    direction: "inbound",
    status: "received",
    fromAddress: parsed.fromAddress,
    fromName: parsed.fromName,
    to: parsed.to,
    cc: parsed.cc,
    replyTo: parsed.replyTo,
    subject: parsed.subject,
    bodyText: bodyText.inline,
    bodyHtml: bodyHtml.inline,
    bodyTextKey: bodyText.key,
    bodyHtmlKey: bodyHtml.key,
    headers: parsed.headers,
    headersTruncated: parsed.headersTruncated,
    rfcMessageId: parsed.rfcMessageId,
    inReplyTo: parsed.inReplyTo,
    references: parsed.references,
    labels,
    attachments: attachmentMeta,
    size: mail.raw.byteLength,
    authentication: authenticationVerdicts(parsed.headers, trusted),
    screening: ids.screening,
    autoSubmitted: parsed.autoSubmitted,
    reportType: parsed.reportType,
    parseError: parsed.parseError,
    envelopeFrom: mail.envelopeFrom,
    envelopeTo: bareAddress(mail.envelopeTo),
    rawKey: ids.rawKey,
    dedupeKey: ids.dedupeKey,
    searchText: searchBody,
    searchAddresses: [parsed.fromName, parsed.fromAddress, ...parsed.to, ...parsed.cc].filter(Boolean).join(" "),
    createdAt: writtenAt,
    receivedAt: writtenAt,
  });

  const statements: Statement[] = [insertRow(messages, row)];
  for (const a of attachmentsStored) statements.push(insertRow(attachments, a));
  statements.push(
    threadStatement(ctx, {
      existing: thread,
      id: threadId,
      inboxId: inbox.id,
      subject: parsed.subject,
      participants,
      labels,
      now,
      held: ids.quarantine,
    }),
  );

  const event = eventStatement(
    ctx,
    "message.received",
    { inboxId: inbox.id, threadId, messageId: row.id },
    {
      message_id: row.id,
      inbox_id: inbox.id,
      thread_id: threadId,
      from_address: row.fromAddress,
      from_name: row.fromName,
      to: row.to,
      cc: row.cc,
      subject: row.subject,
      body_text: eventBody(row.bodyText),
      body_html: eventBody(row.bodyHtml),
      body_truncated: eventBody(row.bodyText) !== row.bodyText || eventBody(row.bodyHtml) !== row.bodyHtml,
      attachments: attachmentMeta,
      attachments_omitted: parsed.attachmentsOmitted,
      auto_submitted: row.autoSubmitted !== null,
      report_type: row.reportType,
      parse_error: row.parseError,
      screening: row.screening,
      labels,
    },
  );
  statements.push(event.statement);

  const audit: AuditEntry[] = [
    {
      action: "message.received",
      target: { type: "message", id: row.id },
      inboxId: inbox.id,
      metadata: {
        thread_id: threadId,
        from: row.fromAddress,
        envelope_from: mail.envelopeFrom,
        envelope_to: row.envelopeTo,
        via: mail.via,
        size: row.size,
        attachments: attachmentsStored.length,
        attachments_omitted: parsed.attachmentsOmitted,
        rfc_message_id: row.rfcMessageId,
        event_id: event.id,
        ...(ids.collidesWith ? { message_id_collision: ids.collidesWith } : {}),
        screening: ids.screening ? { verdict: ids.screening.verdict, score: ids.screening.score } : null,
        quarantined: ids.quarantine,
      },
    },
  ];
  if (parsed.parseError) {
    audit.push({
      action: "message.parse_failed",
      target: { type: "message", id: row.id },
      inboxId: inbox.id,
      metadata: { parse_error: parsed.parseError, raw_key: ids.rawKey },
    });
  }

  const eventIds = [event.id];
  const report = readReport(parsed);
  const signals: ReputationSignal[] = [];
  const claims: string[] = [];
  if (report) {
    const fromReport = await reportStatements(ctx, inbox, row, report, mail.envelopeTo);
    statements.push(...fromReport.statements);
    audit.push(...fromReport.audit);
    eventIds.push(...fromReport.eventIds);
    signals.push(...fromReport.signals);
    claims.push(...fromReport.claims);
  }

  let results: unknown[];
  try {
    results = await commitWithAudit(ctx, statements, audit);
  } catch (err) {
    // The findings' claims were written ahead of the batch: a redelivery must find them free.
    await releaseClaims(ctx, claims);
    throw err;
  }
  if (!ids.quarantine && ids.screening?.verdict === "clean") noteKnownSender(inbox.id, row.fromAddress, row.fromName);
  await publishEvents(env, eventIds, headsOf(results));
  // After the commit: the counters (and a disable they decide) follow only what D1 recorded.
  await applySignals(ctx, signals);
  return { outcome: "stored", messageId: row.id, inboxId: inbox.id, accountId: inbox.accountId };
}

/** Like Promise.all, but waits for every promise to settle before throwing the first failure. */
async function allOrFirstError<T extends readonly unknown[]>(
  promises: T,
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as {
    -readonly [K in keyof T]: Awaited<T[K]>;
  };
}

/** A body for the event payload, unless its JSON would make the event row too large. */
function eventBody(body: string | null): string | null {
  return body !== null && JSON.stringify(body).length <= EVENT_BODY_LIMIT ? body : null;
}
const EVENT_BODY_LIMIT = 256 * 1024;

/**
 * Whose Authentication-Results an ingestion path believes: Email Routing's receiver for routed
 * mail, the relay's configured ids (none by default) for relayed mail, nobody for internal mail.
 */
function trustedAuthservIdsFor(env: ServiceContext["env"], via: InboundMail["via"]): string[] {
  const cfg = config(env);
  return via === "email_routing" ? cfg.trustedAuthservIds : via === "inbound_webhook" ? cfg.relayAuthservIds : [];
}

const RECIPIENT = once((d) =>
  d
    .select({ inbox: inboxes, accountStatus: accounts.status })
    .from(inboxes)
    .innerJoin(accounts, eq(accounts.id, inboxes.accountId))
    .where(eq(inboxes.address, sql.placeholder("address")))
    .prepare(),
);

const BY_DEDUPE_KEY = once((d) =>
  d
    .select({ id: messages.id, rawKey: messages.rawKey })
    .from(messages)
    .where(and(eq(messages.inboxId, sql.placeholder("inboxId")), eq(messages.dedupeKey, sql.placeholder("dedupeKey"))))
    .prepare(),
);
