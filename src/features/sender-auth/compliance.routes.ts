import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { InboxIdParam } from "../inboxes/inboxes.schemas";
import { ComplianceQuery, ComplianceWire, ReadinessWire } from "./compliance.schemas";
import { checkCompliance, readiness, toComplianceWire } from "./compliance.service";

const tags = ["Compliance"];

export const complianceRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

complianceRoutes.openapi(
  jsonRoute({
    request: { query: ComplianceQuery },
    method: "get",
    path: "/compliance/check",
    tags,
    summary: "SPF, DKIM, DMARC and MX of the shared domain or one of the account's domains, as the send gate sees them",
    data: ComplianceWire,
    errors: { 503: "DNS could not be queried right now (retry)" },
  }),
  async (c) => {
    requireScope(c, "read");
    const report = await checkCompliance(serviceContext(c), c.req.valid("query").domain);
    return c.json({ data: toComplianceWire(report) }, 200);
  },
);

complianceRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam },
    method: "get",
    path: "/compliance/readiness/{inbox_id}",
    tags,
    summary: "Sending readiness of an inbox: 0–100 with the checks that make up the score",
    data: ReadinessWire,
    errors: { 503: "DNS could not be queried right now (retry)" },
  }),
  async (c) => {
    requireScope(c, "read");
    return c.json({ data: await readiness(serviceContext(c), c.req.valid("param").inbox_id) }, 200);
  },
);
