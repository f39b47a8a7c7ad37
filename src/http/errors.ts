import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ZodError } from "zod";
import type { AppEnv } from "../env";
import { AppError, type FieldIssue, ValidationFailed } from "../lib/errors";
import { log } from "../lib/log";

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
    return err.status === 400 && /json/i.test(err.message)
      ? new AppError(400, "invalid_json", "The request body is not valid JSON.")
      : new AppError(
          err.status === 413 ? 413 : 400,
          err.status === 413 ? "payload_too_large" : "bad_request",
          err.message,
        );
  }
  if (isZodError(err)) return new ValidationFailed(fieldIssues(err));
  log.error("unhandled error", { request_id: requestId, error: String(err), stack: (err as Error)?.stack });
  return new AppError(
    500,
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

/** The one HTTP mapper: every failure becomes the documented error envelope. */
export function errorResponse(c: Context<AppEnv>, err: unknown): Response {
  const requestId = c.get("requestId") ?? null;
  const appError = toAppError(err, requestId);
  const res = c.json({ error: errorBody(appError, requestId) }, appError.status);
  for (const [k, v] of Object.entries(appError.headers ?? {})) res.headers.set(k, v);
  return res;
}

function isZodError(err: unknown): err is ZodError {
  return typeof err === "object" && err !== null && (err as { name?: string }).name === "ZodError" && "issues" in err;
}
