import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { pageOf, toPage } from "../../lib/pagination";
import { InboxIdParam } from "../inboxes/inboxes.schemas";
import { DeliveryReportWire, ReportQuery } from "./bounces.schemas";
import { listReports, toReportWire } from "./bounces.service";

/** `GET /v1/inboxes/:inbox_id/reports`: what bounce and complaint reports said, and whether they were believed. */
export const reportRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

reportRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam, query: ReportQuery },
    method: "get",
    path: "/inboxes/{inbox_id}/reports",
    tags: ["Inboxes"],
    summary: "Delivery reports (bounces, complaints, delivery notices) of an inbox, newest first",
    description:
      "One row per finding, from every source: DSN and ARF reports mailed to the inbox, the transport's refusals while sending, the relay's signed events. A report that could not be authenticated (a DSN not at the recipient's bounce address, a complaint not from a configured feedback loop, …) is listed with `verified: false` and `unverified_reason`; it changed no status, counter or suppression.",
    data: DeliveryReportWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const q = c.req.valid("query");
    const rows = await listReports(
      serviceContext(c),
      c.req.valid("param").inbox_id,
      { verified: q.verified === undefined ? undefined : q.verified === "true" },
      toPage(q),
    );
    const { items, nextCursor } = pageOf(rows, q.limit);
    return c.json({ data: items.map(toReportWire), meta: { limit: q.limit, next_cursor: nextCursor } }, 200);
  },
);
