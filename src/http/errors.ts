import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ZodError } from "zod";
import {
  AppError,
  BadRequest,
  type ErrorKind,
  type FieldIssue,
  InternalError,
  MethodNotAllowed,
  PayloadTooLarge,
  RateLimited,
  type RateLimitFigures,
  ValidationFailed,
} from "../lib/errors";
import { log } from "../lib/log";
import type { AppEnv } from "./app-env";

/** zod issues to the envelope's `details: [{ path, message }]`. */
export function fieldIssues(error: ZodError): FieldIssue[] {
  return error.issues.map((issue) => ({
    path: issue.path.map(String).join(".") || "(root)",
    message: issue.message,
  }));
}

/**
 * Any failure as a member of the AppError family: HTTP and zod errors keep their meaning;
 * anything else is an internal error, logged with the request id and never echoed.
 */
export function toAppError(err: unknown, requestId: string | null): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof HTTPException) {
    if (err.status === 413) return new PayloadTooLarge(null, err.message);
    return err.status === 400 && /json/i.test(err.message)
      ? new BadRequest("invalid_json", "The request body is not valid JSON.")
      : new BadRequest("bad_request", err.message);
  }
  if (isZodError(err)) return new ValidationFailed(fieldIssues(err));
  log.error("unhandled error", { request_id: requestId, error: String(err), stack: (err as Error)?.stack });
  return new InternalError(
    "internal_error",
    "Something went wrong on our side. Quote the request id if you contact support.",
  );
}

/** The envelope's `error` object (HTTP responses and MCP tool results carry the same one). */
export interface ErrorBody {
  code: string;
  message: string;
  request_id: string | null;
  details?: unknown;
}

export function errorBody(err: AppError, requestId: string | null): ErrorBody {
  const body: ErrorBody = { code: err.code, message: err.message, request_id: requestId };
  if (err.details !== undefined) body.details = err.details;
  return body;
}

/** The one table from an error's kind to its HTTP status. */
export const HTTP_STATUS: Record<ErrorKind, ContentfulStatusCode> = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  timeout: 408,
  conflict: 409,
  gone: 410,
  too_large: 413,
  invalid: 422,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
};

/** The kind an HTTP status stands for (a stored reply read back, e.g. an idempotent MCP call). */
export function kindOfStatus(status: number): ErrorKind {
  const found = (Object.entries(HTTP_STATUS) as [ErrorKind, number][]).find(([, s]) => s === status);
  return found?.[0] ?? (status >= 500 ? "internal" : "bad_request");
}

/** The HTTP status of any error (what MCP's stored idempotent replies and the mapper use). */
export function httpStatus(err: AppError): ContentfulStatusCode {
  return HTTP_STATUS[err.kind];
}

/** `X-RateLimit-*` of a request-rate decision (every keyed response, and its 429). */
export function rateLimitHeaders(d: RateLimitFigures): Record<string, string> {
  return {
    "X-RateLimit-Limit": String(d.limit),
    "X-RateLimit-Remaining": String(d.remaining),
    "X-RateLimit-Reset": String(Math.ceil(d.resetAtMs / 1000)),
  };
}

/** The headers an error implies on HTTP: how to authenticate, what is allowed, when to retry. */
export function httpHeaders(err: AppError): Record<string, string> {
  const headers: Record<string, string> = {};
  if (err.kind === "unauthorized") headers["WWW-Authenticate"] = 'Bearer realm="mailbot"';
  if (err instanceof MethodNotAllowed) headers.Allow = err.allowed.join(", ");
  if (err instanceof RateLimited && err.figures) Object.assign(headers, rateLimitHeaders(err.figures));
  if (err.retryAfterSeconds !== undefined) headers["Retry-After"] = String(err.retryAfterSeconds);
  return headers;
}

/** The one HTTP mapper: every failure becomes the documented error envelope. */
export function errorResponse(c: Context<AppEnv>, err: unknown): Response {
  const requestId = c.get("requestId") ?? null;
  const appError = toAppError(err, requestId);
  const res = c.json({ error: errorBody(appError, requestId) }, httpStatus(appError));
  for (const [k, v] of Object.entries(httpHeaders(appError))) res.headers.set(k, v);
  return res;
}

function isZodError(err: unknown): err is ZodError {
  return typeof err === "object" && err !== null && (err as { name?: string }).name === "ZodError" && "issues" in err;
}
