import type { z } from "@hono/zod-openapi";
import { and, asc, desc, eq, getTableColumns, gte, lt, lte, not, type SQL, sql } from "drizzle-orm";
import { type AttachmentRow, attachments, inboxes, type MessageRow, messages, threads } from "../../db/schema";
import type { ServiceContext } from "../../lib/context";
import { Conflict, NotFound, WaitTimeout } from "../../lib/errors";
import { idFloor } from "../../lib/ids";
import { type Page, pageOf } from "../../lib/pagination";
import { iso } from "../../lib/time";
import { commitWithAudit } from "../audit/audit.service";
import { safeText } from "../screening/screener";
import { PARTICIPANT_LIMIT, unionCapped } from "../threads/threading";
import type { MessageListItemWire, MessageWire, PatchMessageInput, WaitMessagesQuery } from "./messages.schemas";

/** Longest time between minting a message id and writing its row (a 25 MiB parse included). */
const RECEIVE_SLACK_MS = 60_000;

/** A restricted key sees only its inboxes; anything else is a plain 404. */
export function assertInboxAllowed(ctx: ServiceContext, inboxId: string): void {
  if (ctx.inboxIds && !ctx.inboxIds.includes(inboxId)) throw new NotFound("Inbox");
}

/** 404 unless the inbox belongs to the caller (and the key may use it). */
export async function requireInbox(ctx: ServiceContext, inboxId: string): Promise<void> {
  assertInboxAllowed(ctx, inboxId);
  const row = await ctx.db
    .select({ id: inboxes.id })
    .from(inboxes)
    .where(and(eq(inboxes.id, inboxId), eq(inboxes.accountId, ctx.accountId)))
    .get();
  if (!row) throw new NotFound("Inbox");
}

/**
 * What a list reads of a message: everything but the bodies and the search columns, so a page of
 * 20 large mails costs what a page of small ones does (the stored `preview` stands in for the text).
 */
const {
  bodyText: _bodyText,
  bodyHtml: _bodyHtml,
  searchText: _searchText,
  searchAddresses: _searchAddresses,
  ...listColumns
} = getTableColumns(messages);
const listColumnsWithBodies = { ...listColumns, bodyText: messages.bodyText, bodyHtml: messages.bodyHtml };

/** A listed message: bodies only when the caller asked for them (`?include=body`). */
export type MessageListRow = Omit<MessageRow, "bodyText" | "bodyHtml" | "searchText" | "searchAddresses"> & {
  bodyText?: string | null;
  bodyHtml?: string | null;
};

/**
 * Most body text (characters of body_text + body_html) one list page carries with `include=body`:
 * 100 items of up to 384 KiB each would be ~75 MiB to serialize (and, over MCP, to turn into
 * safe_text: seconds of CPU). A page stops before the item that would pass it (the first item
 * always comes) and its next_cursor resumes right after the last item it carries.
 */
export const LIST_BODY_BUDGET = 1024 * 1024;

/** pageOf, stopping early once the bodies carried reach LIST_BODY_BUDGET (a no-op without bodies). */
export function bodyBudgetPageOf<T extends MessageListRow>(
  rows: T[],
  limit: number,
): { items: T[]; nextCursor: string | null } {
  const end = Math.min(rows.length, limit);
  let spent = 0;
  for (let i = 0; i < end; i++) {
    const row = rows[i] as T;
    const size = (row.bodyText?.length ?? 0) + (row.bodyHtml?.length ?? 0);
    if (i > 0 && spent + size > LIST_BODY_BUDGET) return pageOf(rows, i);
    spent += size;
  }
  return pageOf(rows, limit);
}

/** The columns of a listed message, with or without the (inline) bodies. */
export const messageListColumns = (includeBody: boolean) => (includeBody ? listColumnsWithBodies : listColumns);

export interface MessageFilters {
  direction?: "inbound" | "outbound" | undefined;
  label?: string | undefined;
  threadId?: string | undefined;
  sinceMs?: number | undefined;
  untilMs?: number | undefined;
}

export const hasLabel = (label: string) =>
  sql`EXISTS (SELECT 1 FROM json_each(${messages.labels}) WHERE value = ${label})`;
/** Held by the inbox's screening policy: out of lists, search and wait until released. */
export const QUARANTINE_LABEL = "quarantine";
export const notQuarantined = () => not(hasLabel(QUARANTINE_LABEL));

/** Newest-first page of an inbox's messages. Time filters become a range on the (inbox_id, id) index. */
export async function listMessages(
  ctx: ServiceContext,
  inboxId: string,
  filters: MessageFilters,
  page: Page,
  includeBody = false,
): Promise<MessageListRow[]> {
  await requireInbox(ctx, inboxId);
  const where: SQL[] = [eq(messages.inboxId, inboxId), eq(messages.accountId, ctx.accountId)];
  if (filters.direction) where.push(eq(messages.direction, filters.direction));
  if (filters.threadId) where.push(eq(messages.threadId, filters.threadId));
  if (filters.label) where.push(hasLabel(filters.label));
  // Quarantined mail shows only to a list that asks for it by its label.
  if (filters.label !== QUARANTINE_LABEL) where.push(notQuarantined());
  // created_at decides; the id range (ids are minted a little before created_at) lets the
  // (inbox_id, id) index skip everything else.
  if (filters.sinceMs !== undefined) {
    where.push(
      gte(messages.id, idFloor("msg", filters.sinceMs - RECEIVE_SLACK_MS)),
      gte(messages.createdAt, filters.sinceMs),
    );
  }
  if (filters.untilMs !== undefined) {
    where.push(lt(messages.id, idFloor("msg", filters.untilMs + 1)), lte(messages.createdAt, filters.untilMs));
  }
  if (page.before) where.push(lt(messages.id, page.before));
  return ctx.db
    .select(messageListColumns(includeBody))
    .from(messages)
    .where(and(...where))
    .orderBy(desc(messages.id))
    .limit(page.limit + 1)
    .all();
}

/** One message of one of the caller's inboxes; 404 for anything else. */
export async function getMessage(ctx: ServiceContext, inboxId: string, messageId: string): Promise<MessageRow> {
  assertInboxAllowed(ctx, inboxId);
  const row = await ctx.db
    .select()
    .from(messages)
    .where(and(eq(messages.id, messageId), eq(messages.accountId, ctx.accountId), eq(messages.inboxId, inboxId)))
    .get();
  if (!row) throw new NotFound("Message");
  return row;
}

/** Replaces, adds or removes labels; the thread's labels follow. Audited. */
export async function patchMessage(
  ctx: ServiceContext,
  inboxId: string,
  messageId: string,
  patch: z.infer<typeof PatchMessageInput>,
): Promise<MessageRow> {
  const current = await getMessage(ctx, inboxId, messageId);
  const now = ctx.now();
  // Computed in SQL from the row as it is at write time, so two agents adding labels at once
  // both keep theirs (first appearance order, no duplicates, at most 50).
  // Replacing the labels keeps `quarantine` (no caller can set or remove it: only a release does).
  const base =
    patch.labels === undefined
      ? sql`${messages.labels}`
      : sql`(SELECT json_group_array(value) FROM (SELECT value FROM json_each(${messages.labels}) WHERE value = ${QUARANTINE_LABEL} UNION ALL SELECT value FROM json_each(${JSON.stringify(patch.labels)})))`;
  const next = sql`(SELECT json_group_array(value) FROM (
    SELECT value FROM (
      SELECT value, key AS k FROM json_each(${base})
      UNION ALL SELECT value, 1000 + key FROM json_each(${JSON.stringify(patch.add_labels ?? [])})
    )
    WHERE value NOT IN (SELECT value FROM json_each(${JSON.stringify(patch.remove_labels ?? [])}))
    GROUP BY value ORDER BY min(k) LIMIT 50))`;
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(messages)
        .set({ labels: next, updatedAt: now })
        .where(and(eq(messages.id, messageId), eq(messages.accountId, ctx.accountId))),
      // A thread is labelled with the union of its messages' labels.
      ctx.db
        .update(threads)
        .set({
          labels: sql`(SELECT json_group_array(DISTINCT j.value) FROM ${messages} m, json_each(m.labels) j WHERE m.thread_id = ${threads.id} AND m.account_id = ${ctx.accountId})`,
          updatedAt: now,
        })
        .where(and(eq(threads.id, current.threadId), eq(threads.accountId, ctx.accountId))),
    ],
    [
      {
        action: "message.labels_updated",
        target: { type: "message", id: messageId },
        inboxId,
        metadata: { before: current.labels, ...patch },
      },
    ],
  );
  return getMessage(ctx, inboxId, messageId);
}

/**
 * Turns free text into an FTS5 query for one inbox: every word must appear in the subject, body
 * or addresses (each quoted as a phrase, so FTS operators in the input are inert), and the inbox
 * column narrows the match inside the index itself.
 */
export function ftsQuery(inboxId: string, q: string): string | null {
  const words = q.match(/[\p{L}\p{N}][\p{L}\p{N}@._+'-]*/gu) ?? [];
  if (words.length === 0) return null;
  const terms = words
    .slice(0, 20)
    .map((w) => `"${w.replace(/"/g, '""')}"`)
    .join(" ");
  return `inbox_id : "${inboxId}" AND {subject search_text search_addresses} : (${terms})`;
}

/** Full-text search (subject, body, addresses) in one inbox, newest first. */
export async function searchMessages(
  ctx: ServiceContext,
  inboxId: string,
  q: string,
  page: Page,
  includeBody = false,
): Promise<MessageListRow[]> {
  await requireInbox(ctx, inboxId);
  const match = ftsQuery(inboxId, q);
  if (!match) return [];
  const where: SQL[] = [
    eq(messages.inboxId, inboxId),
    eq(messages.accountId, ctx.accountId),
    sql`${messages}.rowid IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ${match})`,
    notQuarantined(),
  ];
  if (page.before) where.push(lt(messages.id, page.before));
  return ctx.db
    .select(messageListColumns(includeBody))
    .from(messages)
    .where(and(...where))
    .orderBy(desc(messages.id))
    .limit(page.limit + 1)
    .all();
}

export interface WaitFilters {
  direction?: "inbound" | "outbound" | undefined;
  fromAddress?: string | undefined;
  subjectContains?: string | undefined;
  sinceMs: number;
  timeoutMs: number;
}

/**
 * Long-poll: the oldest message at or after `since` that matches, as soon as one exists; null
 * after `timeoutMs`. Polls D1 with a short, growing interval (a request that waits costs no CPU).
 */
export async function pollForMessage(
  ctx: ServiceContext,
  inboxId: string,
  filters: WaitFilters,
  signal?: AbortSignal,
): Promise<MessageRow | null> {
  await requireInbox(ctx, inboxId);
  const where: SQL[] = [
    eq(messages.inboxId, inboxId),
    eq(messages.accountId, ctx.accountId),
    // Ids are minted when receiving starts and created_at when the row is written: the id range
    // uses the index, created_at decides.
    gte(messages.id, idFloor("msg", filters.sinceMs - RECEIVE_SLACK_MS)),
    gte(messages.createdAt, filters.sinceMs),
    notQuarantined(),
  ];
  if (filters.direction) where.push(eq(messages.direction, filters.direction));
  if (filters.fromAddress) where.push(eq(messages.fromAddress, filters.fromAddress));
  if (filters.subjectContains) {
    where.push(sql`instr(lower(coalesce(${messages.subject}, '')), lower(${filters.subjectContains})) > 0`);
  }
  const deadline = Date.now() + filters.timeoutMs;
  let interval = 200;
  for (;;) {
    const row = await ctx.db
      .select()
      .from(messages)
      .where(and(...where))
      .orderBy(asc(messages.id))
      .limit(1)
      .get();
    if (row) return row;
    const left = deadline - Date.now();
    if (left <= 0 || signal?.aborted) return null;
    await new Promise((resolve) => setTimeout(resolve, Math.min(interval, left)));
    interval = Math.min(interval * 1.5, 1000);
  }
}

/**
 * The wait endpoint's verb (route and MCP tool): the first matching message with its bodies, or
 * 408 `wait_timeout` after `timeout_ms`. `since` defaults to the moment of the call.
 */
export async function waitForMessage(
  ctx: ServiceContext,
  inboxId: string,
  query: z.output<typeof WaitMessagesQuery>,
  signal?: AbortSignal,
): Promise<MessageRow> {
  const row = await pollForMessage(
    ctx,
    inboxId,
    {
      direction: query.direction,
      fromAddress: query.from_address,
      subjectContains: query.subject_contains,
      sinceMs: query.since ?? ctx.now(),
      timeoutMs: query.timeout_ms,
    },
    signal,
  );
  if (!row) throw new WaitTimeout(`No matching message arrived within ${query.timeout_ms} ms.`);
  return withBodies(ctx, row);
}

/** The stored raw bytes of a message (exactly what was received or sent). */
export async function getRaw(ctx: ServiceContext, inboxId: string, messageId: string): Promise<R2ObjectBody> {
  const row = await getMessage(ctx, inboxId, messageId);
  const obj = await ctx.env.MAIL_BUCKET.get(row.rawKey);
  if (!obj) throw new NotFound("Raw message");
  return obj;
}

/** One attachment's metadata and bytes. */
export async function getAttachment(
  ctx: ServiceContext,
  inboxId: string,
  messageId: string,
  attachmentId: string,
): Promise<{ row: AttachmentRow; body: R2ObjectBody }> {
  assertInboxAllowed(ctx, inboxId);
  const row = await ctx.db
    .select()
    .from(attachments)
    .where(
      and(
        eq(attachments.id, attachmentId),
        eq(attachments.messageId, messageId),
        eq(attachments.inboxId, inboxId),
        eq(attachments.accountId, ctx.accountId),
      ),
    )
    .get();
  if (!row) throw new NotFound("Attachment");
  const body = await ctx.env.MAIL_BUCKET.get(row.r2Key);
  if (!body) throw new NotFound("Attachment");
  return { row, body };
}

/**
 * Bodies kept in R2 (too large for a row) are read back for the wire. Only single-message
 * responses do this; lists say `body_omitted` instead, so one page can never pull megabytes.
 */
export async function withBodies(ctx: ServiceContext, row: MessageRow): Promise<MessageRow> {
  if (!row.bodyTextKey && !row.bodyHtmlKey) return row;
  const read = async (key: string | null, inline: string | null) =>
    key ? ((await (await ctx.env.MAIL_BUCKET.get(key))?.text()) ?? null) : inline;
  return {
    ...row,
    bodyText: await read(row.bodyTextKey, row.bodyText),
    bodyHtml: await read(row.bodyHtmlKey, row.bodyHtml),
  };
}

/**
 * Releases a quarantined message: the label goes, the message joins lists, `wait` and the MCP
 * tools. Audited (`message.released`, with the verdict it was held for). 409 `not_quarantined`
 * when it is not held.
 */
export async function releaseMessage(ctx: ServiceContext, inboxId: string, messageId: string): Promise<MessageRow> {
  const current = await getMessage(ctx, inboxId, messageId);
  if (!current.labels.includes(QUARANTINE_LABEL)) {
    throw new Conflict("not_quarantined", "The message is not quarantined.");
  }
  const labels = current.labels.filter((l) => l !== QUARANTINE_LABEL);
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(messages)
        .set({
          labels: sql`(SELECT json_group_array(value) FROM json_each(${messages.labels}) WHERE value != ${QUARANTINE_LABEL})`,
          updatedAt: ctx.now(),
        })
        .where(and(eq(messages.id, messageId), eq(messages.accountId, ctx.accountId))),
      // Held mail was kept out of its thread's count, activity and participants (threadStatement):
      // released, it joins them.
      ctx.db
        .update(threads)
        .set({
          labels: sql`(SELECT json_group_array(DISTINCT j.value) FROM ${messages} m, json_each(m.labels) j WHERE m.thread_id = ${threads.id} AND m.account_id = ${ctx.accountId})`,
          // Counted, not incremented: two releases racing, or a thread written before held mail
          // stopped counting, still end with the number of visible messages.
          messageCount: sql`(SELECT COUNT(*) FROM ${messages} WHERE ${messages.threadId} = ${threads.id} AND ${messages.accountId} = ${ctx.accountId} AND ${notQuarantined()})`,
          lastMessageAt: sql`max(${threads.lastMessageAt}, ${current.createdAt})`,
          // A thread started by held mail has no subject until one of its messages is visible.
          subject: sql`coalesce(${threads.subject}, ${current.subject})`,
          participants: unionCapped(
            threads.participants,
            [
              ...new Set([current.fromAddress, ...current.to, ...current.cc].filter((a): a is string => Boolean(a))),
            ].slice(0, PARTICIPANT_LIMIT),
            PARTICIPANT_LIMIT,
          ),
          updatedAt: ctx.now(),
        })
        .where(and(eq(threads.id, current.threadId), eq(threads.accountId, ctx.accountId))),
    ],
    [
      {
        action: "message.released",
        target: { type: "message", id: messageId },
        inboxId,
        metadata: {
          verdict: current.screening?.verdict ?? null,
          score: current.screening?.score ?? null,
          signals: current.screening?.signals.map((s) => s.id) ?? [],
        },
      },
    ],
  );
  return { ...current, labels };
}

/** The safe text view of a message (bodies must be loaded: see `withBodies`). */
export function safeTextOf(row: MessageRow): string {
  return safeText({ text: row.bodyText, html: row.bodyHtml });
}

/**
 * What an agent reads over MCP: the screening verdict first, then `safe_text` instead of the
 * bodies unless it asked for the raw fields. The bodies of inbound mail are a third party's words
 * in a model's context; the safe view keeps what a human saw and fences what looks like orders.
 */
export function forAgent(row: MessageRow, raw: boolean): z.infer<typeof MessageWire> {
  const wire = toMessageWire(row);
  // Built in this key order so the JSON an agent reads starts with the verdict.
  if (raw) return Object.assign({ screening: wire.screening }, wire);
  return Object.assign({ screening: wire.screening, safe_text: safeTextOf(row) }, wire, {
    body_text: null,
    body_html: null,
  });
}

/** Quarantined mail is out of the MCP tools' reach until released over HTTP (a 404, like another account's). */
export function notHeld(row: MessageRow): MessageRow {
  if (row.labels.includes(QUARANTINE_LABEL)) throw new NotFound("Message");
  return row;
}

/**
 * A listed message as an agent reads it over MCP: the lean list item (preview, verdict); when the
 * bodies were asked for (`include: "body"`), they come as safe_text unless `raw`.
 */
export function listedForAgent(row: MessageListRow, raw: boolean): z.infer<typeof MessageListItemWire> {
  const wire = toMessageListWire(row);
  if (raw || (row.bodyText === undefined && row.bodyHtml === undefined)) return wire;
  return Object.assign(
    {
      screening: row.screening ?? null,
      safe_text: safeText({ text: row.bodyText ?? null, html: row.bodyHtml ?? null }),
    },
    wire,
    {
      body_text: null,
      body_html: null,
    },
  );
}

/** Wire shape of a message (single responses: the bodies, and the preview too). */
export function toMessageWire(row: MessageRow): z.infer<typeof MessageWire> {
  return {
    ...wireFields(row),
    body_text: row.bodyText,
    body_html: row.bodyHtml,
    body_omitted: bodyOmitted(row),
  };
}

/**
 * Wire shape of a listed message: `preview` and no bodies, unless the row was read with them
 * (`?include=body`), in which case the inline bodies and `body_omitted` are added.
 */
export function toMessageListWire(row: MessageListRow): z.infer<typeof MessageListItemWire> {
  const wire: z.infer<typeof MessageListItemWire> = wireFields(row);
  if (row.bodyText !== undefined || row.bodyHtml !== undefined) {
    wire.body_text = row.bodyText ?? null;
    wire.body_html = row.bodyHtml ?? null;
    wire.body_omitted = bodyOmitted({
      bodyText: row.bodyText ?? null,
      bodyHtml: row.bodyHtml ?? null,
      bodyTextKey: row.bodyTextKey,
      bodyHtmlKey: row.bodyHtmlKey,
    });
  }
  return wire;
}

const bodyOmitted = (row: Pick<MessageRow, "bodyText" | "bodyHtml" | "bodyTextKey" | "bodyHtmlKey">) =>
  (row.bodyTextKey !== null && row.bodyText === null) || (row.bodyHtmlKey !== null && row.bodyHtml === null);

/** Every field of a message but its bodies. */
function wireFields(row: MessageListRow) {
  return {
    id: row.id,
    inbox_id: row.inboxId,
    thread_id: row.threadId,
    direction: row.direction,
    status: row.status,
    from_address: row.fromAddress,
    from_name: row.fromName,
    to: row.to,
    cc: row.cc,
    bcc: row.bcc,
    reply_to: row.replyTo,
    subject: row.subject,
    preview: row.preview,
    headers: row.headers,
    headers_truncated: row.headersTruncated,
    rfc_message_id: row.rfcMessageId,
    in_reply_to: row.inReplyTo,
    references: row.references,
    labels: row.labels,
    attachments: row.attachments,
    size: row.size,
    authentication: row.authentication ?? null,
    screening: row.screening ?? null,
    auto_submitted: row.autoSubmitted !== null,
    auto_submitted_reason: row.autoSubmitted,
    report_type: (row.reportType as "delivery_status" | "feedback" | null) ?? null,
    parse_error: row.parseError,
    error: row.lastError,
    attempts: row.attempts,
    envelope_from: row.envelopeFrom,
    envelope_to: row.envelopeTo,
    created_at: iso(row.createdAt),
    updated_at: iso(row.updatedAt),
    sent_at: iso(row.sentAt),
    received_at: iso(row.receivedAt),
    complained_at: iso(row.complainedAt),
    dropped_recipients: row.droppedRecipients ?? [],
    bounce_addresses: row.direction === "outbound" ? (row.bounceAddresses ?? {}) : null,
    recipient_states: row.direction === "outbound" ? recipientStates(row) : null,
  };
}

function recipientStates(
  row: Pick<MessageRow, "to" | "cc" | "bcc" | "deliveryProgress">,
): Record<string, "pending" | "accepted" | "refused" | "failed"> {
  const progress = row.deliveryProgress ?? {};
  return Object.fromEntries(
    [...new Set([...row.to, ...row.cc, ...row.bcc])].map((r) => [r, progress[r]?.state ?? "pending"]),
  );
}

/** The inbox of one of the account's messages, or null (the reputation-warning middleware). */
export async function inboxOfMessage(ctx: ServiceContext, messageId: string): Promise<string | null> {
  const row = await ctx.db
    .select({ inboxId: messages.inboxId })
    .from(messages)
    .where(and(eq(messages.id, messageId), eq(messages.accountId, ctx.accountId)))
    .get();
  return row?.inboxId ?? null;
}
