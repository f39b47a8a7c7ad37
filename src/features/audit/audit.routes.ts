import type { z } from "@hono/zod-openapi";
import { OpenAPIHono } from "@hono/zod-openapi";
import type { AuditRow } from "../../db/schema";
import type { AppEnv } from "../../env";
import { requireFullAccess, requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { pageOf, toPage } from "../../http/pagination";
import { validationHook } from "../../http/validation";
import { iso } from "../../lib/time";
import { AuditEntryWire, AuditQuery, AuditVerifyWire } from "./audit.schemas";
import { auditFilters, listAudit, verifyAudit } from "./audit.service";

const tags = ["Audit log"];

/** Wire shape of an audit entry. */
export function toAuditWire(row: AuditRow): z.infer<typeof AuditEntryWire> {
  return {
    id: row.id,
    action: row.action,
    actor: { type: row.actorType as z.infer<typeof AuditEntryWire>["actor"]["type"], id: row.actorId },
    target: row.targetType && row.targetId ? { type: row.targetType, id: row.targetId } : null,
    inbox_id: row.inboxId,
    metadata: row.metadata,
    request_id: row.requestId,
    created_at: iso(row.createdAt),
    seq: row.seq,
    hash: row.hash,
    prev_hash: row.prevHash,
  };
}

export const auditRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

auditRoutes.openapi(
  jsonRoute({
    request: { query: AuditQuery },
    method: "get",
    path: "/audit-log",
    tags,
    summary: "List audit entries (newest first)",

    data: AuditEntryWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const q = c.req.valid("query");
    const ctx = serviceContext(c);
    const rows = await listAudit(ctx, auditFilters(q), toPage(q));
    const { items, nextCursor } = pageOf(rows, q.limit);
    return c.json({ data: items.map(toAuditWire), meta: { limit: q.limit, next_cursor: nextCursor } }, 200);
  },
);

auditRoutes.openapi(
  jsonRoute({
    method: "get",
    path: "/audit-log/verify",
    tags,
    summary: "Re-check the account's hash chain",
    data: AuditVerifyWire,
  }),
  async (c) => {
    requireFullAccess(c);
    return c.json({ data: await verifyAudit(serviceContext(c)) }, 200);
  },
);
