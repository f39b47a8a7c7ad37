import { z } from "@hono/zod-openapi";

export const RelayEvent = z
  .object({
    type: z.enum(["bounce", "complaint"]),
    message_id: z
      .string()
      .regex(/^msg_[0-9a-z]{26}$/)
      .optional()
      .openapi({
        description:
          "Our message id (also the local part of the Message-ID we sent, and the `+msg_…` tag of the bounce address)",
      }),
    rfc_message_id: z.string().min(3).max(998).optional().openapi({
      description: "The Message-ID header of the mail, when `message_id` is not known",
      example: "<msg_01jd2x0000000000000000000@mail.example.com>",
    }),
    recipient: z
      .string()
      .trim()
      .toLowerCase()
      .min(3)
      .max(320)
      .regex(/^[^@\s]+@[^@\s]+$/, "Must be an email address"),
    bounce_type: z.enum(["hard", "soft"]).default("hard").openapi({
      description:
        "Bounces only; hard is permanent. A hard bounce whose `status_code` is not mailbox-level (RFC 3463 5.1.x, 5.2.0-5.2.2: e.g. 5.7.x policy, 5.4.x routing) is recorded as soft: it does not count or suppress",
    }),
    status_code: z
      .string()
      .regex(/^[245]\.\d{1,3}\.\d{1,3}$/)
      .optional()
      .openapi({ description: "Enhanced status code (RFC 3463)", example: "5.1.1" }),
    diagnostic: z.string().max(1000).optional(),
    feedback_type: z
      .string()
      .max(64)
      .optional()
      .openapi({ description: "Complaints: ARF feedback type", example: "abuse" }),
  })
  .refine((e) => e.message_id !== undefined || e.rfc_message_id !== undefined, {
    message: "Either message_id or rfc_message_id is required",
    path: ["message_id"],
  })
  .openapi("RelayEvent");

export const RelayEventsBody = z.object({ events: z.array(RelayEvent).min(1).max(100) }).openapi("RelayEvents");

export const RelayEventsResult = z
  .object({
    received: z.number().int(),
    results: z.array(
      z.object({
        index: z.number().int(),
        event_id: z.string().openapi({ description: "`rev_…`: recorded as the carrier of the finding" }),
        message_id: z.string().nullable(),
        linked: z.boolean().openapi({ description: "False when no message of ours matches (the event is ignored)" }),
        counted: z.boolean().openapi({
          description: "False for a repeat of something already recorded, or a recipient the message never went to",
        }),
      }),
    ),
  })
  .openapi("RelayEventsResult");

export const ReportQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20).openapi({ example: 20 }),
  cursor: z.string().max(200).optional().openapi({ description: "Opaque cursor from `meta.next_cursor`." }),
  verified: z
    .enum(["true", "false"])
    .optional()
    .openapi({ description: "Only reports that were (or were not) believed" }),
});

export const DeliveryReportWire = z
  .object({
    id: z.string().openapi({ example: "rpt_01jd2x0000000000000000000" }),
    inbox_id: z.string(),
    message_id: z
      .string()
      .nullable()
      .openapi({ description: "Our outbound message the finding counted for; null when it was not linked" }),
    report_message_id: z.string().openapi({
      description:
        "What carried it: the inbound report message (`msg_…`), our message (transport), or a relay event (`rev_…`)",
    }),
    original_rfc_message_id: z.string().nullable(),
    source: z.enum(["report", "transport", "relay"]),
    kind: z.enum(["bounce", "delay", "delivered", "complaint"]),
    bounce_type: z.enum(["hard", "soft"]).nullable(),
    recipient: z.string().nullable(),
    status_code: z.string().nullable(),
    diagnostic: z.string().nullable(),
    feedback_type: z.string().nullable(),
    verified: z.boolean().openapi({
      description:
        "False for a report that could not be authenticated (kept and shown, but it changed no status, counter or suppression)",
    }),
    unverified_reason: z.string().nullable().openapi({
      description:
        "Why not: `no_bounce_token`, `invalid_bounce_token`, `bounce_tokens_not_configured`, `other_recipient`, `not_a_recipient`, `not_feedback_loop_source`, `unknown_message`, `no_findings`",
      example: "not_feedback_loop_source",
    }),
    created_at: z.string(),
  })
  .openapi("DeliveryReport");
