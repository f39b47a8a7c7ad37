import { z } from "@hono/zod-openapi";
import { typeMatches } from "../../lib/event-stream";
import { PageQuery } from "../../lib/pagination";
import { Timestamp } from "../../lib/wire";

/** Every event type of API.md. */
export const EVENT_TYPES = [
  "message.received",
  "message.sent",
  "message.delivered",
  "message.bounced",
  "message.complained",
  "message.blocked",
  "inbox.created",
  "inbox.disabled",
  "inbox.enabled",
  "domain.verified",
  "webhook.test",
] as const;

export const EventTypeSchema = z.enum(EVENT_TYPES);

/** Longest long-poll, in seconds. */
export const MAX_WAIT_SECONDS = 30;

export const EventWire = z
  .object({
    id: z.string().openapi({ example: "evt_01jd2x0000000000000000000" }),
    type: EventTypeSchema,
    created_at: Timestamp,
    account_id: z.string(),
    data: z.record(z.string(), z.unknown()).openapi({
      description:
        "Message events: `message_id, inbox_id, thread_id, from_address, to, subject`; `message.received` adds `body_text`, `body_html` and attachment metadata (never bytes).",
    }),
  })
  .openapi("Event");

export const ListEventsQuery = PageQuery.extend({
  type: EventTypeSchema.optional(),
  inbox_id: z.string().max(64).optional(),
  thread_id: z.string().max(64).optional(),
  after: z
    .string()
    .regex(/^evt_[0-9a-z]{26}$/, "an event id")
    .optional()
    .openapi({
      description:
        "Only events committed after this one, OLDEST first, so an agent can page forward with the last id it saw.",
    }),
  wait: z.coerce.number().int().min(0).max(MAX_WAIT_SECONDS).optional().openapi({
    description: "Seconds (<= 30) to wait for a matching event when there is none yet; then an empty list.",
  }),
});

export const EventIdParam = z.object({
  event_id: z.string().openapi({ param: { name: "event_id", in: "path" } }),
});

export const ReplayEventInput = z
  .object({
    target_url: z.string().max(2048).optional().openapi({
      description:
        "Send to this URL instead of the endpoint's own (same SSRF rules, signed with the endpoint's secret).",
    }),
    webhook_id: z.string().max(64).optional().openapi({
      description: "Replay to this endpoint only (default: every enabled endpoint the event matches).",
    }),
  })
  .strict()
  .openapi("ReplayEventInput");

export const ReplayWire = z
  .object({
    event_id: z.string(),
    webhook_ids: z.array(z.string()),
    target_url: z.string().nullable(),
  })
  .openapi("EventReplay");

/** An event id as a stream cursor (`Last-Event-ID`, `?after=`). */
export const EventCursor = z.string().regex(/^evt_[0-9a-z]{26}$/, "an event id");

/** A type filter of a stream: a known type, or a pattern with `*` (`message.*`, `*`) matching at least one. */
export const EventTypePattern = z
  .string()
  .max(64)
  .regex(/^[a-z*]+(\.[a-z*]+)*$/, "an event type, or a pattern such as message.*")
  .refine(
    // The hub's own matcher: linear, where a regex built from the pattern backtracks exponentially.
    (p) => EVENT_TYPES.some((t) => typeMatches(p, t)),
    "matches no event type",
  );

export const StreamEventsQuery = z.object({
  type: z
    .union([EventTypePattern, z.array(EventTypePattern).max(20)])
    .optional()
    .openapi({
      description:
        "Event types to stream; repeat the parameter for several. `*` is a wildcard (`message.*`). Default: every type.",
      example: "message.*",
    }),
  inbox_id: z.string().max(64).optional().openapi({ description: "Only this inbox's events." }),
  after: EventCursor.optional().openapi({
    description:
      "Resume after this event id: every event committed after it, in commit order, then live. The `Last-Event-ID` header takes precedence.",
  }),
});
