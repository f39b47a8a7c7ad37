import { and, desc, eq, gte, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import { prepared } from "../../db/client";
import type { Statement } from "../../db/compiled";
import { messages, threads } from "../../db/schema";
import { inListOf } from "../../db/sql";
import type { ServiceContext } from "../../lib/context";
import { DAY_MS } from "../../lib/time";
import { type ParsedMail, subjectKey } from "../../mail/parse";

/** Threading shared by inbound and outbound: which thread a message joins, and the thread write. */

const SUBJECT_THREAD_WINDOW_MS = 7 * DAY_MS;

/** Most participants a thread lists; the messages keep every address. */
export const PARTICIPANT_LIMIT = 50;

/**
 * The thread write of a new message: counters, activity time and participants merged in SQL
 * (race-free) on an existing thread, or the insert of a new one. Shared by inbound and outbound.
 */
export function threadStatement(
  ctx: ServiceContext,
  t: {
    existing: string | null;
    id: string;
    inboxId: string;
    subject: string | null;
    participants: string[];
    labels: string[];
    now: number;
    /**
     * The message is held (quarantined): it does not count in the thread's count, activity or
     * participants until it is released (releaseMessage folds it in), so a visible thread never
     * shows who sent held mail. Only its `quarantine` label is noted, for `?label=quarantine`.
     */
    held?: boolean;
  },
): Statement {
  if (t.existing && t.held) {
    return ctx.db
      .update(threads)
      .set({ labels: unionCapped(threads.labels, ["quarantine"], 50), updatedAt: t.now })
      .where(and(eq(threads.id, t.existing), eq(threads.accountId, ctx.accountId)));
  }
  if (t.existing) {
    return ctx.db
      .update(threads)
      .set({
        // A thread started by held mail shows no subject of it: the first visible message's.
        subject: sql`CASE WHEN ${threads.messageCount} = 0 THEN ${t.subject} ELSE ${threads.subject} END`,
        messageCount: sql`${threads.messageCount} + 1`,
        lastMessageAt: sql`max(${threads.lastMessageAt}, ${t.now})`,
        participants: unionCapped(threads.participants, t.participants, PARTICIPANT_LIMIT),
        labels: unionCapped(threads.labels, t.labels, 50),
        updatedAt: t.now,
      })
      .where(and(eq(threads.id, t.existing), eq(threads.accountId, ctx.accountId)));
  }
  return ctx.db.insert(threads).values({
    id: t.id,
    accountId: ctx.accountId,
    inboxId: t.inboxId,
    // Held: no subject shown (it may be the attack itself); the key still threads replies.
    subject: t.held ? null : t.subject,
    subjectKey: subjectKey(t.subject),
    participants: t.held ? [] : t.participants,
    messageCount: t.held ? 0 : 1,
    lastMessageAt: t.now,
    labels: t.held ? ["quarantine"] : t.labels,
    createdAt: t.now,
    updatedAt: t.now,
  });
}

/** A JSON array column merged with new values in SQL (race-free), keeping at most `limit`. */
export function unionCapped(column: SQLiteColumn, values: string[], limit: number) {
  return sql`(SELECT json_group_array(value) FROM (SELECT value FROM (SELECT value FROM json_each(${column}) UNION SELECT value FROM json_each(${JSON.stringify(values)})) LIMIT ${limit}))`;
}

/**
 * The thread a message belongs to: In-Reply-To, then References from right to left, then the
 * same normalised subject in this inbox within 7 days; null means a new thread.
 */
export async function findThread(ctx: ServiceContext, inboxId: string, parsed: ParsedMail): Promise<string | null> {
  const wanted = [parsed.inReplyTo, ...[...parsed.references].reverse()].filter((x): x is string => Boolean(x));
  if (wanted.length > 0) {
    const ids = [...new Set(wanted)].slice(0, 100);
    const found = await prepared(ctx.db, "threads.byReference", (db) =>
      db
        .select({ rfc: messages.rfcMessageId, threadId: messages.threadId })
        .from(messages)
        .where(
          and(
            eq(messages.accountId, sql.placeholder("accountId")),
            eq(messages.inboxId, sql.placeholder("inboxId")),
            inListOf(messages.rfcMessageId, "ids"),
          ),
        )
        .prepare(),
    ).all({ accountId: ctx.accountId, inboxId, ids: JSON.stringify(ids) });
    const byRfc = new Map(found.map((f) => [f.rfc, f.threadId]));
    for (const id of ids) {
      const hit = byRfc.get(id);
      if (hit) return hit;
    }
  }
  const key = subjectKey(parsed.subject);
  if (!key) return null;
  const recent = await prepared(ctx.db, "threads.bySubject", (db) =>
    db
      .select({ id: threads.id })
      .from(threads)
      .where(
        and(
          eq(threads.accountId, sql.placeholder("accountId")),
          eq(threads.inboxId, sql.placeholder("inboxId")),
          eq(threads.subjectKey, sql.placeholder("key")),
          gte(threads.lastMessageAt, sql.placeholder("since")),
        ),
      )
      .orderBy(desc(threads.lastMessageAt))
      .limit(1)
      .prepare(),
  ).get({ accountId: ctx.accountId, inboxId, key, since: ctx.now() - SUBJECT_THREAD_WINDOW_MS });
  return recent?.id ?? null;
}
