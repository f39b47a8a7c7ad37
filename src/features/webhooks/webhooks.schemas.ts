import { z } from "@hono/zod-openapi";
import { Timestamp } from "../../lib/wire";
import { EVENT_TYPES } from "../events/events.schemas";
import { checkUrlSyntax } from "./url-guard";

/**
 * Syntax-level SSRF check at the HTTP boundary: https, no userinfo, no literal internal address
 * or internal name. (Local development's http://localhost is allowed through here; the service
 * decides with the deployment's setting, and resolves the host.)
 */
const WebhookUrl = z
  .string()
  .trim()
  .min(1)
  .max(2048)
  .superRefine((value, issue) => {
    const verdict = checkUrlSyntax(value, true);
    if (!verdict.ok) issue.addIssue({ code: "custom", message: verdict.reason });
  })
  .openapi({ example: "https://example.com/webhooks/mailbot" });

/** Event types an endpoint subscribes to; `*` is every type (the default). */
const EventFilter = z
  .array(z.enum([...EVENT_TYPES, "*"]))
  .min(1, 'List at least one event type, or "*" for all.')
  .max(EVENT_TYPES.length + 1)
  .transform((list) => [...new Set(list)])
  .openapi({ example: ["message.received"] });

export const CreateWebhookInput = z
  .object({
    url: WebhookUrl,
    events: EventFilter.optional(),
    inbox_id: z.string().max(64).nullable().optional(),
    description: z.string().trim().max(500).nullable().optional(),
  })
  .strict()
  .openapi("CreateWebhookInput");

export const PatchWebhookInput = z
  .object({
    url: WebhookUrl.optional(),
    events: EventFilter.optional(),
    enabled: z.boolean().optional(),
    inbox_id: z.string().max(64).nullable().optional(),
    description: z.string().trim().max(500).nullable().optional(),
  })
  .strict()
  .openapi("PatchWebhookInput");

export const WebhookWire = z
  .object({
    id: z.string().openapi({ example: "whk_01jd2x0000000000000000000" }),
    url: z.string(),
    events: z.array(z.string()),
    inbox_id: z.string().nullable(),
    description: z.string().nullable(),
    enabled: z.boolean(),
    disabled_reason: z.enum(["manual", "gone"]).nullable().openapi({
      description: "`gone`: the receiver answered 410 and delivery stopped; `manual`: disabled through the API.",
    }),
    created_at: Timestamp,
    updated_at: Timestamp,
  })
  .openapi("Webhook");

export const WebhookWithSecretWire = WebhookWire.extend({
  secret: z.string().openapi({ description: "The signing secret (`whsec_…`), shown only here." }),
}).openapi("WebhookWithSecret");

export const DeletedWebhookWire = z.object({ id: z.string(), deleted: z.literal(true) }).openapi("DeletedWebhook");

export const WebhookTestWire = z
  .object({ webhook_id: z.string(), event_id: z.string(), status: z.literal("queued") })
  .openapi("WebhookTest");

export const WebhookAttemptWire = z
  .object({
    id: z.string().openapi({ example: "dlv_01jd2x0000000000000000000" }),
    event_id: z.string(),
    event_type: z.string(),
    attempt: z.number().int().openapi({ description: "1 for the first try of this event to this endpoint." }),
    status_code: z.number().int().nullable(),
    error: z.string().nullable(),
    duration_ms: z.number().int(),
    url: z.string(),
    status: z.enum(["succeeded", "retrying", "failed"]).openapi({
      description:
        "`retrying`: this attempt failed and another is scheduled (`next_attempt_at`); `failed`: it was the last.",
    }),
    next_attempt_at: Timestamp.nullable(),
    created_at: Timestamp,
  })
  .openapi("WebhookDelivery");

export const WebhookIdParam = z.object({
  webhook_id: z.string().openapi({ param: { name: "webhook_id", in: "path" } }),
});
