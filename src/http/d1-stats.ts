import type { MiddlewareHandler } from "hono";
import { config } from "../config";
import { withD1Stats } from "../db/metering";
import type { AppEnv } from "./app-env";

/**
 * Development-only D1 accounting headers (`X-Mailbot-D1-*`); the counting itself lives in
 * db/metering.ts, beside the client that feeds it.
 */
export const d1Stats: MiddlewareHandler<AppEnv> = async (c, next) => {
  // Also the first read of the config on every request: a var the Worker cannot use is a 500 here.
  if (!c.env || !config(c.env).isDevelopment) return next();
  const { stats } = await withD1Stats(next);
  c.res.headers.set("X-Mailbot-D1-Rows-Read", String(stats.rowsRead));
  c.res.headers.set("X-Mailbot-D1-Rows-Written", String(stats.rowsWritten));
  c.res.headers.set("X-Mailbot-D1-Queries", String(stats.queries));
  if (stats.unmetered > 0) c.res.headers.set("X-Mailbot-D1-Unmetered", String(stats.unmetered));
};
