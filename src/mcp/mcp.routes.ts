import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { AppEnv } from "../env";
import { SEND_BODY_LIMIT_BYTES } from "../features/messages/outbound.schemas";
import { requireApiKey } from "../http/auth";
import { serviceContext } from "../http/context";
import { AppError, Forbidden, PayloadTooLarge, Unauthorized } from "../lib/errors";
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
    const pinned = c.env.MCP_ACCOUNT_ID?.trim();
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
  const server = buildMcpServer({ ctx: serviceContext(c), auth }, c.req.raw.signal);
  const transport = new WebStandardStreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    enableJsonResponse: true,
  });
  await server.connect(transport);
  return transport.handleRequest(c.req.raw);
});

mcpRoutes.on(["GET", "DELETE"], "/mcp", () => {
  throw new AppError(
    405,
    "method_not_allowed",
    "This MCP endpoint is stateless: POST JSON-RPC messages to it.",
    undefined,
    {
      Allow: "POST",
    },
  );
});
