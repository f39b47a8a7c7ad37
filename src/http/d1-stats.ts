import type { MiddlewareHandler } from "hono";
import { config } from "../config";
import { withD1Stats } from "../db/metering";
import type { AppEnv } from "./app-env";

/** The request header that asks for D1 accounting (development only). */
export const D1_STATS_REQUEST_HEADER = "X-Mailbot-D1-Stats";

/**
 * Development-only D1 accounting headers (`X-Mailbot-D1-*`), for requests that ask for them with
 * `X-Mailbot-D1-Stats: 1`; the counting itself lives in db/metering.ts, beside the client that
 * feeds it. Opt-in because metering re-runs every raw() select as all() and re-wraps each
 * statement: a cost production never pays, which would otherwise skew every latency measured
 * under `wrangler dev` (the benches) against routes without a query, such as /health.
 */
export const d1Stats: MiddlewareHandler<AppEnv> = async (c, next) => {
  // Also the first read of the config on every request: a var the Worker cannot use is a 500 here.
  if (!c.env || !config(c.env).isDevelopment || c.req.header(D1_STATS_REQUEST_HEADER) !== "1") return next();
  const { stats } = await withD1Stats(next);
  c.res.headers.set("X-Mailbot-D1-Rows-Read", String(stats.rowsRead));
  c.res.headers.set("X-Mailbot-D1-Rows-Written", String(stats.rowsWritten));
  c.res.headers.set("X-Mailbot-D1-Queries", String(stats.queries));
  if (stats.unmetered > 0) c.res.headers.set("X-Mailbot-D1-Unmetered", String(stats.unmetered));
};
