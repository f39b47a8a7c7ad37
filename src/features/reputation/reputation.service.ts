import { and, asc, eq, lt, sql } from "drizzle-orm";
import type { Statement } from "../../db/compiled";
import { inboxes, reputationPending, suppressions } from "../../db/schema";
import {
  type CounterSignal,
  type DisableReason,
  overThreshold,
  REPUTATION_RULES,
  type ReputationFigures,
} from "../../durable-objects/inbox-counter";
import {
  ACCOUNT_COUNTER_PREFIX,
  accountCounter,
  accountCounterName,
  cachedSnapshot,
  forgetSnapshot,
  inboxCounter,
} from "../../durable-objects/inbox-counter.client";
import { type BaseContext, forAccount, type ServiceContext } from "../../lib/context";
import { Forbidden } from "../../lib/errors";
import { newId } from "../../lib/ids";
import { log } from "../../lib/log";
import { bareAddress, suppressionAddress } from "../../mail/address";
import type { ReportFinding } from "../../mail/dsn-arf";
import { commitWithAudit } from "../audit/audit.service";
import { eventStatement, publishEvents } from "../events/events.service";
import { getInbox } from "../inboxes/inboxes.service";

/**
 * Per-inbox reputation. The InboxCounter Durable Object (one per inbox) counts and decides;
 * this module feeds it (sends when a message leaves, bounces and complaints from every input)
 * and carries out its decisions in D1: suppress the recipient, disable the inbox exactly once.
 */

/** A bounce or complaint linked to one of our outbound messages. */
export interface ReputationSignal {
  inboxId: string;
  messageId: string;
  kind: "bounce" | "complaint";
  bounceType: "hard" | "soft" | null;
  recipient: string | null;
  source: string;
  detail: string | null;
}

/** The signal of a linked bounce/complaint finding. */
export function signalOf(
  message: { id: string; inboxId: string; to: string[]; cc: string[]; bcc: string[] },
  finding: ReportFinding,
  source: string,
): ReputationSignal {
  const all = [...new Set([...message.to, ...message.cc, ...message.bcc])];
  // A report without a recipient (some ARF reporters redact it) is about the only one, if there is one.
  const recipient = finding.recipient ?? (all.length === 1 ? (all[0] as string) : null);
  return {
    inboxId: message.inboxId,
    messageId: message.id,
    kind: finding.kind === "complaint" ? "complaint" : "bounce",
    bounceType: finding.bounceType,
    recipient: recipient ? bareAddress(recipient).toLowerCase() : null,
    source,
    detail: (finding.diagnostic ?? finding.feedbackType ?? finding.statusCode)?.slice(0, 500) ?? null,
  };
}

/** Suppresses the recipient of a hard bounce or a complaint for the account (kept if already there). */
export function suppressionStatement(ctx: ServiceContext, signal: ReputationSignal): Statement | null {
  if (!signal.recipient) return null;
  if (signal.kind === "bounce" && signal.bounceType !== "hard") return null;
  return ctx.db
    .insert(suppressions)
    .values({
      id: newId("sup", ctx.now()),
      accountId: ctx.accountId,
      address: suppressionAddress(signal.recipient),
      reason: signal.kind === "complaint" ? "complaint" : "hard_bounce",
      source: signal.source,
      inboxId: signal.inboxId,
      messageId: signal.messageId,
      detail: signal.detail,
      createdAt: ctx.now(),
    })
    .onConflictDoNothing();
}

/**
 * The counter key of a signal: the same bounce reported twice (DSN and relay) counts once. A hard
 * bounce or complaint with a recipient counts that recipient once per window, however many
 * messages it is about (distinct recipients, like the sends they are divided by).
 */
function counterSignal(s: ReputationSignal): CounterSignal | null {
  const metric = s.kind === "complaint" ? "complained" : s.bounceType === "hard" ? "bounced_hard" : "bounced_soft";
  const subject = metric !== "bounced_soft" && s.recipient ? { subject: s.recipient } : {};
  return { metric, key: `${metric}:${s.messageId}:${s.recipient ?? "-"}`, ...subject };
}

/**
 * Feeds committed signals to their inboxes' counters (one call per inbox) and carries out a
 * disable the counter decides. `extra` adds counts for one inbox in the same call.
 */
export async function applySignals(
  ctx: ServiceContext,
  signals: ReputationSignal[],
  extra: { inboxId: string; counts: CounterSignal[] } | null = null,
): Promise<void> {
  const byInbox = new Map<string, CounterSignal[]>();
  if (extra) byInbox.set(extra.inboxId, [...extra.counts]);
  for (const s of signals) {
    const c = counterSignal(s);
    if (!c) continue;
    byInbox.set(s.inboxId, [...(byInbox.get(s.inboxId) ?? []), c]);
  }
  for (const [inboxId, counts] of byInbox) await count(ctx, inboxId, counts);
}

/**
 * Counts the recipients of a message that left (accepted or refused by the receiving side): the
 * denominator of both rates is recipients sent, so one bounced recipient of ten is 10 %.
 */
export async function recordSent(
  ctx: ServiceContext,
  inboxId: string,
  messageId: string,
  recipients: number | string[],
) {
  const counts = sentSignals(messageId, recipients);
  if (counts.length === 0) return;
  await count(ctx, inboxId, counts);
}

/**
 * The counter signals of a message's sends: with the recipients named, one per distinct
 * recipient (the rates count distinct recipients in the window, not recipient slots); with only
 * a number, that many sends (keyed: a redelivered queue message counts once).
 */
export function sentSignals(messageId: string, recipients: number | string[]): CounterSignal[] {
  if (typeof recipients === "number") {
    return recipients > 0 ? [{ metric: "sent", n: recipients, key: `sent:${messageId}` }] : [];
  }
  return [...new Set(recipients.map((r) => bareAddress(r).toLowerCase()))].map((r) => ({
    metric: "sent",
    subject: r,
  }));
}

async function count(ctx: ServiceContext, inboxId: string, counts: CounterSignal[]): Promise<void> {
  // The facts are already committed in D1 and no caller's retry would feed them again (a
  // redelivered mail is a duplicate, a re-run send is terminal), so a failure here is not thrown:
  // the signals are kept in D1 and the 5-minute sweep applies them again (`reapplyPending`).
  // The account's own counter takes the same facts: its rates span every inbox of the account,
  // so spreading sends over inboxes (or starting a fresh one) does not dilute them.
  for (const target of [inboxId, accountCounterName(ctx.accountId)]) {
    try {
      await applyToCounter(ctx, target, counts, ctx.now());
    } catch (err) {
      log.error("reputation counter update failed", { inbox_id: target, error: String(err) });
      await keepPending(ctx, target, counts, err);
    }
  }
}

/** Applies signals to the inbox's counter and carries out the disable it decides, or D1 lacks. */
async function applyToCounter(ctx: ServiceContext, inboxId: string, counts: CounterSignal[], at: number) {
  const counter = inboxCounter(ctx.env, inboxId);
  forgetSnapshot(inboxId);
  const result = await counter.apply(counts, at, ctx.accountId);
  // The account's counter decides nothing in D1: its standing is read at accept (account_reputation).
  if (inboxId.startsWith(ACCOUNT_COUNTER_PREFIX)) return;
  if (result.disable && result.figures.disabled) {
    try {
      await disableInbox(ctx, inboxId, result.disable, result.figures);
    } catch (err) {
      // The counter said "disable" to this call only: if D1 did not take it, the next input must
      // (and should the revert fail too, the next input over a threshold finds D1 active, below).
      await counter.revertDisable(result.figures.disabled.at).catch(() => undefined);
      throw err;
    }
  } else if (result.over && result.figures.disabled) {
    // The counter remembers a disable, but D1 may not hold it: its D1 write failed and so did the
    // revert, or the inbox was re-enabled and the counter never heard of it. D1 decides: the
    // guarded update changes an active inbox only, and announces only a change it made.
    await disableInbox(ctx, inboxId, result.over, result.figures);
  }
}

/** Keeps signals the counter did not take, for the sweep; a failure here is only logged. */
async function keepPending(ctx: ServiceContext, inboxId: string, counts: CounterSignal[], err: unknown) {
  try {
    await ctx.db.insert(reputationPending).values({
      id: newId("rpp", ctx.now()),
      accountId: ctx.accountId,
      inboxId,
      signals: counts,
      attempts: 1,
      lastError: String(err).slice(0, 500),
      createdAt: ctx.now(),
    });
  } catch (again) {
    log.error("reputation signals lost", { inbox_id: inboxId, signals: counts, error: String(again) });
  }
}

/** Pending signals older than this are dropped: the counter no longer keeps their window. */
const PENDING_MAX_AGE_MS = 8 * 24 * 60 * 60 * 1000;

/**
 * The cron's half of `count`: applies signals whose counter call failed, oldest first, at the
 * time their facts were recorded (the counter skips keys it already counted, so a signal applied
 * before the failure surfaced counts once). Returns how many rows were applied.
 */
export async function reapplyPending(base: BaseContext, limit = 100): Promise<number> {
  const { db } = base;
  const now = base.now();
  await db.delete(reputationPending).where(lt(reputationPending.createdAt, now - PENDING_MAX_AGE_MS));
  const rows = await db.select().from(reputationPending).orderBy(asc(reputationPending.createdAt)).limit(limit).all();
  let applied = 0;
  for (const row of rows) {
    const ctx = forAccount(base, row.accountId);
    try {
      await applyToCounter(ctx, row.inboxId, row.signals, row.createdAt);
      await db.delete(reputationPending).where(eq(reputationPending.id, row.id));
      applied++;
    } catch (err) {
      await db
        .update(reputationPending)
        .set({ attempts: sql`${reputationPending.attempts} + 1`, lastError: String(err).slice(0, 500) })
        .where(eq(reputationPending.id, row.id));
    }
  }
  return applied;
}

/**
 * Disables the inbox for its rates: the guarded update first (an active inbox only), then, only
 * if it changed the row, the `inbox.disabled` event and the audit entry with the figures. A
 * deactivation or another caller's disable that got there first is announced by nobody here.
 */
async function disableInbox(
  ctx: ServiceContext,
  inboxId: string,
  reason: DisableReason,
  figures: ReputationFigures,
): Promise<void> {
  const now = ctx.now();
  const changed = await ctx.db
    .update(inboxes)
    .set({ status: "disabled", disabledReason: reason, updatedAt: now })
    .where(and(eq(inboxes.id, inboxId), eq(inboxes.accountId, ctx.accountId), eq(inboxes.status, "active")))
    .returning({ address: inboxes.address })
    .all();
  const inbox = changed[0];
  if (!inbox) return;
  const numbers = figuresWire(figures);
  const event = eventStatement(
    ctx,
    "inbox.disabled",
    { inboxId },
    {
      inbox_id: inboxId,
      address: inbox.address,
      status: "disabled",
      disabled_reason: reason,
      reputation: numbers,
    },
  );
  await commitWithAudit(
    ctx,
    [event.statement],
    [
      {
        action: "inbox.disabled",
        target: { type: "inbox", id: inboxId },
        inboxId,
        actor: { type: "system", id: null },
        metadata: { reason, ...numbers, thresholds: thresholdsWire(), event_id: event.id },
      },
    ],
  );
  await publishEvents(ctx.env, [event.id]);
}

/** The rates and counts of the wire (reputation route, event and audit figures). */
function figuresWire(f: ReputationFigures) {
  return {
    window_days: f.window_days,
    sent: f.sent,
    bounced: f.bounced,
    soft_bounced: f.soft_bounced,
    complained: f.complained,
    bounce_rate: round(f.bounce_rate),
    complaint_rate: round(f.complaint_rate),
  };
}

export function thresholdsWire() {
  const r = REPUTATION_RULES;
  return {
    bounce_rate: r.bounceRate,
    complaint_rate: r.complaintRate,
    bounce_rate_warning: round(r.bounceRate * r.warningFraction),
    complaint_rate_warning: round(r.complaintRate * r.warningFraction),
    min_sends: r.minSends,
  };
}

/** Rates on the wire and in headers: fractions with at most 6 decimals. */
export function round(rate: number): number {
  return Math.round(rate * 1e6) / 1e6;
}

/** `GET /v1/inboxes/:inbox_id/reputation`. */
export async function getReputation(ctx: ServiceContext, inboxId: string) {
  return (await getReputationWithHeaders(ctx, inboxId)).data;
}

/** The reputation and its warning headers from one counter call (the route adds them itself). */
export async function getReputationWithHeaders(ctx: ServiceContext, inboxId: string) {
  const inbox = await getInbox(ctx, inboxId);
  const figures = await inboxCounter(ctx.env, inbox.id).snapshot(ctx.now(), ctx.accountId);
  const status = inbox.status === "disabled" ? "disabled" : (figures?.warnings.length ?? 0) > 0 ? "warning" : "ok";
  const empty = { window_days: REPUTATION_RULES.windowDays, sent: 0, bounced: 0, soft_bounced: 0, complained: 0 };
  const data = {
    ...(figures ? figuresWire(figures) : { ...empty, bounce_rate: 0, complaint_rate: 0 }),
    status,
    disabled_reason: inbox.disabledReason ?? null,
    warnings: (figures?.warnings ?? []).map((w) => `${w}_approaching_threshold`),
    thresholds: thresholdsWire(),
  } as const;
  return { data, headers: headersOf(figures) };
}

/**
 * Inbox ids known to belong to an account, per isolate. An inbox never changes account, so a
 * positive answer stays true; only positives are kept (an unknown id is asked about each time).
 */
const owners = new Map<string, string>();
const OWNERS_MAX = 10_000;

/** Whether the inbox is the account's, from D1 (or this isolate's memory of an earlier yes). */
async function ownsInbox(ctx: ServiceContext, inboxId: string): Promise<boolean> {
  if (owners.get(inboxId) === ctx.accountId) return true;
  const row = await ctx.db
    .select({ id: inboxes.id })
    .from(inboxes)
    .where(and(eq(inboxes.id, inboxId), eq(inboxes.accountId, ctx.accountId)))
    .get();
  if (!row) return false;
  if (owners.size >= OWNERS_MAX) owners.clear();
  owners.set(inboxId, ctx.accountId);
  return true;
}

/**
 * The warning headers of API.md for an inbox of the caller's account, or none. Ownership is
 * confirmed first: an inbox id in a URL is the caller's word, and asking the counter for an id
 * nobody owns would address (and could create) a Durable Object for it.
 */
export async function warningHeaders(
  ctx: ServiceContext,
  inboxId: string,
  now: number,
): Promise<Record<string, string> | null> {
  if (!(await ownsInbox(ctx, inboxId))) return null;
  const [inbox, account] = await Promise.all([
    cachedSnapshot(ctx.env, ctx.accountId, inboxId, now),
    cachedSnapshot(ctx.env, ctx.accountId, accountCounterName(ctx.accountId), now),
  ]);
  const headers = headersOf(inbox);
  const acct = headersOf(account);
  if (!acct) return headers;
  // The account's standing over all its inboxes, beside the inbox's own (API.md: a new inbox does
  // not start clean when the account's mail bounces).
  return {
    ...(headers ?? {}),
    "X-Mailbot-Account-Warning": acct["X-Mailbot-Warning"] as string,
    ...(acct["X-Mailbot-Bounce-Rate"] ? { "X-Mailbot-Account-Bounce-Rate": acct["X-Mailbot-Bounce-Rate"] } : {}),
    ...(acct["X-Mailbot-Complaint-Rate"]
      ? { "X-Mailbot-Account-Complaint-Rate": acct["X-Mailbot-Complaint-Rate"] }
      : {}),
  };
}

/**
 * API.md sending rule 6, at accept (and again before a queued message leaves): 403
 * `account_reputation` when the account's rates over all its inboxes are above a threshold (with
 * at least 20 sends in the window), and 403 `inbox_disabled` when the inbox's counter has decided a
 * disable that D1 may not show yet. Both are fresh counter reads, never the warnings' cache.
 */
export async function assertReputationAllowsSend(ctx: ServiceContext, inboxId: string): Promise<void> {
  const now = ctx.now();
  const [account, inbox] = await Promise.all([
    accountCounter(ctx.env, ctx.accountId).snapshot(now, ctx.accountId),
    inboxCounter(ctx.env, inboxId).snapshot(now, ctx.accountId),
  ]);
  const accountOver = account ? overThreshold(account) : null;
  if (account && accountOver) {
    throw new Forbidden(
      "account_reputation",
      `This account's ${accountOver === "bounce_rate" ? "bounce" : "complaint"} rate over all its inboxes is above the threshold: its sends are refused until the rate falls.`,
      { reason: accountOver, ...figuresWire(account), thresholds: thresholdsWire() },
    );
  }
  if (inbox?.disabled) {
    throw new Forbidden("inbox_disabled", "The inbox is disabled for its rates and cannot send.", {
      disabled_reason: inbox.disabled.reason,
    });
  }
}

/** `GET /v1/account/reputation`: the rates over every inbox of the account, the inbox shape. */
export async function getAccountReputation(ctx: ServiceContext) {
  const figures = await accountCounter(ctx.env, ctx.accountId).snapshot(ctx.now(), ctx.accountId);
  const over = figures ? overThreshold(figures) : null;
  const empty = { window_days: REPUTATION_RULES.windowDays, sent: 0, bounced: 0, soft_bounced: 0, complained: 0 };
  return {
    ...(figures ? figuresWire(figures) : { ...empty, bounce_rate: 0, complaint_rate: 0 }),
    status: over ? "disabled" : (figures?.warnings.length ?? 0) > 0 ? "warning" : "ok",
    disabled_reason: over,
    warnings: (figures?.warnings ?? []).map((w) => `${w}_approaching_threshold`),
    thresholds: thresholdsWire(),
  } as const;
}

function headersOf(figures: ReputationFigures | null): Record<string, string> | null {
  if (!figures || figures.warnings.length === 0) return null;
  const headers: Record<string, string> = {
    "X-Mailbot-Warning": figures.warnings.map((w) => `${w}_approaching_threshold`).join(", "),
  };
  if (figures.warnings.includes("complaint_rate")) {
    headers["X-Mailbot-Complaint-Rate"] = String(round(figures.complaint_rate));
  }
  if (figures.warnings.includes("bounce_rate")) headers["X-Mailbot-Bounce-Rate"] = String(round(figures.bounce_rate));
  return headers;
}
