/**
 * The message store shared by inbound and outbound: R2 keys of a message's objects and where a
 * body lives. Every key starts with the account id, so an account's mail can be listed, exported
 * or deleted by prefix.
 */
import type { MessageRow } from "../../db/schema";
import type { Bindings } from "../../env";
import { htmlToPlain } from "../../mail/html-text";

/** Bodies above this many bytes go to R2 so a message row stays far below D1's 2 MB. */
export const BODY_INLINE_LIMIT = 384 * 1024;
/** The search index reads at most this much body text per message. */
export const SEARCH_TEXT_LIMIT = 32 * 1024;

const base = (accountId: string, inboxId: string, messageId: string) =>
  `${accountId}/inboxes/${inboxId}/messages/${messageId}`;

export const rawKey = (accountId: string, inboxId: string, messageId: string) =>
  `${base(accountId, inboxId, messageId)}/raw.eml`;

export const attachmentKey = (accountId: string, inboxId: string, messageId: string, attachmentId: string) =>
  `${base(accountId, inboxId, messageId)}/attachments/${attachmentId}`;

export const bodyKey = (accountId: string, inboxId: string, messageId: string, kind: "txt" | "html") =>
  `${base(accountId, inboxId, messageId)}/body.${kind}`;

/** A body inline in the row when small, else in R2 under `key` (recorded in `written`). */
export async function inlineOrR2(
  env: Bindings,
  body: string | null,
  key: string,
  written: string[],
): Promise<{ inline: string | null; key: string | null }> {
  if (body === null) return { inline: null, key: null };
  const bytes = new TextEncoder().encode(body);
  if (bytes.byteLength <= BODY_INLINE_LIMIT) return { inline: body, key: null };
  written.push(key);
  await env.MAIL_BUCKET.put(key, bytes, {
    httpMetadata: { contentType: key.endsWith(".html") ? "text/html; charset=utf-8" : "text/plain; charset=utf-8" },
  });
  return { inline: null, key };
}

/** Characters of text a message list shows instead of the bodies. */
export const PREVIEW_CHARS = 200;

/**
 * The list preview of a text: runs of whitespace folded to one space, trimmed, cut to
 * PREVIEW_CHARS characters (code points, as SQLite's substr counts them in the backfill, so a
 * surrogate pair is never split). Reads only a bounded prefix: folding never lengthens text.
 */
export function previewOf(text: string): string {
  const folded = text
    .slice(0, PREVIEW_CHARS * 64)
    .replace(/\s+/g, " ")
    .trim();
  return Array.from(folded.slice(0, PREVIEW_CHARS * 2))
    .slice(0, PREVIEW_CHARS)
    .join("");
}

/** Longest address list the search index keeps per message. */
const SEARCH_ADDRESSES_LIMIT = 8 * 1024;

/** What every message row must say; the rest has the defaults of a new message. */
export type NewMessageFields = Pick<
  MessageRow,
  | "id"
  | "accountId"
  | "inboxId"
  | "threadId"
  | "direction"
  | "status"
  | "fromAddress"
  | "subject"
  | "rawKey"
  | "dedupeKey"
  | "size"
  | "createdAt"
> &
  Partial<MessageRow>;

/**
 * The one builder of a `messages` row (inbound, outbound, and the test fixtures): defaults for
 * every lifecycle column, and the search columns cut to the index's limits.
 */
export function newMessageRow(fields: NewMessageFields): MessageRow {
  const row: MessageRow = {
    fromName: null,
    to: [],
    cc: [],
    bcc: [],
    replyTo: null,
    bodyText: null,
    bodyHtml: null,
    bodyTextKey: null,
    bodyHtmlKey: null,
    headers: {},
    headersTruncated: false,
    rfcMessageId: null,
    inReplyTo: null,
    references: [],
    labels: [],
    attachments: [],
    authentication: null,
    screening: null,
    autoSubmitted: null,
    reportType: null,
    parseError: null,
    envelopeFrom: null,
    envelopeTo: null,
    searchText: "",
    searchAddresses: "",
    preview: "",
    complainedAt: null,
    droppedRecipients: null,
    bounceAddresses: null,
    deliveryProgress: null,
    attempts: 0,
    lastError: null,
    leaseUntil: null,
    providerMessageId: null,
    updatedAt: fields.createdAt,
    sentAt: null,
    receivedAt: null,
    ...fields,
  };
  row.searchText = row.searchText.slice(0, SEARCH_TEXT_LIMIT);
  row.searchAddresses = row.searchAddresses.slice(0, SEARCH_ADDRESSES_LIMIT);
  // Derived here, once, from the text the index reads (the text part, else the HTML's visible
  // text), so inbound and outbound rows can't disagree on what a list shows.
  if (fields.preview === undefined) {
    row.preview = previewOf(row.searchText || (row.bodyHtml ? htmlToPlain(row.bodyHtml, PREVIEW_CHARS * 64) : ""));
  }
  return row;
}
