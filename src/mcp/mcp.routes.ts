import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { config } from "../config";
import { SEND_BODY_LIMIT_BYTES } from "../features/outbound/outbound.schemas";
import type { AppEnv } from "../http/app-env";
import { requireApiKey } from "../http/auth";
import { serviceContext } from "../http/context";
import { Forbidden, MethodNotAllowed, PayloadTooLarge, Unauthorized } from "../lib/errors";
import { buildMcpServer } from "./server";

/**
 * `/mcp`: the Model Context Protocol over stateless Streamable HTTP. Same bearer keys and
 * per-key rate limit as /v1 (requireApiKey); every tool call runs as actor `mcp` on the key's
 * account. JSON responses only: no session, no server-initiated stream, so GET and DELETE are 405.
 */
export const mcpRoutes = new Hono<AppEnv>();

mcpRoutes.use(
  "/mcp",
  // Tool calls carry what the send routes carry (attachments as base64), so the same ceiling.
  bodyLimit({
    maxSize: SEND_BODY_LIMIT_BYTES,
    onError: () => {
      throw new PayloadTooLarge(SEND_BODY_LIMIT_BYTES);
    },
  }),
  requireApiKey,
  async (c, next) => {
    const auth = c.get("auth");
    if (!auth) throw new Unauthorized();
    // Single-tenant deployments pin the endpoint to one account; other accounts' valid keys
    // are refused before any tool runs.
    const pinned = config(c.env).mcpAccountId;
    if (pinned && auth.account.id !== pinned) {
      throw new Forbidden(
        "mcp_account_not_allowed",
        "This MCP endpoint serves a single account; this key belongs to another.",
      );
    }
    c.set("actor", { type: "mcp", id: auth.key.id });
    await next();
  },
);

mcpRoutes.post("/mcp", async (c) => {
  const auth = c.get("auth");
  if (!auth) throw new Unauthorized();
  // The body is read here, not by the SDK: a JSON-RPC batch would run many tool calls on one
  // rate-limit token (the SDK accepts up to 100 and starts them all at once), so only single
  // messages are served. MCP 2025-06-18 dropped batching; the official clients never send one.
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    return jsonRpcError(400, -32700, "Parse error: the body is not a JSON-RPC message.");
  }
  if (Array.isArray(body) && body.length !== 1) {
    return jsonRpcError(400, -32600, "Batch requests are not supported: send one JSON-RPC message per request.");
  }
  const server = buildMcpServer({ ctx: serviceContext(c), auth }, c.req.raw.signal);
  const transport = new WebStandardStreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    enableJsonResponse: true,
    maxRequestBodySize: SEND_BODY_LIMIT_BYTES,
  });
  await server.connect(transport);
  return transport.handleRequest(c.req.raw, { parsedBody: body });
});

mcpRoutes.on(["GET", "DELETE"], "/mcp", () => {
  throw new MethodNotAllowed(["POST"], "This MCP endpoint is stateless: POST JSON-RPC messages to it.");
});

/** A JSON-RPC error answered before the SDK sees the request (the shape the SDK's transport uses). */
function jsonRpcError(status: number, code: number, message: string): Response {
  return Response.json({ jsonrpc: "2.0", error: { code, message }, id: null }, { status });
}
