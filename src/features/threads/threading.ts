import { and, desc, eq, getTableName, gte, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import { once } from "../../db/client";
import { insertRow, type Statement } from "../../db/compiled";
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
    return { sql: HELD_INTO_THREAD, params: [JSON.stringify(["quarantine"]), 50, t.now, t.existing, ctx.accountId] };
  }
  if (t.existing) {
    return {
      sql: INTO_THREAD,
      params: [
        t.subject,
        t.now,
        JSON.stringify(t.participants),
        PARTICIPANT_LIMIT,
        JSON.stringify(t.labels),
        50,
        t.now,
        t.existing,
        ctx.accountId,
      ],
    };
  }
  return insertRow(threads, {
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

// The two thread updates as SQL made once (every inbound mail and every send makes one; drizzle's
// builder made them anew each time: see db/compiled.ts). Written in SQLite's terms; on the right of
// each SET, columns are the row's values before the update.
const T = {
  table: `"${getTableName(threads)}"`,
  id: `"${threads.id.name}"`,
  account: `"${threads.accountId.name}"`,
  subject: `"${threads.subject.name}"`,
  count: `"${threads.messageCount.name}"`,
  last: `"${threads.lastMessageAt.name}"`,
  participants: `"${threads.participants.name}"`,
  labels: `"${threads.labels.name}"`,
  updated: `"${threads.updatedAt.name}"`,
};
/** `column` merged with a JSON array (bound) in SQL, at most `limit` (bound) values: unionCapped's SQL. */
const unionCappedSql = (column: string) =>
  `(SELECT json_group_array(value) FROM (SELECT value FROM (SELECT value FROM json_each(${column}) UNION SELECT value FROM json_each(?)) LIMIT ?))`;
/** Bound: labels JSON, label limit, now, thread id, account id. */
const HELD_INTO_THREAD = `update ${T.table} set ${T.labels} = ${unionCappedSql(T.labels)}, ${T.updated} = ? where ${T.id} = ? and ${T.account} = ?`;
/**
 * Bound: subject, now, participants JSON, participant limit, labels JSON, label limit, now,
 * thread id, account id. A thread started by held mail shows no subject of it: the first
 * visible message's.
 */
const INTO_THREAD = `update ${T.table} set ${T.subject} = CASE WHEN ${T.count} = 0 THEN ? ELSE ${T.subject} END, ${T.count} = ${T.count} + 1, ${T.last} = max(${T.last}, ?), ${T.participants} = ${unionCappedSql(T.participants)}, ${T.labels} = ${unionCappedSql(T.labels)}, ${T.updated} = ? where ${T.id} = ? and ${T.account} = ?`;

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
    const found = await BY_REFERENCE.all(ctx.db, { accountId: ctx.accountId, inboxId, ids: JSON.stringify(ids) });
    const byRfc = new Map(found.map((f) => [f.rfc, f.threadId]));
    for (const id of ids) {
      const hit = byRfc.get(id);
      if (hit) return hit;
    }
  }
  const key = subjectKey(parsed.subject);
  if (!key) return null;
  const recent = await BY_SUBJECT.get(ctx.db, {
    accountId: ctx.accountId,
    inboxId,
    key,
    since: ctx.now() - SUBJECT_THREAD_WINDOW_MS,
  });
  return recent?.id ?? null;
}

const BY_REFERENCE = once((db) =>
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
);

const BY_SUBJECT = once((db) =>
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
);
