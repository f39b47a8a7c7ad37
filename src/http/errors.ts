import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ZodError } from "zod";
import type { AppEnv } from "../env";
import { AppError, type FieldIssue, ValidationFailed } from "../lib/errors";

/** zod issues to the envelope's `details: [{ path, message }]`. */
export function fieldIssues(error: ZodError): FieldIssue[] {
  return error.issues.map((issue) => ({
    path: issue.path.map(String).join(".") || "(root)",
    message: issue.message,
  }));
}

/** The one HTTP mapper: every failure becomes the documented error envelope. */
export function errorResponse(c: Context<AppEnv>, err: unknown): Response {
  let appError: AppError;
  if (err instanceof AppError) {
    appError = err;
  } else if (err instanceof HTTPException) {
    appError =
      err.status === 400 && /json/i.test(err.message)
        ? new AppError(400, "invalid_json", "The request body is not valid JSON.")
        : new AppError(
            err.status === 413 ? 413 : 400,
            err.status === 413 ? "payload_too_large" : "bad_request",
            err.message,
          );
  } else if (isZodError(err)) {
    appError = new ValidationFailed(fieldIssues(err));
  } else {
    // Internal failures are logged with the request id and never echoed to the client.
    console.error(
      JSON.stringify({
        level: "error",
        request_id: c.get("requestId"),
        error: String(err),
        stack: (err as Error)?.stack,
      }),
    );
    appError = new AppError(
      500,
      "internal_error",
      "Something went wrong on our side. Quote the request id if you contact support.",
    );
  }
  const body: Record<string, unknown> = {
    code: appError.code,
    message: appError.message,
    request_id: c.get("requestId") ?? null,
  };
  if (appError.details !== undefined) body.details = appError.details;
  const res = c.json({ error: body }, appError.status);
  for (const [k, v] of Object.entries(appError.headers ?? {})) res.headers.set(k, v);
  return res;
}

function isZodError(err: unknown): err is ZodError {
  return typeof err === "object" && err !== null && (err as { name?: string }).name === "ZodError" && "issues" in err;
}
