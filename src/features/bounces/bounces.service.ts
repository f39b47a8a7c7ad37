import type { z } from "@hono/zod-openapi";
import { and, eq } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { deliveryReports, type InboxRow, type MessageRow, messages } from "../../db/schema";
import { inList } from "../../db/sql";
import type { CounterSignal } from "../../durable-objects/inbox-counter";
import { type BaseContext, forAccount, type ServiceContext } from "../../lib/context";
import { newId } from "../../lib/ids";
import { log } from "../../lib/log";
import { canonicalRecipient } from "../../mail/address";
import type { DeliveryReport, ReportFinding } from "../../mail/dsn-arf";
import { type AuditEntry, commitWithAudit } from "../audit/audit.service";
import { eventStatement, publishEvents } from "../events/events.service";
import { applySignals, type ReputationSignal, signalOf, suppressionStatement } from "../reputation/reputation.service";
import type { RelayEventsBody, RelayEventsResult } from "./bounces.schemas";

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
  statements: BatchItem<"sqlite">[];
  audit: AuditEntry[];
  eventIds: string[];
  signals: ReputationSignal[];
  /** Report rows already inserted as claims: the caller releases them if its batch fails. */
  claims: string[];
}

/**
 * The single entry point for delivery reports (DSN bounces/delays/deliveries and ARF
 * complaints): records each finding, links it to the outbound message it is about (by the
 * original Message-ID, else by a `+msg_…` tag on the envelope recipient), marks that message and
 * emits `message.bounced` / `message.delivered` / `message.complained`. Returns statements for
 * the caller's batch, and the signals the caller hands to `applySignals` after committing (the
 * per-inbox reputation counters, suppressions are already among the statements).
 */
export async function reportStatements(
  ctx: ServiceContext,
  inbox: InboxRow,
  reportMessage: MessageRow,
  report: DeliveryReport,
  envelopeTo: string,
): Promise<FindingWrites> {
  const original = await findOriginal(ctx, report, envelopeTo);
  return findingStatements(ctx, original, report.findings, {
    source: "report",
    carrierId: reportMessage.id,
    inboxId: inbox.id,
    originalRfcMessageId: report.originalMessageId,
  });
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
): Promise<FindingWrites> {
  const statements: BatchItem<"sqlite">[] = [];
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
      const claimed = await ctx.db
        .insert(deliveryReports)
        .values({ ...row, inboxId: original.inboxId, originalMessageId: original.id, claimKey })
        .onConflictDoNothing()
        .returning({ id: deliveryReports.id })
        .all();
      if (claimed.length > 0) {
        linked = original;
        claims.push(row.id);
      }
    }
    // A repeat (or a report about a recipient the message never had) is kept, unlinked.
    if (!linked) statements.push(ctx.db.insert(deliveryReports).values(row));
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
  return { statements, audit, eventIds, signals, claims };
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

async function findOriginal(
  ctx: ServiceContext,
  report: DeliveryReport,
  envelopeTo: string,
): Promise<LinkedMessage | null> {
  const columns = LINKED_COLUMNS;
  if (report.originalMessageId) {
    const byRfc = await ctx.db
      .select(columns)
      .from(messages)
      .where(
        and(
          eq(messages.accountId, ctx.accountId),
          eq(messages.rfcMessageId, report.originalMessageId),
          eq(messages.direction, "outbound"),
        ),
      )
      .get();
    if (byRfc) return byRfc;
  }
  // A bounce address of the form `inbox+msg_…@domain` names the message directly (VERP): it is
  // the envelope recipient of a DSN, and the Original-Mail-From of an ARF report.
  const tags = [envelopeTo, report.originalMailFrom].map((a) => (a ? canonicalRecipient(a).tag : null));
  const tag = tags.find((t) => t && /^msg_[0-9a-z]{26}$/.test(t));
  if (tag) {
    const byTag = await ctx.db
      .select(columns)
      .from(messages)
      .where(and(eq(messages.accountId, ctx.accountId), eq(messages.id, tag), eq(messages.direction, "outbound")))
      .get();
    if (byTag) return byTag;
  }
  return null;
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
      bounceType: e.type === "bounce" ? e.bounce_type : null,
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
