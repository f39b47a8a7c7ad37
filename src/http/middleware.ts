import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { BadRequest, PayloadTooLarge } from "../lib/errors";
import { newId } from "../lib/ids";
import type { AppEnv } from "./app-env";

/** Every response carries `X-Request-Id`; the id also goes into audit entries and logs. */
export const requestId: MiddlewareHandler<AppEnv> = async (c, next) => {
  const id = newId("req");
  c.set("requestId", id);
  try {
    await next();
  } finally {
    c.res.headers.set("X-Request-Id", id);
    c.res.headers.set("X-Content-Type-Options", "nosniff");
    // The contract names the charset explicitly; Hono's c.json leaves it out.
    if (c.res.headers.get("Content-Type") === "application/json") {
      c.res.headers.set("Content-Type", "application/json; charset=utf-8");
    }
  }
};

/** JSON bodies are capped at 1 MiB (routes that take attachments raise their own cap). */
export const JSON_BODY_LIMIT_BYTES = 1024 * 1024;
export const limitBody = bodyLimit({
  maxSize: JSON_BODY_LIMIT_BYTES,
  onError: () => {
    throw new PayloadTooLarge(JSON_BODY_LIMIT_BYTES);
  },
});

/** A body sent to the JSON API must say it is JSON, so nothing is silently ignored. */
export const requireJsonBody: MiddlewareHandler<AppEnv> = async (c, next) => {
  const method = c.req.method;
  if (method === "POST" || method === "PATCH" || method === "PUT") {
    const type = c.req.header("Content-Type");
    const length = c.req.header("Content-Length");
    const hasBody = (length !== undefined && length !== "0") || c.req.header("Transfer-Encoding") !== undefined;
    if (hasBody && !/^application\/([\w.-]+\+)?json\s*(;|$)/i.test(type ?? "")) {
      throw new BadRequest("unsupported_content_type", "Send a JSON body with Content-Type: application/json.");
    }
  }
  await next();
};
