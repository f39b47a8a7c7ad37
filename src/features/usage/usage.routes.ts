import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute, Timestamp } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { getDailyUsage, getUsage } from "./usage.service";

const tags = ["Usage"];

const Counts = {
  sent: z.number().int().openapi({ description: "Outbound messages that left" }),
  received: z.number().int().openapi({ description: "Inbound messages stored" }),
  bounced: z.number().int().openapi({ description: "Hard bounces linked to our messages (per recipient)" }),
  complained: z.number().int().openapi({ description: "Complaints linked to our messages" }),
};

const UsageQuery = z
  .object({
    since: z.iso.datetime().optional().openapi({ description: "Default: the start of the current UTC month" }),
    until: z.iso.datetime().optional().openapi({ description: "Default: now" }),
  })
  .refine((q) => !q.since || !q.until || Date.parse(q.since) < Date.parse(q.until), {
    message: "since must be before until",
    path: ["since"],
  });

const UsageWire = z
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

const DailyQuery = z.object({ days: z.coerce.number().int().min(1).max(90).default(30) });
const DailyWire = z.object({ date: z.string().openapi({ example: "2026-03-15" }), ...Counts }).openapi("UsageDay");

/** `GET /v1/usage`, `GET /v1/usage/daily`. */
export const usageRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

usageRoutes.openapi(
  jsonRoute({
    request: { query: UsageQuery },
    method: "get",
    path: "/usage",
    tags,
    summary: "Usage over a period, and the send limit now",
    data: UsageWire,
  }),
  async (c) => {
    requireScope(c, "read");
    const q = c.req.valid("query");
    const data = await getUsage(serviceContext(c), {
      since: q.since ? Date.parse(q.since) : undefined,
      until: q.until ? Date.parse(q.until) : undefined,
    });
    return c.json({ data }, 200);
  },
);

usageRoutes.openapi(
  jsonRoute({
    request: { query: DailyQuery },
    method: "get",
    path: "/usage/daily",
    tags,
    summary: "Usage per UTC day (newest first)",
    data: z.array(DailyWire),
  }),
  async (c) => {
    requireScope(c, "read");
    const data = await getDailyUsage(serviceContext(c), c.req.valid("query").days);
    return c.json({ data }, 200);
  },
);
