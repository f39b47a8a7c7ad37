import { z } from "@hono/zod-openapi";
import { CONTROL_CHARS } from "../../mail/address";
import type { MailAddress } from "../../mail/compose";
import { MessageParams, SettableLabel } from "../messages/messages.schemas";

/** Most recipients (to + cc + bcc) of one message: Cloudflare Email Service's limit too. */
export const MAX_RECIPIENTS = 50;
/** Largest message accepted for sending, all of it (headers, bodies, encoded attachments). */
export const MAX_OUTBOUND_BYTES = 5 * 1024 * 1024;
/** Largest JSON body a send route reads: 5 MiB of attachments is ~6.7 MiB as base64. */
export const SEND_BODY_LIMIT_BYTES = 8 * 1024 * 1024;

/** `ana@example.com` or `Ana <ana@example.com>` → bare lower-case address and display name. */
export function parseAddress(input: string): MailAddress | null {
  const text = input.trim();
  const m = /^(?:"?([^"<]*?)"?\s*)?<([^<>\s]+)>$/.exec(text);
  const address = (m ? m[2] : text)?.trim() ?? "";
  const name = m?.[1]?.trim() || null;
  if (name && CONTROL_CHARS.test(name)) return null;
  const at = address.lastIndexOf("@");
  if (at <= 0 || at === address.length - 1 || address.length > 254) return null;
  const local = address.slice(0, at);
  if (!/^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$/.test(local) || local.startsWith(".") || local.endsWith(".")) {
    return null;
  }
  if (local.includes("..")) return null;
  // International domain names go out as punycode (A-labels), which every MTA accepts.
  let domain: string;
  try {
    domain = new URL(`http://${address.slice(at + 1)}`).hostname;
  } catch {
    return null;
  }
  if (!/^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}[a-z0-9]$/.test(domain)) return null;
  return { address: `${local}@${domain}`.toLowerCase(), name: name && name.length <= 200 ? name : null };
}

const Address = z
  .string()
  .max(512)
  .transform((v, ctx) => {
    const parsed = parseAddress(v);
    if (!parsed) {
      ctx.addIssue({ code: "custom", message: `Not a valid email address: ${JSON.stringify(v.slice(0, 100))}` });
      return z.NEVER;
    }
    return parsed;
  })
  .openapi({ type: "string", example: "Ana <ana@example.com>" });

const AddressList = z.array(Address).max(MAX_RECIPIENTS);

/** Standard base64 (padding optional, line breaks allowed); refused rather than silently decoded. */
const Base64 = z
  .string()
  .transform((v) => v.replace(/[\r\n\t ]/g, ""))
  // Padding, when present, must complete a 4-character group ("ab=" and "abcde=" decode to
  // nothing a decoder agrees on: they were a 500 at send time instead of a 422 here).
  .refine(
    (v) => /^[A-Za-z0-9+/]*={0,2}$/.test(v) && v.length % 4 !== 1 && (v.length % 4 === 0 || !v.includes("=")),
    "Must be standard base64",
  )
  .openapi({ type: "string", format: "byte" });

export const AttachmentInput = z
  .object({
    filename: z
      .string()
      .trim()
      .min(1)
      .max(255)
      .refine(
        (v) => ![...v].some((ch) => ch.charCodeAt(0) < 0x20 || ch === "\u007f" || ch === "/" || ch === "\\"),
        "No control characters or path separators",
      ),
    content: Base64.openapi({ description: "The file's bytes, base64-encoded" }),
    content_type: z
      .string()
      .trim()
      .toLowerCase()
      .regex(/^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/, "Must be a MIME type like application/pdf")
      .default("application/octet-stream"),
    content_id: z
      .string()
      .trim()
      .regex(/^<?[\x21-\x3b\x3d\x3f-\x7e]{1,200}>?$/, "A Content-ID such as logo@example")
      .optional()
      .openapi({ description: "Makes the attachment inline, referenced from HTML as `cid:<content_id>`" }),
  })
  .strict();

const Labels = z.array(SettableLabel).max(50);

/** Who wrote the message: an agent's mail carries `Auto-Submitted` (RFC 3834) and counts toward loop protection. */
const WrittenBy = z.enum(["agent", "human"]).optional().openapi({
  description:
    "`agent` (default): the message carries `Auto-Submitted: auto-generated` (`auto-replied` when it answers automatic mail) and replies count toward the inbox's loop limit. `human`: a person wrote it; no header, never refused as a loop.",
});

/**
 * Headers a caller may not set: they would spoof the sender, forge authentication results or
 * routing, or they are written from the request's own fields.
 */
const REFUSED_HEADERS = new Set([
  "from",
  "sender",
  "to",
  "cc",
  "bcc",
  "reply-to",
  "subject",
  "date",
  "message-id",
  "in-reply-to",
  "references",
  "mime-version",
  "content-type",
  "content-transfer-encoding",
  "content-disposition",
  "return-path",
  "received",
  "received-spf",
  "authentication-results",
  "arc-authentication-results",
  "arc-message-signature",
  "arc-seal",
  "dkim-signature",
  "domainkey-signature",
  "delivered-to",
  "envelope-to",
  "x-original-to",
  "resent-from",
  "resent-sender",
  "resent-to",
  "resent-cc",
  "resent-bcc",
  "resent-date",
  "resent-message-id",
  "x-mailbot-signature",
]);

export const CustomHeaders = z
  .record(
    z.string().regex(/^[!-9;-~]{1,100}$/, "Header names are 1–100 printable ASCII characters without ':'"),
    z
      .string()
      .max(2048)
      .refine((v) => !CONTROL_CHARS.test(v), "Header values cannot contain line breaks or control characters"),
  )
  .superRefine((headers, ctx) => {
    const names = Object.keys(headers);
    if (names.length > 30) ctx.addIssue({ code: "custom", message: "At most 30 custom headers" });
    for (const name of names) {
      const lower = name.toLowerCase();
      if (REFUSED_HEADERS.has(lower) || lower.startsWith("resent-") || lower.startsWith("arc-")) {
        ctx.addIssue({
          code: "custom",
          path: [name],
          message: `The ${name} header cannot be set: it is written by mailbot (use the request's fields) or would spoof the sender or routing`,
        });
      }
    }
  })
  .openapi({ example: { "X-Campaign": "onboarding" } });

/** A message needs a text or an HTML body (a text part is made from HTML-only mail). */
const hasBody = (v: { body_text?: string | undefined; body_html?: string | undefined }) =>
  v.body_text !== undefined || v.body_html !== undefined;
const NEEDS_BODY = { message: "Give body_text, body_html or both", path: ["body_text"] };

export const SendMessageInput = z
  .object({
    to: AddressList.min(1),
    cc: AddressList.default([]),
    bcc: AddressList.default([]),
    reply_to: Address.optional(),
    subject: z
      .string()
      .max(998)
      .refine((v) => !CONTROL_CHARS.test(v), "Subject cannot contain line breaks or control characters"),
    body_text: z.string().optional(),
    body_html: z.string().optional(),
    attachments: z.array(AttachmentInput).max(20).default([]),
    headers: CustomHeaders.optional(),
    labels: Labels.optional(),
    written_by: WrittenBy,
  })
  .strict()
  .refine(hasBody, NEEDS_BODY)
  .openapi("SendMessageInput");

export const ReplyToMessageInput = z
  .object({
    body_text: z.string().optional(),
    body_html: z.string().optional(),
    reply_all: z.boolean().default(false),
    attachments: z.array(AttachmentInput).max(20).default([]),
    headers: CustomHeaders.optional(),
    labels: Labels.optional(),
    written_by: WrittenBy,
  })
  .strict()
  .refine(hasBody, NEEDS_BODY)
  .openapi("ReplyInput");

export const ForwardInput = z
  .object({
    to: AddressList.min(1),
    cc: AddressList.default([]),
    body_text: z.string().optional().openapi({ description: "A note above the forwarded message" }),
    body_html: z.string().optional(),
    labels: Labels.optional(),
    written_by: WrittenBy,
  })
  .strict()
  .openapi("ForwardInput");

export const MessageIdParam = MessageParams.pick({ message_id: true });

export type SendMessageInput = z.infer<typeof SendMessageInput>;
export type ReplyToMessageInput = z.infer<typeof ReplyToMessageInput>;
export type ForwardInput = z.infer<typeof ForwardInput>;
export type AttachmentInput = z.infer<typeof AttachmentInput>;
