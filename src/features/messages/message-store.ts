/**
 * The message store shared by inbound and outbound: R2 keys of a message's objects and where a
 * body lives. Every key starts with the account id, so an account's mail can be listed, exported
 * or deleted by prefix.
 */
import type { Bindings } from "../../env";

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
