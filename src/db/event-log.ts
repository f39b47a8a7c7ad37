import { and, asc, eq, gt, isNotNull, max } from "drizzle-orm";
import type { Db } from "./client";
import { accounts, apiKeys, type EventRow, events } from "./schema";
import { inList } from "./sql";

/**
 * Reads of the account's event log in commit order (`seq`), for the realtime hub: D1 stays the
 * source of truth, the hub only reads it to replay a resuming connection or to fill a gap.
 */

/** The account's last committed seq (0 for an empty log). */
export async function headSeq(db: Db, accountId: string): Promise<number> {
  const row = await db
    .select({ head: max(events.seq) })
    .from(events)
    .where(eq(events.accountId, accountId))
    .get();
  return row?.head ?? 0;
}

/**
 * Up to `limit` events committed after `afterSeq`, oldest first, and the account's head seq read
 * in the same snapshot (one batch is one transaction): when fewer than `limit` rows come back,
 * the caller has every event up to `head`. `inboxIds` narrows to a restricted key's inboxes.
 */
export async function eventsAfterSeq(
  db: Db,
  accountId: string,
  afterSeq: number,
  limit: number,
  inboxIds: string[] | null = null,
): Promise<{ rows: EventRow[]; head: number }> {
  const where = [eq(events.accountId, accountId), gt(events.seq, afterSeq)];
  if (inboxIds) where.push(isNotNull(events.inboxId), inList(events.inboxId, inboxIds));
  const [rows, head] = await db.batch([
    db
      .select()
      .from(events)
      .where(and(...where))
      .orderBy(asc(events.seq))
      .limit(limit),
    db
      .select({ head: max(events.seq) })
      .from(events)
      .where(eq(events.accountId, accountId)),
  ]);
  return { rows, head: head[0]?.head ?? 0 };
}

/** The given events of any accounts (publishers know ids, not accounts), for the hubs. */
export async function eventsByIds(db: Db, ids: string[]): Promise<EventRow[]> {
  if (ids.length === 0) return [];
  return db.select().from(events).where(inList(events.id, ids)).all();
}

/** Why a key may no longer hold a stream open. */
export type StreamBlock = "api_key_revoked" | "account_suspended";

/**
 * Of the account's given keys, those that may no longer stream, and why: revoked (or gone), or
 * their account is not active. D1 is the record revocation and suspension are committed to
 * before their streams are told to close, so a hub reading it after accepting a socket cannot
 * miss a revocation that raced the connect.
 */
export async function blockedStreamKeys(
  db: Db,
  accountId: string,
  keyIds: string[],
): Promise<Map<string, StreamBlock>> {
  const blocked = new Map<string, StreamBlock>();
  if (keyIds.length === 0) return blocked;
  const rows = await db
    .select({ id: apiKeys.id, revokedAt: apiKeys.revokedAt, status: accounts.status })
    .from(apiKeys)
    .innerJoin(accounts, eq(accounts.id, apiKeys.accountId))
    .where(and(eq(apiKeys.accountId, accountId), inList(apiKeys.id, keyIds)))
    .all();
  const found = new Map(rows.map((r) => [r.id, r]));
  for (const id of keyIds) {
    const row = found.get(id);
    if (row && row.status === "suspended") blocked.set(id, "account_suspended");
    else if (!row || row.revokedAt !== null || row.status !== "active") blocked.set(id, "api_key_revoked");
  }
  return blocked;
}
