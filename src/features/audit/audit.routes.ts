import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireFullAccess, requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { pageOf, toPage } from "../../lib/pagination";
import { AuditEntryWire, AuditQuery, AuditVerifyWire } from "./audit.schemas";
import { auditFilters, listAudit, toAuditWire, verifyAudit } from "./audit.service";

const tags = ["Audit log"];

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
