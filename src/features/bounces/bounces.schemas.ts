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
    bounce_type: z.enum(["hard", "soft"]).default("hard").openapi({ description: "Bounces only; hard is permanent" }),
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
