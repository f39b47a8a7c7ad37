import { and, count, eq, gte, isNotNull, lt, type SQL, sql } from "drizzle-orm";
import { accounts, deliveryReports, messages } from "../../db/schema";
import { inList } from "../../db/sql";
import { rateLimiter } from "../../durable-objects/rate-limiter.client";
import type { ServiceContext } from "../../lib/context";
import { NotFound } from "../../lib/errors";
import { NEW_ACCOUNT_SEND_LIMIT } from "../../lib/tiers";
import { DAY_MS, iso } from "../../lib/time";

/**
 * Usage from the log: D1's messages (sent = outbound that left, received = inbound) and delivery
 * reports (linked hard bounces and complaints, whatever their source), scoped to the account and,
 * for a restricted key, to its inboxes. The send limit comes from the Durable Object that enforces it.
 */

interface Figures {
  sent: number;
  received: number;
  bounced: number;
  complained: number;
}

const dayOf = (column: typeof messages.createdAt | typeof messages.sentAt | typeof deliveryReports.createdAt) =>
  // A literal divisor: a bound JS number may arrive as REAL, and the division must stay integer.
  sql<number>`(${column} / ${sql.raw(String(DAY_MS))})`;

async function figuresByDay(ctx: ServiceContext, since: number, until: number): Promise<Map<number, Figures>> {
  const msgWhere: SQL[] = [
    eq(messages.accountId, ctx.accountId),
    gte(messages.createdAt, since),
    lt(messages.createdAt, until),
  ];
  const rptWhere: SQL[] = [
    eq(deliveryReports.accountId, ctx.accountId),
    gte(deliveryReports.createdAt, since),
    lt(deliveryReports.createdAt, until),
    isNotNull(deliveryReports.originalMessageId),
  ];
  if (ctx.inboxIds) {
    msgWhere.push(inList(messages.inboxId, ctx.inboxIds));
    rptWhere.push(inList(deliveryReports.inboxId, ctx.inboxIds));
  }
  // Sent on the day the message left (sent_at), not the day it was queued.
  const sentWhere: SQL[] = [
    eq(messages.accountId, ctx.accountId),
    eq(messages.direction, "outbound"),
    gte(messages.sentAt, since),
    lt(messages.sentAt, until),
  ];
  if (ctx.inboxIds) sentWhere.push(inList(messages.inboxId, ctx.inboxIds));
  msgWhere.push(eq(messages.direction, "inbound"));
  const mDay = dayOf(messages.createdAt);
  const sDay = dayOf(messages.sentAt);
  const rDay = dayOf(deliveryReports.createdAt);
  const [receivedRows, sentRows, rptRows] = await Promise.all([
    ctx.db
      .select({ day: mDay, received: sql<number>`COUNT(*)` })
      .from(messages)
      .where(and(...msgWhere))
      .groupBy(mDay)
      .all(),
    ctx.db
      .select({ day: sDay, sent: sql<number>`COUNT(*)` })
      .from(messages)
      .where(and(...sentWhere))
      .groupBy(sDay)
      .all(),
    ctx.db
      .select({
        day: rDay,
        bounced: sql<number>`SUM(CASE WHEN ${deliveryReports.kind} = 'bounce' AND ${deliveryReports.bounceType} = 'hard' THEN 1 ELSE 0 END)`,
        complained: sql<number>`SUM(CASE WHEN ${deliveryReports.kind} = 'complaint' THEN 1 ELSE 0 END)`,
      })
      .from(deliveryReports)
      .where(and(...rptWhere))
      .groupBy(rDay)
      .all(),
  ]);
  const days = new Map<number, Figures>();
  const at = (d: number) => {
    const f = days.get(d) ?? { sent: 0, received: 0, bounced: 0, complained: 0 };
    days.set(d, f);
    return f;
  };
  for (const r of receivedRows) at(Number(r.day)).received = Number(r.received ?? 0);
  for (const r of sentRows) at(Number(r.day)).sent = Number(r.sent ?? 0);
  for (const r of rptRows) {
    Object.assign(at(Number(r.day)), { bounced: Number(r.bounced ?? 0), complained: Number(r.complained ?? 0) });
  }
  return days;
}

function total(days: Map<number, Figures>): Figures {
  const t = { sent: 0, received: 0, bounced: 0, complained: 0 };
  for (const f of days.values()) {
    t.sent += f.sent;
    t.received += f.received;
    t.bounced += f.bounced;
    t.complained += f.complained;
  }
  return t;
}

/** The period of a usage query (ISO strings, validated by UsageQuery) in epoch milliseconds. */
export function usagePeriod(q: { since?: string | undefined; until?: string | undefined }) {
  return { since: q.since ? Date.parse(q.since) : undefined, until: q.until ? Date.parse(q.until) : undefined };
}

/** `GET /v1/usage`: totals over a period (default: the current UTC month) and the send limit now. */
export async function getUsage(
  ctx: ServiceContext,
  period: { since?: number | undefined; until?: number | undefined },
) {
  const now = ctx.now();
  const month = new Date(now);
  const since = period.since ?? Date.UTC(month.getUTCFullYear(), month.getUTCMonth(), 1);
  const until = period.until ?? now + 1;
  const account = await ctx.db.select().from(accounts).where(eq(accounts.id, ctx.accountId)).get();
  if (!account) throw new NotFound("Account");
  const [figures, limit] = await Promise.all([
    figuresByDay(ctx, since, until),
    sendLimit(ctx, account.newAccountUntil),
  ]);
  return { period: { since: iso(since), until: iso(until) }, ...total(figures), send_limit: limit };
}

/**
 * The account-wide send limit: 10 per rolling 24 h while the account is new, read from the
 * limiter that enforces it. Past that, no account-wide limit applies (`limit` null; the tier's
 * per-inbox daily limit still does) and `used` counts the last 24 h from the log.
 */
async function sendLimit(ctx: ServiceContext, newAccountUntil: number) {
  const now = ctx.now();
  if (now < newAccountUntil) {
    const usage = await rateLimiter(ctx.env, `send:account:${ctx.accountId}`).slotUsage(DAY_MS, now);
    return {
      limit: NEW_ACCOUNT_SEND_LIMIT,
      used: usage.used,
      window_hours: 24,
      resets_at: iso(usage.resetAtMs),
      scope: "new_account" as const,
      new_account_until: iso(newAccountUntil),
    };
  }
  const where: SQL[] = [
    eq(messages.accountId, ctx.accountId),
    gte(messages.createdAt, now - DAY_MS),
    eq(messages.direction, "outbound"),
  ];
  if (ctx.inboxIds) where.push(inList(messages.inboxId, ctx.inboxIds));
  const row = await ctx.db
    .select({ n: count() })
    .from(messages)
    .where(and(...where))
    .get();
  return {
    limit: null,
    used: row?.n ?? 0,
    window_hours: 24,
    resets_at: null,
    scope: "none" as const,
    new_account_until: iso(newAccountUntil),
  };
}

/** `GET /v1/usage/daily`: one row per UTC day for the last `days` days, newest first (empty days included). */
export async function getDailyUsage(ctx: ServiceContext, days: number) {
  const now = ctx.now();
  const today = Math.floor(now / DAY_MS);
  const first = today - days + 1;
  const figures = await figuresByDay(ctx, first * DAY_MS, (today + 1) * DAY_MS);
  const out = [];
  for (let d = today; d >= first; d--) {
    out.push({
      date: new Date(d * DAY_MS).toISOString().slice(0, 10),
      ...(figures.get(d) ?? { sent: 0, received: 0, bounced: 0, complained: 0 }),
    });
  }
  return out;
}
