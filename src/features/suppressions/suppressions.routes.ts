import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { pageOf, toPage } from "../../lib/pagination";
import { SuppressionParams, SuppressionQuery, SuppressionWire } from "./suppressions.schemas";
import { deleteSuppression, listSuppressions, toSuppressionWire } from "./suppressions.service";

const tags = ["Suppressions"];

/** `GET /v1/suppressions`, `DELETE /v1/suppressions/:address`. */
export const suppressionRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

suppressionRoutes.openapi(
  jsonRoute({
    request: { query: SuppressionQuery },
    method: "get",
    path: "/suppressions",
    tags,
    summary: "List suppressed recipients (newest first)",
    description:
      "Recipients of this account that hard-bounced or complained. Sends to them are refused (422 `recipient_suppressed`) or, when other recipients remain, leave them out (`dropped_recipients` on the message).",
    data: SuppressionWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const q = c.req.valid("query");
    const ctx = serviceContext(c);
    const rows = await listSuppressions(ctx, { address: q.address, reason: q.reason }, toPage(q));
    const { items, nextCursor } = pageOf(rows, q.limit);
    const visible = ctx.inboxIds ?? null;
    return c.json(
      { data: items.map((r) => toSuppressionWire(r, visible)), meta: { limit: q.limit, next_cursor: nextCursor } },
      200,
    );
  },
);

suppressionRoutes.openapi(
  jsonRoute({
    request: { params: SuppressionParams },
    method: "delete",
    path: "/suppressions/{address}",
    tags,
    summary: "Lift a suppression (audited): the address can be sent to again",
    data: SuppressionWire,
    errors: { 404: "`not_found`: this account has not suppressed the address" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await deleteSuppression(serviceContext(c), c.req.valid("param").address);
    return c.json({ data: toSuppressionWire(row) }, 200);
  },
);
