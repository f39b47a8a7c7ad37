import type { z } from "@hono/zod-openapi";
import { and, desc, eq, inArray, lt, type SQL } from "drizzle-orm";
import { config } from "../../config";
import type { Statement } from "../../db/compiled";
import { type DeliveryReportRow, deliveryReports, type InboxRow, type MessageRow, messages } from "../../db/schema";
import { inList } from "../../db/sql";
import type { CounterSignal } from "../../durable-objects/inbox-counter";
import { type BaseContext, forAccount, type ServiceContext } from "../../lib/context";
import { newId } from "../../lib/ids";
import { log } from "../../lib/log";
import type { Page } from "../../lib/pagination";
import { iso } from "../../lib/time";
import { bareAddress } from "../../mail/address";
import type { DeliveryReport, ReportFinding } from "../../mail/dsn-arf";
import { feedbackLoopSource } from "../../mail/report-auth";
import { isMailboxStatus } from "../../mail/status-codes";
import { type AuditEntry, commitWithAudit } from "../audit/audit.service";
import { eventStatement, publishEvents } from "../events/events.service";
import { getInbox } from "../inboxes/inboxes.service";
import { applySignals, type ReputationSignal, signalOf, suppressionStatement } from "../reputation/reputation.service";
import { parseBounceTag, recipientOfToken } from "./bounce-address";
import type { DeliveryReportWire, RelayEventsBody, RelayEventsResult } from "./bounces.schemas";

/** Our outbound message a report is about. */
interface LinkedMessage {
  id: string;
  inboxId: string;
  threadId: string;
  status: string;
  fromAddress: string | null;
  to: string[];
  cc: string[];
  bcc: string[];
  subject: string | null;
}

/** Where a finding came from, and the id of what carried it (see `deliveryReports.reportMessageId`). */
export interface FindingCarrier {
  source: "report" | "transport" | "relay";
  carrierId: string;
  /** The inbox the carrier arrived at, for findings that cannot be linked. */
  inboxId: string;
  originalRfcMessageId: string | null;
}

/** What a batch of findings writes, and what it feeds to the reputation counters once committed. */
export interface FindingWrites {
  statements: Statement[];
  audit: AuditEntry[];
  eventIds: string[];
  signals: ReputationSignal[];
  /** Report rows already inserted as claims: the caller releases them if its batch fails. */
  claims: string[];
}

/**
 * The single entry point for delivery reports that arrive as mail (DSN bounces/delays/deliveries
 * and ARF complaints). Only an authentic report moves anything:
 * - a DSN counts only for the recipient whose per-recipient bounce address (an HMAC token over
 *   message and recipient, see bounce-address.ts) it arrived at, and cannot speak for anyone else;
 * - an ARF complaint counts only when a configured feedback-loop source (FEEDBACK_LOOP_SOURCES)
 *   signed it, per the trusted Authentication-Results; it then names its recipient.
 * Anything else is kept as report rows marked `verified: false` with the reason, audited as
 * received, and changes no status, counter or suppression. Returns statements for the caller's
 * batch and the signals it hands to `applySignals` after committing.
 */
export async function reportStatements(
  ctx: ServiceContext,
  inbox: InboxRow,
  reportMessage: MessageRow,
  report: DeliveryReport,
  envelopeTo: string,
): Promise<FindingWrites> {
  const carrier: FindingCarrier = {
    source: "report",
    carrierId: reportMessage.id,
    inboxId: inbox.id,
    originalRfcMessageId: report.originalMessageId,
  };
  const judged = await judgeReport(ctx, inbox, reportMessage, report, envelopeTo);
  const writes = await findingStatements(ctx, judged.original, judged.findings, carrier, judged.unverified);
  if (judged.unverified.length > 0) {
    writes.audit.push({
      action: "report.unverified",
      target: { type: "message", id: reportMessage.id },
      inboxId: inbox.id,
      metadata: {
        report_type: report.type,
        envelope_to: bareAddress(envelopeTo),
        original_rfc_message_id: report.originalMessageId,
        findings: judged.unverified.map((u) => ({
          kind: u.finding.kind,
          recipient: u.finding.recipient,
          reason: u.reason,
        })),
      },
    });
  }
  return writes;
}

interface Unverified {
  finding: ReportFinding;
  reason: string;
}

/** Which findings of a report may count (with the message they are about), and why the others may not. */
async function judgeReport(
  ctx: ServiceContext,
  inbox: InboxRow,
  reportMessage: MessageRow,
  report: DeliveryReport,
  envelopeTo: string,
): Promise<{ original: LinkedMessage | null; findings: ReportFinding[]; unverified: Unverified[] }> {
  const none = (reason: string) => ({
    original: null,
    findings: [],
    unverified: report.findings.map((finding) => ({ finding, reason })),
  });
  if (report.findings.length === 0) return none("no_findings");

  if (report.type === "delivery_status") {
    const tag = parseBounceTag(envelopeTo);
    if (!tag) return none("no_bounce_token");
    const original = await linkedById(ctx, tag.messageId, inbox.id);
    if (!original) return none("unknown_message");
    const recipients = [...original.to, ...original.cc, ...original.bcc];
    const owner = await recipientOfToken(ctx.env, original.id, tag.token, recipients);
    if ("reason" in owner) return none(owner.reason);
    // The token speaks for one recipient: a finding naming another recipient of the message is
    // not believed; one naming that recipient, nobody, or an address the message never had (a
    // forward's final recipient) is about that recipient's copy.
    const others = new Set(recipients.map((r) => bareAddress(r).toLowerCase()));
    others.delete(owner.recipient);
    const findings: ReportFinding[] = [];
    const unverified: Unverified[] = [];
    for (const f of report.findings) {
      const named = f.recipient ? bareAddress(f.recipient).toLowerCase() : null;
      if (named && others.has(named)) unverified.push({ finding: f, reason: "other_recipient" });
      else findings.push({ ...f, recipient: owner.recipient });
    }
    return { original, findings, unverified };
  }

  // A feedback report: believed only from a configured feedback-loop source that signed it.
  const cfg = config(ctx.env);
  const source = feedbackLoopSource(reportMessage.headers, cfg.trustedAuthservIds, cfg.feedbackLoopSources);
  if (!source) return none("not_feedback_loop_source");
  // The loop is trusted to say which message: by our bounce address (with its recipient) in
  // Original-Mail-From or the envelope, else by the Message-ID it returns.
  let original: LinkedMessage | null = null;
  let tokenRecipient: string | null = null;
  for (const address of [report.originalMailFrom, envelopeTo]) {
    const tag = parseBounceTag(address);
    if (!tag) continue;
    const linked = await linkedById(ctx, tag.messageId, null);
    if (!linked) continue;
    original = linked;
    const owner = await recipientOfToken(ctx.env, linked.id, tag.token, [...linked.to, ...linked.cc, ...linked.bcc]);
    if ("recipient" in owner) tokenRecipient = owner.recipient;
    break;
  }
  original ??= report.originalMessageId ? await linkedByRfcId(ctx, report.originalMessageId) : null;
  if (!original) return none("unknown_message");
  const findings = report.findings.map((f) => ({ ...f, recipient: f.recipient ?? tokenRecipient }));
  return { original, findings, unverified: [] };
}

/**
 * Findings about one of our outbound messages that did not come as a report mail: a transport's
 * synchronous permanent refusal, or a relay's notification. Same writes as a report (one path),
 * committed here with their audit entries, then fed to the counters. `extraCounts` are counted in
 * the same counter call (the sends of the attempt that bounced).
 */
export async function recordFindings(
  ctx: ServiceContext,
  messageId: string,
  findings: ReportFinding[],
  carrier: Omit<FindingCarrier, "inboxId" | "originalRfcMessageId">,
  extraCounts: CounterSignal[] = [],
): Promise<{ linked: boolean; writes: FindingWrites }> {
  const original = await ctx.db
    .select(LINKED_COLUMNS)
    .from(messages)
    .where(and(eq(messages.accountId, ctx.accountId), eq(messages.id, messageId), eq(messages.direction, "outbound")))
    .get();
  if (!original) return { linked: false, writes: { statements: [], audit: [], eventIds: [], signals: [], claims: [] } };
  const writes = await findingStatements(ctx, original, findings, {
    ...carrier,
    inboxId: original.inboxId,
    originalRfcMessageId: null,
  });
  try {
    await commitWithAudit(ctx, writes.statements, writes.audit);
  } catch (err) {
    await releaseClaims(ctx, writes.claims);
    throw err;
  }
  await publishEvents(ctx.env, writes.eventIds);
  await applySignals(
    ctx,
    writes.signals,
    extraCounts.length > 0 ? { inboxId: original.inboxId, counts: extraCounts } : null,
  );
  return { linked: true, writes };
}

async function findingStatements(
  ctx: ServiceContext,
  original: LinkedMessage | null,
  findings: ReportFinding[],
  carrier: FindingCarrier,
  unverified: Unverified[] = [],
): Promise<FindingWrites> {
  const statements: Statement[] = [];
  for (const u of unverified) {
    // Kept and shown, never linked: no status, counter, suppression, event.
    statements.push(
      ctx.db.insert(deliveryReports).values({
        id: newId("rpt", ctx.now()),
        accountId: ctx.accountId,
        inboxId: carrier.inboxId,
        reportMessageId: carrier.carrierId,
        originalMessageId: null,
        originalRfcMessageId: carrier.originalRfcMessageId,
        kind: u.finding.kind,
        bounceType: u.finding.bounceType,
        recipient: u.finding.recipient,
        statusCode: u.finding.statusCode,
        diagnostic: u.finding.diagnostic,
        feedbackType: u.finding.feedbackType,
        source: carrier.source,
        createdAt: ctx.now(),
        verified: false,
        unverifiedReason: u.reason,
      }),
    );
  }
  const audit: AuditEntry[] = [];
  const eventIds: string[] = [];
  const signals: ReputationSignal[] = [];
  const claims: string[] = [];
  const now = ctx.now();
  let statusSet = false;

  for (const finding of findings) {
    // Anyone who received our mail knows its Message-ID, so a report only counts for a recipient
    // the message really went to, and only once per (message, kind, bounce type, recipient),
    // whatever the source: the report row is the claim, inserted at once against a unique index,
    // so of two concurrent reports of the same thing exactly one is linked (and evented, audited).
    const addressed =
      original !== null &&
      (finding.recipient === null || [...original.to, ...original.cc, ...original.bcc].includes(finding.recipient));
    const row = {
      id: newId("rpt", now),
      accountId: ctx.accountId,
      inboxId: carrier.inboxId,
      reportMessageId: carrier.carrierId,
      originalMessageId: null as string | null,
      originalRfcMessageId: carrier.originalRfcMessageId,
      kind: finding.kind,
      bounceType: finding.bounceType,
      recipient: finding.recipient,
      statusCode: finding.statusCode,
      diagnostic: finding.diagnostic,
      feedbackType: finding.feedbackType,
      source: carrier.source,
      createdAt: now,
    };
    let linked: LinkedMessage | null = null;
    if (original && addressed) {
      const claimKey = `${finding.kind}:${finding.bounceType ?? ""}:${finding.recipient?.toLowerCase() ?? ""}`;
      const claim = () =>
        ctx.db
          .insert(deliveryReports)
          .values({ ...row, inboxId: original.inboxId, originalMessageId: original.id, claimKey, claimPending: true })
          .onConflictDoNothing()
          .returning({ id: deliveryReports.id })
          .all();
      let claimed = await claim();
      // A claim whose batch never committed (the Worker died between the two) holds nothing:
      // once stale, this report takes its place instead of being taken for a repeat.
      if (claimed.length === 0 && (await releaseStaleClaim(ctx, original.id, claimKey, now))) claimed = await claim();
      if (claimed.length > 0) {
        linked = original;
        claims.push(row.id);
      }
    }
    // A repeat (or a report about a recipient the message never had) is kept, unlinked; one
    // about a recipient the message never had is not believed either.
    if (!linked) {
      statements.push(
        ctx.db
          .insert(deliveryReports)
          .values(addressed ? row : { ...row, verified: false, unverifiedReason: "not_a_recipient" }),
      );
    }
    if (!linked) continue;
    const change = messageChange(finding, linked.status, now);
    if (change && !statusSet) {
      statements.push(
        ctx.db
          .update(messages)
          .set(change)
          .where(and(eq(messages.id, linked.id), eq(messages.accountId, ctx.accountId))),
      );
      if (change.status) statusSet = true;
    }
    const eventType =
      finding.kind === "bounce"
        ? "message.bounced"
        : finding.kind === "complaint"
          ? "message.complained"
          : finding.kind === "delivered"
            ? "message.delivered"
            : null;
    if (!eventType) continue;
    const signal =
      finding.kind === "bounce" || finding.kind === "complaint" ? signalOf(linked, finding, carrier.source) : null;
    const suppression = signal ? suppressionStatement(ctx, signal) : null;
    if (signal) signals.push(signal);
    if (suppression) statements.push(suppression);
    const details = {
      recipient: finding.recipient,
      bounce_type: finding.bounceType,
      status_code: finding.statusCode,
      diagnostic: finding.diagnostic,
      feedback_type: finding.feedbackType,
      source: carrier.source,
      report_message_id: carrier.source === "report" ? carrier.carrierId : null,
      ...(carrier.source === "relay" ? { relay_event_id: carrier.carrierId } : {}),
    };
    const event = eventStatement(
      ctx,
      eventType,
      { inboxId: linked.inboxId, threadId: linked.threadId, messageId: linked.id },
      {
        message_id: linked.id,
        inbox_id: linked.inboxId,
        thread_id: linked.threadId,
        from_address: linked.fromAddress,
        to: linked.to,
        subject: linked.subject,
        ...details,
      },
    );
    statements.push(event.statement);
    eventIds.push(event.id);
    if (finding.kind !== "delivered") {
      audit.push({
        action: eventType,
        target: { type: "message", id: linked.id },
        inboxId: linked.inboxId,
        metadata: { ...details, suppressed: suppression ? finding.recipient : null, event_id: event.id },
      });
    }
  }
  // The claims are settled in the same batch as their effects: a claim still pending later
  // lost its batch (see releaseStaleClaims).
  if (claims.length > 0) {
    statements.push(
      ctx.db
        .update(deliveryReports)
        .set({ claimPending: false })
        .where(and(eq(deliveryReports.accountId, ctx.accountId), inArray(deliveryReports.id, claims))),
    );
  }
  return { statements, audit, eventIds, signals, claims };
}

/**
 * How long a claim may wait for its batch. The batch follows the claim within the same request
 * (seconds); a claim older than this and still pending was left by a crash between the two.
 */
export const CLAIM_STALE_MS = 10 * 60_000;

/** Removes one stale pending claim (same message and claim key), so a redelivered report can claim it. */
async function releaseStaleClaim(ctx: ServiceContext, messageId: string, claimKey: string, now: number) {
  const released = await ctx.db
    .delete(deliveryReports)
    .where(
      and(
        eq(deliveryReports.accountId, ctx.accountId),
        eq(deliveryReports.originalMessageId, messageId),
        eq(deliveryReports.claimKey, claimKey),
        eq(deliveryReports.claimPending, true),
        lt(deliveryReports.createdAt, now - CLAIM_STALE_MS),
      ),
    )
    .returning({ id: deliveryReports.id })
    .all();
  if (released.length > 0) log.warn("stale report claim taken over", { message_id: messageId, claim_key: claimKey });
  return released.length > 0;
}

/**
 * Scheduled sweep: releases claims whose batch never committed (the Worker died after the claim
 * insert), so the report's redelivery (the reporting MTA retries, the relay re-posts) is counted
 * instead of being taken for a repeat. Returns how many were released.
 */
export async function releaseStaleClaims(ctx: BaseContext): Promise<number> {
  const released = await ctx.db
    .delete(deliveryReports)
    .where(and(eq(deliveryReports.claimPending, true), lt(deliveryReports.createdAt, ctx.now() - CLAIM_STALE_MS)))
    .returning({ id: deliveryReports.id, originalMessageId: deliveryReports.originalMessageId })
    .all();
  if (released.length > 0) log.warn("stale report claims released", { count: released.length });
  return released.length;
}

/** Takes back the claims of findings whose batch did not commit, so a retry of the carrier counts them. */
export async function releaseClaims(ctx: ServiceContext, claims: string[]): Promise<void> {
  if (claims.length === 0) return;
  await ctx.db
    .delete(deliveryReports)
    .where(and(eq(deliveryReports.accountId, ctx.accountId), inList(deliveryReports.id, claims)))
    .catch((err: unknown) => log.error("report claims not released", { claims, error: String(err) }));
}

/** How a finding changes the outbound message; a bounce or complaint is never undone by a later "delivered". */
function messageChange(
  finding: ReportFinding,
  currentStatus: string,
  now: number,
): { status?: string; complainedAt?: number; updatedAt: number } | null {
  if (finding.kind === "bounce") return { status: "bounced", updatedAt: now };
  if (finding.kind === "complaint") return { complainedAt: now, updatedAt: now };
  if (finding.kind === "delivered" && currentStatus === "sent") return { status: "delivered", updatedAt: now };
  return null;
}

const LINKED_COLUMNS = {
  id: messages.id,
  inboxId: messages.inboxId,
  threadId: messages.threadId,
  status: messages.status,
  fromAddress: messages.fromAddress,
  to: messages.to,
  cc: messages.cc,
  bcc: messages.bcc,
  subject: messages.subject,
};

/** One of our outbound messages by id (in the inbox the report reached, when given). */
async function linkedById(ctx: ServiceContext, id: string, inboxId: string | null): Promise<LinkedMessage | null> {
  const row = await ctx.db
    .select(LINKED_COLUMNS)
    .from(messages)
    .where(
      and(
        eq(messages.accountId, ctx.accountId),
        eq(messages.id, id),
        eq(messages.direction, "outbound"),
        ...(inboxId ? [eq(messages.inboxId, inboxId)] : []),
      ),
    )
    .get();
  return row ?? null;
}

async function linkedByRfcId(ctx: ServiceContext, rfcMessageId: string): Promise<LinkedMessage | null> {
  const row = await ctx.db
    .select(LINKED_COLUMNS)
    .from(messages)
    .where(
      and(
        eq(messages.accountId, ctx.accountId),
        eq(messages.rfcMessageId, rfcMessageId),
        eq(messages.direction, "outbound"),
      ),
    )
    .get();
  return row ?? null;
}

/** Records each relay event through the one findings path; `linked`/`counted` per event. */
export async function recordRelayEvents(
  base: BaseContext,
  events: z.infer<typeof RelayEventsBody>["events"],
): Promise<z.infer<typeof RelayEventsResult>> {
  const now = base.now();
  const results: z.infer<typeof RelayEventsResult>["results"] = [];
  for (const [index, e] of events.entries()) {
    const eventId = newId("rev", now);
    // Our Message-IDs are `<msg_…@domain>`: the relay may only know the header.
    const messageId = e.message_id ?? /^<?(msg_[0-9a-z]{26})@/.exec(e.rfc_message_id ?? "")?.[1] ?? null;
    // The relay is trusted by the deployment's secret, not by an account: the message names the account.
    const owner = messageId
      ? await base.db
          .select({ accountId: messages.accountId })
          .from(messages)
          .where(and(eq(messages.id, messageId), eq(messages.direction, "outbound")))
          .get()
      : undefined;
    if (!owner || !messageId) {
      results.push({ index, event_id: eventId, message_id: null, linked: false, counted: false });
      continue;
    }
    const ctx = forAccount({ ...base, now: () => now }, owner.accountId);
    const finding: ReportFinding = {
      kind: e.type,
      // A relay's "hard" bounce with a status that is not about the mailbox (5.7.x policy, 5.4.x
      // routing, 5.3.x system) is the path's failure, not the recipient's: it does not count.
      bounceType:
        e.type === "bounce"
          ? e.bounce_type === "hard" && e.status_code && !isMailboxStatus(e.status_code)
            ? "soft"
            : e.bounce_type
          : null,
      recipient: e.recipient,
      statusCode: e.status_code ?? null,
      diagnostic: e.diagnostic ?? null,
      feedbackType: e.type === "complaint" ? (e.feedback_type ?? "abuse") : null,
    };
    const { linked, writes } = await recordFindings(ctx, messageId, [finding], {
      source: "relay",
      carrierId: eventId,
    });
    results.push({ index, event_id: eventId, message_id: messageId, linked, counted: writes.signals.length > 0 });
  }
  return { received: results.length, results };
}

/** `GET /v1/inboxes/:inbox_id/reports`: the inbox's delivery reports, newest first, verified or not. */
export async function listReports(
  ctx: ServiceContext,
  inboxId: string,
  filters: { verified?: boolean | undefined },
  page: Page,
): Promise<DeliveryReportRow[]> {
  const inbox = await getInbox(ctx, inboxId);
  const where: SQL[] = [eq(deliveryReports.accountId, ctx.accountId), eq(deliveryReports.inboxId, inbox.id)];
  if (filters.verified !== undefined) where.push(eq(deliveryReports.verified, filters.verified));
  if (page.before) where.push(lt(deliveryReports.id, page.before));
  return ctx.db
    .select()
    .from(deliveryReports)
    .where(and(...where))
    .orderBy(desc(deliveryReports.id))
    .limit(page.limit + 1)
    .all();
}

export function toReportWire(row: DeliveryReportRow): z.infer<typeof DeliveryReportWire> {
  return {
    id: row.id,
    inbox_id: row.inboxId,
    message_id: row.originalMessageId,
    report_message_id: row.reportMessageId,
    original_rfc_message_id: row.originalRfcMessageId,
    source: row.source,
    kind: row.kind,
    bounce_type: row.bounceType,
    recipient: row.recipient,
    status_code: row.statusCode,
    diagnostic: row.diagnostic,
    feedback_type: row.feedbackType,
    verified: row.verified,
    unverified_reason: row.unverifiedReason,
    created_at: iso(row.createdAt),
  };
}
