import { z } from "@hono/zod-openapi";
import { PageQuery } from "../../lib/pagination";
import { Timestamp } from "../../lib/wire";

export const Label = z.string().trim().min(1).max(64);

/**
 * A label a caller may set or remove: any but `quarantine`, which only screening sets and only
 * `POST …/release` removes (the release is audited and folds the message into its thread).
 */
export const SettableLabel = Label.refine((l) => l.toLowerCase() !== "quarantine", {
  message: "The quarantine label is set by screening; release a held message with POST …/messages/{id}/release.",
});
export const IdOf = (prefix: string, example: string) =>
  z
    .string()
    .regex(new RegExp(`^${prefix}_[0-9a-z]{26}$`), `Must be a ${prefix}_… id`)
    .openapi({ example });

export const MessageParams = z.object({
  inbox_id: IdOf("inbox", "inbox_01jd2x0000000000000000000").openapi({ param: { name: "inbox_id", in: "path" } }),
  message_id: IdOf("msg", "msg_01jd2x0000000000000000000").openapi({ param: { name: "message_id", in: "path" } }),
});

export const AttachmentParams = MessageParams.extend({
  attachment_id: IdOf("att", "att_01jd2x0000000000000000000").openapi({
    param: { name: "attachment_id", in: "path" },
  }),
});

export const InboxParam = MessageParams.pick({ inbox_id: true });

/** A time filter: ISO-8601 date-time (or date) on the wire, epoch ms inside. */
const TimeParam = z
  .string()
  .refine((v) => !Number.isNaN(Date.parse(v)), "Must be an ISO-8601 date-time")
  .transform((v) => Date.parse(v))
  .openapi({ type: "string", example: "2026-03-15T10:30:00.000Z" });

/** `?include=body`: a list carries the bodies too (each at most 384 KiB; larger ones say `body_omitted`). */
export const IncludeBody = z.enum(["body"]).optional().openapi({
  description:
    "`body` adds `body_text`, `body_html` and `body_omitted` to each message; without it a list carries only `preview`.",
});

export const ListMessagesQuery = PageQuery.extend({
  include: IncludeBody,
  direction: z.enum(["inbound", "outbound"]).optional(),
  label: Label.optional(),
  thread_id: IdOf("thr", "thr_01jd2x0000000000000000000").optional(),
  since: TimeParam.optional(),
  until: TimeParam.optional(),
});

export const SearchMessagesQuery = PageQuery.extend({
  include: IncludeBody,
  q: z.string().trim().min(1).max(200).openapi({ example: "invoice march" }),
});

export const WaitMessagesQuery = z.object({
  direction: z.enum(["inbound", "outbound"]).optional(),
  from_address: z.string().trim().toLowerCase().min(1).max(320).optional(),
  subject_contains: z.string().min(1).max(200).optional(),
  since: TimeParam.optional().openapi({
    description: "Only messages created at or after this time. Defaults to the moment of the call.",
  }),
  timeout_ms: z.coerce.number().int().min(0).max(30_000).default(30_000),
});

export const GetMessageQuery = z.object({
  view: z.enum(["full", "safe"]).optional().openapi({
    description:
      "`safe` adds `safe_text`: plain text a model may read (hidden content removed, invisible characters stripped, suspicious spans fenced and labelled, links as `text <url>`).",
  }),
});

export const ScreeningWire = z
  .object({
    verdict: z.enum(["clean", "suspicious", "dangerous"]),
    score: z.number().int(),
    signals: z.array(
      z.object({
        id: z.string().openapi({ example: "instruction.ignore_previous" }),
        evidence: z.string(),
        weight: z.number().int(),
      }),
    ),
    screened_at: z.string(),
    version: z.string(),
  })
  .openapi("Screening", {
    description:
      "Inbound screening for agents: text a human does not see, invisible characters, instructions aimed at an assistant, exfiltration links, sender trust, encoded payloads, lures. Signal ids are `<family>.<name>`.",
  });

export const PatchMessageInput = z
  .object({
    labels: z.array(SettableLabel).max(50).optional().openapi({ description: "Replaces the labels." }),
    add_labels: z.array(SettableLabel).max(50).optional(),
    remove_labels: z.array(SettableLabel).max(50).optional(),
  })
  .strict()
  .refine((v) => v.labels !== undefined || v.add_labels !== undefined || v.remove_labels !== undefined, {
    message: "Give labels, add_labels or remove_labels",
  })
  .openapi("PatchMessageInput");

export const AttachmentWire = z
  .object({
    id: z.string().openapi({ example: "att_01jd2x0000000000000000000" }),
    filename: z.string().nullable(),
    content_type: z.string(),
    size: z.number().int(),
    content_id: z.string().nullable(),
    disposition: z.enum(["attachment", "inline"]),
  })
  .openapi("Attachment");

export const MessageWire = z
  .object({
    id: z.string().openapi({ example: "msg_01jd2x0000000000000000000" }),
    inbox_id: z.string(),
    thread_id: z.string(),
    direction: z.enum(["inbound", "outbound"]),
    status: z.string().openapi({ description: "inbound: received; outbound: queued … sent | failed" }),
    from_address: z.string().nullable(),
    from_name: z.string().nullable(),
    to: z.array(z.string()),
    cc: z.array(z.string()),
    bcc: z.array(z.string()).openapi({ description: "Outbound only: the blind copies (never in the headers sent)" }),
    reply_to: z.string().nullable(),
    subject: z.string().nullable(),
    body_text: z.string().nullable().openapi({ description: "Untrusted content written by a third party." }),
    body_html: z.string().nullable().openapi({ description: "Untrusted content written by a third party." }),
    body_omitted: z.boolean().openapi({
      description: "True in lists when a body is too large to include (over 384 KiB): GET the message for it.",
    }),
    preview: z.string().openapi({
      description:
        "The first 200 characters of the text (the HTML's visible text when there is no text part), whitespace folded. Untrusted content written by a third party.",
    }),
    headers: z.record(z.string(), z.union([z.string(), z.array(z.string())])),
    headers_truncated: z.boolean(),
    rfc_message_id: z.string().nullable(),
    in_reply_to: z.string().nullable(),
    references: z.array(z.string()),
    labels: z.array(z.string()),
    attachments: z.array(AttachmentWire),
    size: z.number().int(),
    authentication: z
      .object({
        spf: z.string().nullable(),
        dkim: z.string().nullable(),
        dmarc: z.string().nullable(),
        authserv_id: z.string(),
      })
      .nullable(),
    screening: ScreeningWire.nullable().openapi({
      description: "Inbound: the screening verdict (null for outbound mail).",
    }),
    safe_text: z.string().optional().openapi({ description: "Only with `?view=safe` (and in MCP tools by default)." }),
    auto_submitted: z.boolean().openapi({
      description: "True for auto-replies, bounces, reports and bulk/list mail: do not answer these automatically.",
    }),
    auto_submitted_reason: z.string().nullable(),
    report_type: z.enum(["delivery_status", "feedback"]).nullable(),
    parse_error: z.string().nullable().openapi({
      description: "Set when the MIME could not be parsed; the raw message is still stored and downloadable.",
    }),
    error: z.string().nullable().openapi({
      description: "Outbound: why the last delivery attempt failed (the reason of a `failed` message)",
    }),
    attempts: z.number().int().openapi({ description: "Outbound: delivery attempts made so far" }),
    envelope_from: z.string().nullable(),
    envelope_to: z.string().nullable(),
    created_at: Timestamp,
    updated_at: Timestamp,
    sent_at: Timestamp.nullable(),
    received_at: Timestamp.nullable(),
    complained_at: Timestamp.nullable().openapi({
      description: "Outbound: when a recipient reported the message as spam (ARF or relay complaint)",
    }),
    dropped_recipients: z.array(z.object({ address: z.string(), reason: z.string() })).openapi({
      description:
        "Outbound: recipients left out when the send was accepted, and why (`suppressed_hard_bounce`, `suppressed_complaint`)",
    }),
    bounce_addresses: z
      .record(z.string(), z.string())
      .nullable()
      .openapi({
        description:
          "Outbound: recipient → the bounce address (envelope sender) its copy was sent with, carrying an HMAC token over message and recipient; a delivery status notification counts only for the recipient whose address it came back to. Empty when the transport owns the envelope (Cloudflare Email Service reports its own bounces). Null for inbound messages.",
        example: {
          "ana@example.com": "agent--k3x9+msg_01jd2x0000000000000000000.3f9a0c1d2e4b5a697788@mail.example.com",
        },
      }),
    recipient_states: z
      .record(z.string(), z.enum(["pending", "accepted", "refused", "failed"]))
      .nullable()
      .openapi({
        description:
          "Outbound: recipient → where its copy stands. `pending` (not delivered yet: a transient refusal is retried for that recipient alone, the message stays `queued` meanwhile), `accepted` (our inbox or the transport took it), `refused` (refused for good), `failed` (still refused when the retries ran out). Null for inbound messages.",
        example: { "ana@example.com": "accepted", "bo@example.com": "pending" },
      }),
  })
  .openapi("Message");

/**
 * A message in a list (messages, search, a thread's messages, the MCP list tools): `preview`
 * instead of the bodies, which come from the single GET or with `?include=body`.
 */
export const MessageListItemWire = MessageWire.omit({ body_text: true, body_html: true, body_omitted: true })
  .extend({
    body_text: z.string().nullable().optional().openapi({ description: "Only with `?include=body`." }),
    body_html: z.string().nullable().optional().openapi({ description: "Only with `?include=body`." }),
    body_omitted: z.boolean().optional().openapi({
      description: "Only with `?include=body`: true when a body is over 384 KiB (GET the message for it).",
    }),
  })
  .openapi("MessageListItem");
