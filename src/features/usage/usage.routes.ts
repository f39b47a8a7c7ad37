import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { DailyQuery, DailyWire, UsageQuery, UsageWire } from "./usage.schemas";
import { getDailyUsage, getUsage, usagePeriod } from "./usage.service";

const tags = ["Usage"];

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
    const data = await getUsage(serviceContext(c), usagePeriod(c.req.valid("query")));
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
