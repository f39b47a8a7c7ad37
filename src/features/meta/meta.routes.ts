import { OpenAPIHono, z } from "@hono/zod-openapi";
import { config } from "../../config";
import type { AppEnv } from "../../http/app-env";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";

export const VERSION = "0.1.0";

const Health = z.object({ status: z.literal("ok"), version: z.string() }).openapi("Health");
const Info = z
  .object({
    name: z.literal("mailbot"),
    version: z.string(),
    environment: z.string(),
    mail_domain: z.string(),
    registration: z.enum(["open", "closed"]),
    docs_url: z.string(),
    openapi_url: z.string(),
    mcp_url: z.string(),
  })
  .openapi("Info");

/** Public liveness and deployment facts. */
export const systemRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

systemRoutes.openapi(
  jsonRoute({ method: "get", path: "/health", tags: ["System"], summary: "Liveness", data: Health, security: "none" }),
  (c) => c.json({ data: { status: "ok" as const, version: VERSION } }, 200),
);

systemRoutes.openapi(
  jsonRoute({
    method: "get",
    path: "/v1/info",
    tags: ["System"],
    summary: "Deployment facts",
    data: Info,
    security: "none",
  }),
  (c) => {
    const origin = new URL(c.req.url).origin;
    return c.json(
      {
        data: {
          name: "mailbot" as const,
          version: VERSION,
          environment: config(c.env).environment,
          mail_domain: config(c.env).mailDomain,
          registration: config(c.env).registration,
          docs_url: `${origin}/docs`,
          openapi_url: `${origin}/openapi.json`,
          mcp_url: `${origin}/mcp`,
        },
      },
      200,
    );
  },
);
