import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { fieldIssues } from "../http/errors";
import { AppError, ValidationFailed } from "../lib/errors";

/** The API's error object, as in the HTTP envelope's `error`. */
export interface ErrorBody {
  code: string;
  message: string;
  request_id: string | null;
  details?: unknown;
}

/** 403s that the agent can act on (another inbox, fewer inboxes); other 403s are authorization failures. */
const FIXABLE_FORBIDDEN = new Set(["inbox_disabled", "inbox_limit_reached"]);
/** 5xx answers that mean "try again later" (a temporary DNS failure), which the agent can act on. */
const RETRYABLE_UNAVAILABLE = new Set(["dns_unavailable"]);

function isZodError(err: unknown): err is Parameters<typeof fieldIssues>[0] {
  return typeof err === "object" && err !== null && (err as { name?: string }).name === "ZodError" && "issues" in err;
}

/**
 * Normalises anything a tool threw into the AppError family, like the HTTP mapper: zod errors are
 * validation errors; anything else is an internal error, logged with the request id and never
 * echoed.
 */
export function toAppError(err: unknown, requestId: string | null): AppError {
  if (err instanceof AppError) return err;
  if (isZodError(err)) return new ValidationFailed(fieldIssues(err));
  console.error(
    JSON.stringify({ level: "error", request_id: requestId, error: String(err), stack: (err as Error)?.stack }),
  );
  return new AppError(
    500,
    "internal_error",
    "Something went wrong on our side. Quote the request id if you contact support.",
  );
}

/** The HTTP envelope's error object of an AppError. */
export function errorBody(err: AppError, requestId: string | null): ErrorBody {
  const body: ErrorBody = { code: err.code, message: err.message, request_id: requestId };
  if (err.details !== undefined) body.details = err.details;
  return body;
}

/**
 * The one MCP mapper. What the agent can fix (validation, not found, conflicts, a blocked send,
 * limits, a disabled inbox, a wait that timed out, DNS temporarily unavailable) is a tool result with `isError: true` and the
 * API's code, so the model sees it and can adjust. Authentication, authorization and internal
 * failures are JSON-RPC errors: retrying the tool with other arguments cannot fix them.
 */
export function errorResult(status: number, error: ErrorBody): CallToolResult {
  if (status >= 500 && !RETRYABLE_UNAVAILABLE.has(error.code)) {
    throw new McpError(ErrorCode.InternalError, error.message, { code: error.code, request_id: error.request_id });
  }
  if (status === 401 || (status === 403 && !FIXABLE_FORBIDDEN.has(error.code))) {
    throw new McpError(ErrorCode.InvalidRequest, error.message, error);
  }
  return {
    isError: true,
    content: [
      { type: "text", text: `Error ${error.code}: ${error.message}` },
      { type: "text", text: JSON.stringify({ error }) },
    ],
    structuredContent: { error },
  };
}
