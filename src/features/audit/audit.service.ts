import type { z } from "@hono/zod-openapi";
import { and, asc, desc, eq, gt, gte, lt, lte, type SQL } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import type { Db } from "../../db/client";
import { isUniqueViolation } from "../../db/errors";
import { type AuditRow, auditLog } from "../../db/schema";
import { inList } from "../../db/sql";
import type { Actor, ServiceContext } from "../../lib/context";
import { sha256Hex } from "../../lib/crypto";
import { ServiceUnavailable } from "../../lib/errors";
import { newId } from "../../lib/ids";
import type { Page } from "../../lib/pagination";
import { iso } from "../../lib/time";
import type { AuditEntryWire } from "./audit.schemas";

/** What a change records about itself. */
export interface AuditEntry {
  action: string;
  target?: { type: string; id: string } | null;
  inboxId?: string | null;
  metadata?: Record<string, unknown>;
  /** Defaults to the context's account (admin actions name the account they touch). */
  accountId?: string;
  actor?: Actor;
}

export const GENESIS_HASH = "0".repeat(64);

type Statement = BatchItem<"sqlite">;

/** The hash of an entry covers every field and the previous entry's hash. */
export async function entryHash(row: Omit<AuditRow, "hash">): Promise<string> {
  const canonical = JSON.stringify([
    row.id,
    row.accountId,
    row.seq,
    row.action,
    row.actorType,
    row.actorId,
    row.targetType,
    row.targetId,
    row.inboxId,
    row.metadata,
    row.requestId,
    row.createdAt,
    row.prevHash,
  ]);
  return sha256Hex(canonical);
}

async function head(db: Db, accountId: string): Promise<{ seq: number; hash: string }> {
  const last = await db
    .select({ seq: auditLog.seq, hash: auditLog.hash })
    .from(auditLog)
    .where(eq(auditLog.accountId, accountId))
    .orderBy(desc(auditLog.seq))
    .limit(1)
    .get();
  return last ?? { seq: 0, hash: GENESIS_HASH };
}

/**
 * Runs `statements` and appends the audit entries in ONE `db.batch` (one transaction), so a
 * change and its record land together or not at all. Each entry extends the account's hash
 * chain; two writers racing for the same position make one batch fail on the unique
 * (account_id, seq) index, and that writer rebuilds on the new head and tries again.
 */
export async function commitWithAudit(
  ctx: ServiceContext,
  statements: Statement[],
  entries: AuditEntry[],
): Promise<void> {
  // No in-isolate lock here: workerd cancels a request that waits on a promise another request
  // resolves ("code had hung"), so concurrent writers rely on the unique index and retry.
  return appendWithRetry(ctx, statements, entries);
}

async function appendWithRetry(ctx: ServiceContext, statements: Statement[], entries: AuditEntry[]): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    // Losers of a race back off a little, at random, so a burst (many mails to one account at
    // once, across isolates) spreads out instead of colliding again on the next head.
    if (attempt > 0) await new Promise((r) => setTimeout(r, Math.random() * Math.min(10 * attempt, 100)));
    const heads = new Map<string, { seq: number; hash: string }>();
    const inserts: Statement[] = [];
    for (const entry of entries) {
      const accountId = entry.accountId ?? ctx.accountId;
      const prev = heads.get(accountId) ?? (await head(ctx.db, accountId));
      const actor = entry.actor ?? ctx.actor;
      const row: Omit<AuditRow, "hash"> = {
        id: newId("aud"),
        accountId,
        seq: prev.seq + 1,
        action: entry.action,
        actorType: actor.type,
        actorId: actor.id,
        targetType: entry.target?.type ?? null,
        targetId: entry.target?.id ?? null,
        inboxId: entry.inboxId ?? null,
        metadata: entry.metadata ?? {},
        requestId: ctx.requestId,
        createdAt: ctx.now(),
        prevHash: prev.hash,
      };
      const hash = await entryHash(row);
      heads.set(accountId, { seq: row.seq, hash });
      inserts.push(ctx.db.insert(auditLog).values({ ...row, hash }));
    }
    const all = [...statements, ...inserts];
    try {
      if (all.length > 0) await ctx.db.batch(all as [Statement, ...Statement[]]);
      return;
    } catch (err) {
      if (!isUniqueViolation(err, "audit_log.account_id, audit_log.seq")) throw err;
    }
  }
  throw new ServiceUnavailable("busy", "The account is too busy right now; retry the request.");
}

export interface AuditFilters {
  action?: string | undefined;
  inboxId?: string | undefined;
  sinceMs?: number | undefined;
  untilMs?: number | undefined;
}

/** The filters of an audit query (the route's query string and the list_audit_log tool's arguments). */
export function auditFilters(q: {
  action?: string | undefined;
  inbox_id?: string | undefined;
  since?: string | undefined;
  until?: string | undefined;
}): AuditFilters {
  return {
    action: q.action,
    inboxId: q.inbox_id,
    sinceMs: q.since ? Date.parse(q.since) : undefined,
    untilMs: q.until ? Date.parse(q.until) : undefined,
  };
}

/** Newest-first page of the account's audit entries. */
export async function listAudit(ctx: ServiceContext, filters: AuditFilters, page: Page): Promise<AuditRow[]> {
  const where: SQL[] = [eq(auditLog.accountId, ctx.accountId)];
  if (filters.action) where.push(eq(auditLog.action, filters.action));
  if (filters.inboxId) where.push(eq(auditLog.inboxId, filters.inboxId));
  // A key restricted to some inboxes sees only the entries about those inboxes.
  if (ctx.inboxIds) where.push(inList(auditLog.inboxId, ctx.inboxIds));
  if (filters.sinceMs !== undefined) where.push(gte(auditLog.createdAt, filters.sinceMs));
  if (filters.untilMs !== undefined) where.push(lte(auditLog.createdAt, filters.untilMs));
  if (page.before) where.push(lt(auditLog.id, page.before));
  return ctx.db
    .select()
    .from(auditLog)
    .where(and(...where))
    .orderBy(desc(auditLog.id))
    .limit(page.limit + 1)
    .all();
}

/** Re-checks the whole chain: every hash, every link, no gap in the sequence. */
export async function verifyAudit(
  ctx: ServiceContext,
): Promise<{ ok: boolean; checked: number; first_broken_id: string | null }> {
  let prevHash = GENESIS_HASH;
  let expectedSeq = 1;
  let checked = 0;
  for (;;) {
    const rows = await ctx.db
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.accountId, ctx.accountId), gt(auditLog.seq, expectedSeq - 1)))
      .orderBy(asc(auditLog.seq))
      .limit(500)
      .all();
    for (const row of rows) {
      checked++;
      const { hash, ...rest } = row;
      const intact = row.seq === expectedSeq && row.prevHash === prevHash && (await entryHash(rest)) === hash;
      if (!intact) return { ok: false, checked, first_broken_id: row.id };
      prevHash = hash;
      expectedSeq++;
    }
    if (rows.length < 500) return { ok: true, checked, first_broken_id: null };
  }
}

/** Wire shape of an audit entry. */
export function toAuditWire(row: AuditRow): z.infer<typeof AuditEntryWire> {
  return {
    id: row.id,
    action: row.action,
    actor: { type: row.actorType as z.infer<typeof AuditEntryWire>["actor"]["type"], id: row.actorId },
    target: row.targetType && row.targetId ? { type: row.targetType, id: row.targetId } : null,
    inbox_id: row.inboxId,
    metadata: row.metadata,
    request_id: row.requestId,
    created_at: iso(row.createdAt),
    seq: row.seq,
    hash: row.hash,
    prev_hash: row.prevHash,
  };
}
