import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { dashboardRoutes } from "./dashboard/dashboard.routes";
import { accountRoutes, registrationRoutes } from "./features/accounts/accounts.routes";
import { adminRoutes } from "./features/accounts/admin.routes";
import { apiKeyRoutes } from "./features/api-keys/api-keys.routes";
import { auditRoutes } from "./features/audit/audit.routes";
import { reportRoutes } from "./features/bounces/bounces.routes";
import { relayEventRoutes } from "./features/bounces/relay-events.routes";
import { eventRoutes } from "./features/events/events.routes";
import { inboundRoutes } from "./features/inbound/inbound-relay.routes";
import { inboxRoutes } from "./features/inboxes/inboxes.routes";
import { messageRoutes } from "./features/messages/messages.routes";
import { systemRoutes, VERSION } from "./features/meta/meta.routes";
import { outboundRoutes } from "./features/outbound/outbound.routes";
import { SEND_BODY_LIMIT_BYTES } from "./features/outbound/outbound.schemas";
import { reputationRoutes } from "./features/reputation/reputation.routes";
import { complianceRoutes } from "./features/sender-auth/compliance.routes";
import { domainRoutes } from "./features/sender-auth/domains.routes";
import { suppressionRoutes } from "./features/suppressions/suppressions.routes";
import { threadRoutes } from "./features/threads/threads.routes";
import { usageRoutes } from "./features/usage/usage.routes";
import { webhookRoutes } from "./features/webhooks/webhooks.routes";
import type { AppEnv } from "./http/app-env";
import { requireAdmin, requireApiKey } from "./http/auth";
import { d1Session } from "./http/d1-session";
import { d1Stats } from "./http/d1-stats";
import { errorResponse } from "./http/errors";
import { strictTransportSecurity } from "./http/hsts";
import { limitBody, requestId, requireJsonBody } from "./http/middleware";
import { validationHook } from "./http/validation";
import { reputationWarnings } from "./http/warning-headers";
import { MethodNotAllowed, NotFound, PayloadTooLarge } from "./lib/errors";
import { mcpRoutes } from "./mcp/mcp.routes";

/** Paths under /v1 that do not take an API key (they have their own checks). */
const PUBLIC_V1 = new Set(["/v1/info", "/v1/auth/register"]);

/** Routes that take attachments read bodies up to 8 MiB (5 MiB of files as base64); others 1 MiB. */
function isSendRoute(method: string, path: string): boolean {
  return method === "POST" && /^\/v1\/(inboxes\/[^/]+\/messages|messages\/[^/]+\/(reply|forward))$/.test(path);
}
const sendBodyLimit = bodyLimit({
  maxSize: SEND_BODY_LIMIT_BYTES,
  onError: () => {
    throw new PayloadTooLarge(SEND_BODY_LIMIT_BYTES);
  },
});

/** The /docs page: Swagger UI over /openapi.json, its CSS and JS served from /swagger-ui/ (static assets). */
const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mailbot API</title>
<link rel="stylesheet" href="/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="/swagger-ui/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/swagger-ui/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
</script>
</body>
</html>
`;

/** Builds the Hono app: middleware order, route mounts, the OpenAPI document and the error mapper. */
export function buildApp() {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  let routes: { method: string; pattern: RegExp }[] | null = null;
  /** Every method + path pattern the app serves (built on first use, after the mounts below). */
  const routeTable = () => {
    routes ??= app.routes
      .filter((r) => r.method !== "ALL")
      .map((r) => ({
        method: r.method,
        pattern: new RegExp(`^${r.path.replace(/:[^/]+/g, "[^/]+").replace(/\*/g, ".*")}$`),
      }));
    return routes;
  };

  app.use("*", strictTransportSecurity);
  app.use("*", requestId);
  app.use("*", d1Stats);
  app.use("*", d1Session);
  app.use("/v1/*", (c, next) => (isSendRoute(c.req.method, c.req.path) ? sendBodyLimit(c, next) : limitBody(c, next)));
  app.use("/v1/*", requireJsonBody);
  app.use("/v1/admin/*", requireAdmin);
  app.use("/v1/*", async (c, next) => {
    const path = c.req.path;
    if (PUBLIC_V1.has(path) || path.startsWith("/v1/admin/")) return next();
    // A path no route serves is a 404 (or 405) for everyone; only real routes ask for a key.
    if (!routeTable().some((r) => r.pattern.test(path))) return next();
    return requireApiKey(c, next);
  });
  app.use("/v1/*", reputationWarnings);

  app.route("/", systemRoutes);
  app.route("/v1", registrationRoutes);
  app.route("/v1/admin", adminRoutes);
  app.route("/v1", accountRoutes);
  app.route("/v1", apiKeyRoutes);
  app.route("/v1", inboxRoutes);
  app.route("/v1", outboundRoutes);
  app.route("/v1", messageRoutes);
  app.route("/v1", threadRoutes);
  app.route("/v1", auditRoutes);
  app.route("/v1", webhookRoutes);
  app.route("/v1", eventRoutes);
  app.route("/", inboundRoutes);
  app.route("/v1", domainRoutes);
  app.route("/v1", complianceRoutes);
  app.route("/", mcpRoutes);
  app.route("/v1", reputationRoutes);
  app.route("/v1", reportRoutes);
  app.route("/v1", suppressionRoutes);
  app.route("/v1", usageRoutes);
  app.route("/", relayEventRoutes);
  // The web console: one more adapter over the same services (src/dashboard/).
  app.route("/dashboard", dashboardRoutes);

  app.openAPIRegistry.registerComponent("securitySchemes", "ApiKey", {
    type: "http",
    scheme: "bearer",
    description: "An account API key: `Authorization: Bearer mb_…`",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "AdminToken", {
    type: "http",
    scheme: "bearer",
    description: "The deployment's ADMIN_TOKEN secret (operators only).",
  });
  app.doc31("/openapi.json", (c) => ({
    openapi: "3.1.0",
    info: {
      title: "mailbot API",
      version: VERSION,
      description:
        "Email infrastructure for AI agents. Errors use `{ error: { code, message, request_id, details? } }`; lists are newest first with `meta.next_cursor`.",
    },
    servers: [{ url: new URL(c.req.url).origin }],
  }));
  // Swagger UI's files are static assets of this deployment (wrangler.toml [assets], copied from the
  // pinned swagger-ui-dist by scripts/copy-swagger-ui.mjs): no CDN, so /docs works offline.
  app.get("/docs", (c) => c.html(DOCS_PAGE));

  app.notFound((c) => {
    const allowed = [
      ...new Set(
        routeTable()
          .filter((r) => r.pattern.test(c.req.path))
          .map((r) => r.method),
      ),
    ];
    if (allowed.length > 0) {
      const err = new MethodNotAllowed(allowed, `${c.req.method} is not allowed here. Allowed: ${allowed.join(", ")}.`);
      return errorResponse(c, err);
    }
    return errorResponse(c, new NotFound("Route"));
  });
  app.onError((err, c) => errorResponse(c, err));
  return app;
}

export const app = buildApp();
