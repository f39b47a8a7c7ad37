import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import type { ErrorBody } from "../http/errors";
import type { ErrorKind } from "../lib/errors";

/** Refusals of these kinds the agent can act on (other arguments, later): a tool result. */
const FIXABLE_KINDS = new Set<ErrorKind>([
  "bad_request",
  "not_found",
  "method_not_allowed",
  "timeout",
  "conflict",
  "gone",
  "too_large",
  "invalid",
  "rate_limited",
]);
/** 403s that the agent can act on (another inbox, fewer inboxes); other 403s are authorization failures. */
const FIXABLE_FORBIDDEN = new Set(["inbox_disabled", "inbox_limit_reached"]);
/** 5xx answers that mean "try again later" (a temporary DNS failure), which the agent can act on. */
const RETRYABLE_UNAVAILABLE = new Set(["dns_unavailable"]);

/**
 * The one MCP mapper. What the agent can fix (validation, not found, conflicts, a blocked send,
 * limits, a disabled inbox, a wait that timed out, DNS temporarily unavailable) is a tool result
 * with `isError: true` and the API's code, so the model sees it and can adjust. Authentication, authorization and internal
 * failures are JSON-RPC errors: retrying the tool with other arguments cannot fix them.
 */
export function errorResult(kind: ErrorKind, error: ErrorBody): CallToolResult {
  if ((kind === "internal" || kind === "unavailable") && !RETRYABLE_UNAVAILABLE.has(error.code)) {
    throw new McpError(ErrorCode.InternalError, error.message, { code: error.code, request_id: error.request_id });
  }
  const fixable = FIXABLE_KINDS.has(kind) || RETRYABLE_UNAVAILABLE.has(error.code) || FIXABLE_FORBIDDEN.has(error.code);
  if (!fixable) throw new McpError(ErrorCode.InvalidRequest, error.message, error);
  return {
    isError: true,
    content: [
      { type: "text", text: `Error ${error.code}: ${error.message}` },
      { type: "text", text: JSON.stringify({ error }) },
    ],
    structuredContent: { error },
  };
}
