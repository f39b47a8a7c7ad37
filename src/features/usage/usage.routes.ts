import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
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
    description:
      "One row per day, empty days included; `meta` follows the list convention (`limit` is `days`, one page: `next_cursor` is null). A message counts as sent on the day it left.",
    data: DailyWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const days = c.req.valid("query").days;
    const data = await getDailyUsage(serviceContext(c), days);
    return c.json({ data, meta: { limit: days, next_cursor: null } }, 200);
  },
);
