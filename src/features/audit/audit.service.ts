import type { z } from "@hono/zod-openapi";
import { and, asc, desc, eq, getTableName, gt, gte, lt, lte, type SQL, sql } from "drizzle-orm";
import { auditHmacKey } from "../../config";
import { createDb } from "../../db/client";
import { insertRow, runBatch, type Statement } from "../../db/compiled";
import { type AuditRow, auditChain, auditLog } from "../../db/schema";
import { inList } from "../../db/sql";
import { auditAnchor } from "../../durable-objects/audit-anchor.client";
import type { Actor, ServiceContext } from "../../lib/context";
import { ServiceUnavailable } from "../../lib/errors";
import { newId } from "../../lib/ids";
import { log } from "../../lib/log";
import type { Page } from "../../lib/pagination";
import { iso } from "../../lib/time";
import type { AuditEntryWire } from "./audit.schemas";
import {
  CURRENT_KEY_VERSION,
  chainAccount,
  chainAfterCommit,
  type EntryFields,
  entryMac,
  expectedLink,
  GENESIS_HASH,
  linksOf,
} from "./audit-chain";

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

/** The next position in an account's chain (bound: the account id), computed inside the insert. */
const NEXT_AUDIT_SEQ = `(SELECT COALESCE(MAX("${auditLog.seq.name}"), 0) + 1 FROM "${getTableName(auditLog)}" WHERE "${auditLog.accountId.name}" = ?)`;

/**
 * Runs `statements` and appends the audit entries in ONE `db.batch` (one transaction), so a
 * change and its record land together or not at all. Each entry takes the next `seq` of its
 * account inside its own INSERT (D1 runs one transaction at a time), so concurrent writers never
 * collide and the chain order is the commit order; then the new entries are linked into the
 * account's keyed chain (see audit-chain.ts). A chaining failure does not fail the caller: the
 * change is committed, and the next writer, the audit list, `/verify` or the sweep links it.
 * Returns each of `statements`' results, in order, as runBatch gives them: the RETURNING rows of
 * a compiled insert that asked for them (keyed by SQL column name, e.g. event heads: headsOf),
 * and for a drizzle statement the raw D1Result, NOT drizzle's mapping of it (a drizzle
 * `.returning()` comes back as `{ results: [...] }` with SQL names).
 */
export async function commitWithAudit(
  ctx: ServiceContext,
  statements: Statement[],
  entries: AuditEntry[],
): Promise<unknown[]> {
  // Outside development a missing key refuses the write here, before anything is committed.
  const secret = entries.length > 0 ? auditHmacKey(ctx.env) : "";
  const inserts: Statement[] = [];
  for (const entry of entries) {
    const accountId = entry.accountId ?? ctx.accountId;
    const actor = entry.actor ?? ctx.actor;
    const fields: EntryFields = {
      id: newId("aud"),
      accountId,
      action: entry.action,
      actorType: actor.type,
      actorId: actor.id,
      targetType: entry.target?.type ?? null,
      targetId: entry.target?.id ?? null,
      inboxId: entry.inboxId ?? null,
      metadata: entry.metadata ?? {},
      requestId: ctx.requestId,
      createdAt: ctx.now(),
      keyVersion: CURRENT_KEY_VERSION,
    };
    const mac = await entryMac(secret, fields);
    inserts.push(
      insertRow(
        auditLog,
        { ...fields, seq: 0, prevHash: "", hash: "", mac },
        {
          // Evaluated inside the batch's transaction: no read-modify-write, no lost race.
          computed: { seq: { sql: NEXT_AUDIT_SEQ, params: [accountId] } },
          returning: [auditLog.accountId.name, auditLog.seq.name],
        },
      ),
    );
  }
  const all = [...statements, ...inserts];
  if (all.length === 0) return [];
  const results = await runBatch(ctx.db, all);
  const upTo = new Map<string, number>();
  for (const result of results.slice(statements.length)) {
    for (const r of result as { account_id: string; seq: number }[]) {
      upTo.set(r.account_id, Math.max(upTo.get(r.account_id) ?? 0, r.seq));
    }
  }
  chainAfterCommit(ctx.env, upTo);
  return results.slice(0, statements.length);
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

/** Links what is still unlinked before answering, so a listed entry carries its hash; never fails the read. */
async function chainBeforeReading(ctx: ServiceContext): Promise<void> {
  try {
    await chainAccount(ctx.db, ctx.env, ctx.accountId);
  } catch (err) {
    log.warn("audit chaining before a read failed", { account_id: ctx.accountId, error: String(err) });
  }
}

/**
 * Newest-first page of the account's audit entries, each with its link (`hash`, `prevHash`)
 * from the chain. Pending entries are chained first; one that cannot be (a forged or broken
 * entry, which `/verify` names) is listed with empty `hash` and `prev_hash`.
 */
export async function listAudit(ctx: ServiceContext, filters: AuditFilters, page: Page): Promise<AuditRow[]> {
  await chainBeforeReading(ctx);
  const where: SQL[] = [eq(auditLog.accountId, ctx.accountId)];
  if (filters.action) where.push(eq(auditLog.action, filters.action));
  if (filters.inboxId) where.push(eq(auditLog.inboxId, filters.inboxId));
  // A key restricted to some inboxes sees only the entries about those inboxes.
  if (ctx.inboxIds) where.push(inList(auditLog.inboxId, ctx.inboxIds));
  if (filters.sinceMs !== undefined) where.push(gte(auditLog.createdAt, filters.sinceMs));
  if (filters.untilMs !== undefined) where.push(lte(auditLog.createdAt, filters.untilMs));
  if (page.before) where.push(lt(auditLog.id, page.before));
  const rows = await ctx.db
    .select()
    .from(auditLog)
    .where(and(...where))
    .orderBy(desc(auditLog.id))
    .limit(page.limit + 1)
    .all();
  const links = await linksOf(
    ctx.db,
    ctx.accountId,
    rows.map((r) => r.seq),
  );
  return rows.map((r) => {
    const link = links.get(r.seq);
    return link && link.entryId === r.id
      ? { ...r, hash: link.hash, prevHash: link.prevHash }
      : { ...r, hash: "", prevHash: "" };
  });
}

const VERIFY_PAGE = 500;

/**
 * Re-checks the whole chain after linking anything pending: every entry in `seq` order with no
 * gap, each genuine (its keyed mac, or its legacy SHA-256), each with exactly the link its
 * position, content and predecessor imply, and the chain at least as long as the head recorded
 * outside D1 (AuditAnchor). An edited entry, a removed one (its link or the anchor names it) and
 * a reordered pair all break the walk at the first affected position.
 */
export async function verifyAudit(
  ctx: ServiceContext,
): Promise<{ ok: boolean; checked: number; first_broken_id: string | null }> {
  const secret = auditHmacKey(ctx.env);
  // On the primary, whatever session the request runs in: the anchor (a Durable Object) is
  // always current, and a lagging read replica would make a sound chain look cut short.
  const db = createDb(ctx.env.DB);
  // The anchor first, then the last committed entry: the anchor only ever names linked entries
  // that were committed, so everything it knows lies within `upTo`. The walk covers the chain up
  // to `upTo`; writers that commit meanwhile (their entries are linked in the background) are
  // the next verification's.
  const anchor = auditAnchor(ctx.env, ctx.accountId);
  const anchored = await anchor.head();
  const last = await db
    .select({ seq: sql<number | null>`MAX(${auditLog.seq})` })
    .from(auditLog)
    .where(eq(auditLog.accountId, ctx.accountId))
    .get();
  const upTo = last?.seq ?? 0;
  try {
    await chainAccount(db, ctx.env, ctx.accountId, upTo);
  } catch (err) {
    // The database failed, not the chain: an entry left unlinked by it would read as tampering.
    // (A forged entry does not throw: chainAccount stops before it, and the walk names it.)
    log.warn("audit chaining before a verification failed", { account_id: ctx.accountId, error: String(err) });
    throw new ServiceUnavailable(
      "audit_unavailable",
      "The audit chain could not be brought up to date just now; nothing was found wrong with it. Try again in a few seconds.",
      undefined,
      5,
    );
  }
  let prevHash = GENESIS_HASH;
  let lastId: string | null = null;
  let expectedSeq = 1;
  let checked = 0;
  const linkAt = (seq: number) =>
    db
      .select({ entryId: auditChain.entryId })
      .from(auditChain)
      .where(and(eq(auditChain.accountId, ctx.accountId), eq(auditChain.seq, seq)))
      .get();
  for (;;) {
    const rows = await db
      .select({ entry: auditLog, link: auditChain })
      .from(auditLog)
      .leftJoin(auditChain, and(eq(auditChain.accountId, auditLog.accountId), eq(auditChain.seq, auditLog.seq)))
      .where(and(eq(auditLog.accountId, ctx.accountId), gt(auditLog.seq, expectedSeq - 1), lte(auditLog.seq, upTo)))
      .orderBy(asc(auditLog.seq))
      .limit(VERIFY_PAGE)
      .all();
    for (const { entry, link } of rows) {
      checked++;
      if (entry.seq !== expectedSeq) {
        // A gap: the missing entry's link still names it, unless that was removed too.
        const missing = await linkAt(expectedSeq);
        return { ok: false, checked, first_broken_id: missing?.entryId ?? entry.id };
      }
      const intact =
        link !== null &&
        link.entryId === entry.id &&
        link.prevHash === prevHash &&
        (await expectedLink(secret, entry, prevHash)) === link.hash;
      const matchesAnchor =
        !anchored || anchored.seq !== entry.seq || (anchored.hash === link?.hash && anchored.entryId === entry.id);
      if (!intact || !matchesAnchor) return { ok: false, checked, first_broken_id: entry.id };
      prevHash = link.hash;
      lastId = entry.id;
      expectedSeq++;
    }
    if (rows.length < VERIFY_PAGE) break;
  }
  // Entries cut off the end whose links were left behind (a link whose entry exists was
  // appended by a writer after the walk read its last page: not a break).
  const beyond = await db
    .select({ entryId: auditChain.entryId, present: auditLog.id })
    .from(auditChain)
    .leftJoin(auditLog, eq(auditLog.id, auditChain.entryId))
    .where(and(eq(auditChain.accountId, ctx.accountId), eq(auditChain.seq, expectedSeq)))
    .get();
  if (beyond && beyond.present === null) return { ok: false, checked: checked + 1, first_broken_id: beyond.entryId };
  // Entries and links cut off the end together: the anchor, outside D1, still names the last one.
  if (anchored && anchored.seq >= expectedSeq)
    return { ok: false, checked: checked + 1, first_broken_id: anchored.entryId };
  // The whole chain is proven: the anchor may catch up (a chainer that died before reporting).
  if (lastId) await anchor.advance({ seq: expectedSeq - 1, hash: prevHash, entryId: lastId });
  return { ok: true, checked, first_broken_id: null };
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
