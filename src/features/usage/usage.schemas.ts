import { z } from "@hono/zod-openapi";
import { Timestamp } from "../../lib/wire";

export const Counts = {
  sent: z.number().int().openapi({ description: "Outbound messages that left" }),
  received: z.number().int().openapi({ description: "Inbound messages stored" }),
  bounced: z.number().int().openapi({ description: "Hard bounces linked to our messages (per recipient)" }),
  complained: z.number().int().openapi({ description: "Complaints linked to our messages" }),
};

export const UsageQuery = z
  .object({
    since: z.iso.datetime().optional().openapi({ description: "Default: the start of the current UTC month" }),
    until: z.iso.datetime().optional().openapi({ description: "Default: now" }),
  })
  .refine((q) => !q.since || !q.until || Date.parse(q.since) < Date.parse(q.until), {
    message: "since must be before until",
    path: ["since"],
  });

export const UsageWire = z
  .object({
    period: z.object({ since: Timestamp, until: Timestamp }),
    ...Counts,
    send_limit: z.object({
      limit: z.number().int().nullable().openapi({ description: "Null when no account-wide limit applies" }),
      used: z.number().int(),
      window_hours: z.number().int(),
      resets_at: Timestamp.nullable(),
      scope: z.enum(["new_account", "none"]),
      new_account_until: Timestamp,
    }),
  })
  .openapi("Usage");

export const DailyQuery = z.object({ days: z.coerce.number().int().min(1).max(90).default(30) });
export const DailyWire = z
  .object({ date: z.string().openapi({ example: "2026-03-15" }), ...Counts })
  .openapi("UsageDay");
