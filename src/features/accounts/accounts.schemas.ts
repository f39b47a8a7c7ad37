import { z } from "@hono/zod-openapi";
import { PageQuery } from "../../lib/pagination";
import { Timestamp } from "../../lib/wire";
import { InboxWire } from "../inboxes/inboxes.schemas";

export const RegisterInput = z
  .object({
    email: z.email().max(254).openapi({ example: "dev@example.com" }),
    name: z.string().trim().min(1).max(100).optional().openapi({ example: "Acme agents" }),
  })
  .strict()
  .openapi("RegisterInput");

export const AccountPatch = z
  .object({ name: z.string().trim().min(1).max(100).nullable().optional() })
  .strict()
  .openapi("AccountPatch");

export const AccountLimits = z
  .object({
    tier: z.string(),
    requests_per_minute: z.number().int(),
    burst: z.number().int(),
    sends_per_inbox_per_day: z.number().int(),
    max_inboxes: z.number().int(),
    max_webhooks: z.number().int().openapi({ description: "*(new)* Webhook endpoints per account." }),
    webhook_deliveries_per_minute: z.number().int().openapi({
      description: "*(new)* Webhook delivery attempts per account per minute; more wait, none are dropped.",
    }),
    stream_connections: z
      .number()
      .int()
      .openapi({ description: "Open event streams (SSE and WebSocket) allowed per API key." }),
    stream_connections_per_account: z.number().int().openapi({
      description: "*(new)* Open event streams (SSE and WebSocket) allowed per account, all keys together.",
    }),
    new_account_send_limit: z.object({
      limit: z.number().int(),
      window_hours: z.number().int(),
      active: z.boolean(),
    }),
  })
  .openapi("AccountLimits");

export const AccountWire = z
  .object({
    id: z.string().openapi({ example: "acct_01jd2x0000000000000000000" }),
    name: z.string().nullable(),
    email: z.string(),
    tier: z.string(),
    status: z.enum(["active", "suspended", "deleted"]),
    short_id: z.string(),
    created_at: Timestamp,
    new_account_until: Timestamp,
    limits: AccountLimits,
  })
  .openapi("Account");

export const RegisterResult = z
  .object({
    account: AccountWire,
    api_key: z.string().openapi({ description: "Shown once. Store it now.", example: "mb_…" }),
    inbox: InboxWire,
  })
  .openapi("Registration");

export const AdminAccountPatch = z
  .object({
    tier: z.string().min(1).max(32).optional(),
    status: z.enum(["active", "suspended"]).optional(),
    new_account_until: z.iso.datetime().nullable().optional().openapi({
      description: "Lift (null or a past time) or extend the new-account send limit.",
    }),
  })
  .strict()
  .openapi("AdminAccountPatch");

export const AccountIdParam = z.object({
  account_id: z.string().openapi({ param: { name: "account_id", in: "path" } }),
});

/** `GET /v1/admin/accounts`: the page, optionally narrowed by a search. */
export const AdminAccountsQuery = PageQuery.extend({
  q: z.string().trim().min(1).max(200).optional().openapi({
    description:
      "Only accounts whose email, name or id starts with this text (case-insensitive); text starting with `@` matches the email's domain (`@example` finds `ana@example.org`). Without it, every account.",
    example: "ana",
  }),
});
