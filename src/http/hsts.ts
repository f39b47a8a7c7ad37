import type { MiddlewareHandler } from "hono";
import { partialConfig } from "../config";
import type { AppEnv } from "./app-env";

/** Two years, subdomains included: the production API is served over HTTPS only. */
export const HSTS_VALUE = "max-age=63072000; includeSubDomains";

/**
 * `Strict-Transport-Security` on every response in production (errors, 404s and the docs page
 * included), so a client that once reached the API never falls back to plain HTTP. Not elsewhere:
 * `wrangler dev` serves http://localhost, and a browser would then pin localhost to HTTPS.
 */
export const strictTransportSecurity: MiddlewareHandler<AppEnv> = async (c, next) => {
  await next();
  let production = false;
  try {
    production = partialConfig(c.env).isProduction;
  } catch {
    // A broken configuration is reported by the request itself; the header decision cannot fail it.
    production = c.env.ENVIRONMENT === "production";
  }
  if (!production) return;
  try {
    c.res.headers.set("Strict-Transport-Security", HSTS_VALUE);
  } catch {
    // A response with immutable headers (one passed through from a fetch): copy it once.
    c.res = new Response(c.res.body, c.res);
    c.res.headers.set("Strict-Transport-Security", HSTS_VALUE);
  }
};
