import type { z } from "@hono/zod-openapi";
import { and, asc, desc, eq, lt, or, type SQL, sql } from "drizzle-orm";
import { messages, type ThreadRow, threads } from "../../db/schema";
import type { ServiceContext } from "../../lib/context";
import { BadRequest, NotFound } from "../../lib/errors";
import { iso } from "../../lib/time";
import {
  assertInboxAllowed,
  bodyBudgetPageOf,
  hasLabel,
  type MessageListRow,
  messageListColumns,
  notQuarantined,
  QUARANTINE_LABEL,
  requireInbox,
  toMessageListWire,
} from "../messages/messages.service";
import type { ThreadWire } from "./threads.schemas";

/** A thread page is ordered by latest activity, so its cursor carries (last_message_at, id). */
export interface ThreadPage {
  limit: number;
  after?: { lastMessageAt: number; id: string };
}

export function toThreadPage(query: { limit: number; cursor?: string | undefined }): ThreadPage {
  if (!query.cursor) return { limit: query.limit };
  let decoded = "";
  try {
    decoded = atob(query.cursor.replace(/-/g, "+").replace(/_/g, "/"));
  } catch {
    throw new BadRequest("invalid_cursor", "The cursor is not valid.");
  }
  const m = /^(\d{1,15})\.(thr_[0-9a-z]{26})$/.exec(decoded);
  if (!m?.[1] || !m[2]) throw new BadRequest("invalid_cursor", "The cursor is not valid.");
  return { limit: query.limit, after: { lastMessageAt: Number(m[1]), id: m[2] } };
}

export function threadPageOf(rows: ThreadRow[], limit: number): { items: ThreadRow[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  const nextCursor =
    rows.length > limit && last
      ? btoa(`${last.lastMessageAt}.${last.id}`).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")
      : null;
  return { items, nextCursor };
}

/**
 * Whether quarantined mail may show: only when the caller asks for it by its label, as the message
 * list does (`?label=quarantine`). The MCP adapters never ask (held mail is out of agents' reach).
 */
export const asksForQuarantined = (label: string | undefined) => label === QUARANTINE_LABEL;

/**
 * A thread is visible while one of its messages is: a thread made only of quarantined mail would
 * otherwise show its subject, participants and count. In SQL (on messages_thread_idx), so a page
 * is filled from visible threads and never comes back short while more exist.
 */
function hasVisibleMessage(accountId: string): SQL {
  return sql`EXISTS (SELECT 1 FROM ${messages} WHERE ${messages.threadId} = ${threads.id} AND ${messages.accountId} = ${accountId} AND ${notQuarantined()})`;
}

/**
 * An inbox's threads, most recently active first. Threads with no visible message (all
 * quarantined) are left out unless `withQuarantined` (see asksForQuarantined).
 */
export async function listThreads(
  ctx: ServiceContext,
  inboxId: string,
  filters: { label?: string | undefined; withQuarantined?: boolean },
  page: ThreadPage,
): Promise<ThreadRow[]> {
  await requireInbox(ctx, inboxId);
  const where: (SQL | undefined)[] = [eq(threads.inboxId, inboxId), eq(threads.accountId, ctx.accountId)];
  if (filters.label)
    where.push(sql`EXISTS (SELECT 1 FROM json_each(${threads.labels}) WHERE value = ${filters.label})`);
  if (!filters.withQuarantined) where.push(hasVisibleMessage(ctx.accountId));
  if (page.after) {
    where.push(
      or(
        lt(threads.lastMessageAt, page.after.lastMessageAt),
        and(eq(threads.lastMessageAt, page.after.lastMessageAt), lt(threads.id, page.after.id)),
      ),
    );
  }
  return ctx.db
    .select()
    .from(threads)
    .where(and(...where))
    .orderBy(desc(threads.lastMessageAt), desc(threads.id))
    .limit(page.limit + 1)
    .all();
}

/** Most messages a thread response carries (oldest first); the messages list pages through more. */
export const THREAD_MESSAGES_LIMIT = 200;

/**
 * One thread with its messages, oldest first: previews only unless `includeBody`. Quarantined
 * messages are left out, and a thread with none left is a 404, as its messages are to a list;
 * `quarantined` (HTTP `?label=quarantine`, like the message list) gives the thread with its
 * quarantined messages only.
 */
export async function getThread(
  ctx: ServiceContext,
  inboxId: string,
  threadId: string,
  includeBody = false,
  quarantined = false,
): Promise<{ thread: ThreadRow; messages: MessageListRow[]; truncated: boolean }> {
  assertInboxAllowed(ctx, inboxId);
  const thread = await ctx.db
    .select()
    .from(threads)
    .where(and(eq(threads.id, threadId), eq(threads.inboxId, inboxId), eq(threads.accountId, ctx.accountId)))
    .get();
  if (!thread) throw new NotFound("Thread");
  const rows = await ctx.db
    .select(messageListColumns(includeBody))
    .from(messages)
    .where(
      and(
        eq(messages.threadId, threadId),
        eq(messages.accountId, ctx.accountId),
        quarantined ? hasLabel(QUARANTINE_LABEL) : notQuarantined(),
      ),
    )
    .orderBy(asc(messages.id))
    .limit(THREAD_MESSAGES_LIMIT + 1)
    .all();
  if (rows.length === 0 && !quarantined) throw new NotFound("Thread");
  // With bodies, the same budget as a list page: the rest is paged through the message list.
  const kept = bodyBudgetPageOf(rows, THREAD_MESSAGES_LIMIT).items;
  return { thread, messages: kept, truncated: rows.length > kept.length };
}

/** Wire shape of a thread. */
export function toThreadWire(row: ThreadRow): z.infer<typeof ThreadWire> {
  return {
    id: row.id,
    inbox_id: row.inboxId,
    subject: row.subject,
    participants: row.participants,
    message_count: row.messageCount,
    last_message_at: iso(row.lastMessageAt),
    labels: row.labels,
    created_at: iso(row.createdAt),
    updated_at: iso(row.updatedAt),
  };
}

/** Wire shape of a thread with its messages (the route's `data` and the get_thread tool's result). */
export function toThreadWithMessagesWire({ thread, messages, truncated }: Awaited<ReturnType<typeof getThread>>) {
  return { ...toThreadWire(thread), messages: messages.map(toMessageListWire), messages_truncated: truncated };
}
