import { and, asc, eq, gt, isNotNull, max } from "drizzle-orm";
import type { Db } from "./client";
import { type EventRow, events } from "./schema";
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
