import { z } from "@hono/zod-openapi";
import { PageQuery } from "../../lib/pagination";
import { Timestamp } from "../../lib/wire";

export const AuditQuery = PageQuery.extend({
  action: z.string().max(64).optional(),
  inbox_id: z.string().max(64).optional(),
  since: z.iso.datetime().optional(),
  until: z.iso.datetime().optional(),
});

export const AuditEntryWire = z
  .object({
    id: z.string(),
    action: z.string().openapi({ example: "inbox.created" }),
    actor: z.object({ type: z.enum(["api_key", "admin", "system", "mcp", "dashboard"]), id: z.string().nullable() }),
    target: z.object({ type: z.string(), id: z.string() }).nullable(),
    inbox_id: z.string().nullable(),
    metadata: z.record(z.string(), z.unknown()),
    request_id: z.string().nullable(),
    created_at: Timestamp,
    seq: z.number().int(),
    hash: z.string().openapi({
      description:
        "HMAC-SHA256 link of this entry in the account's chain (SHA-256 for entries written before the keyed chain); empty for an entry that cannot be linked, which /audit-log/verify names",
    }),
    prev_hash: z.string().openapi({ description: "The previous entry's `hash` (64 zeros for the first entry)" }),
  })
  .openapi("AuditEntry");

export const AuditVerifyWire = z
  .object({ ok: z.boolean(), checked: z.number().int(), first_broken_id: z.string().nullable() })
  .openapi("AuditVerification");
