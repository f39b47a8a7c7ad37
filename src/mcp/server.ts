import { z } from "@hono/zod-openapi";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  type CallToolResult,
  ErrorCode,
  ListToolsRequestSchema,
  McpError,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import { VERSION } from "../features/meta/meta.routes";
import { warningHeaders } from "../features/reputation/reputation.service";
import { assertScope } from "../http/auth";
import { type ErrorBody, errorBody, fieldIssues, httpStatus, kindOfStatus, toAppError } from "../http/errors";
import { runIdempotent } from "../http/idempotency";
import { type AppError, ValidationFailed } from "../lib/errors";
import { log } from "../lib/log";
import { type McpTool, type ToolCall, UNTRUSTED_NOTE } from "./define-tool";
import { errorResult } from "./errors";
import { TOOLS } from "./registry";

const INSTRUCTIONS = `mailbot gives this agent email inboxes: create inboxes, send, reply, forward, search, wait for mail, read threads and the audit log. Every tool acts only on the API key's account (and only on its inboxes when the key is restricted). ${UNTRUSTED_NOTE}`;

/** Tool listings are the same for every request: their JSON Schemas are built once per isolate. */
const listings = new WeakMap<McpTool, Tool>();
const argSchemas = new WeakMap<McpTool, z.ZodType>();

/**
 * A tool's arguments refuse unknown names (`validation_error`), like the send routes' bodies: a
 * misspelt `timeout` on wait_for_message must not silently wait the full 30 s.
 */
function argSchema(tool: McpTool): z.ZodType {
  let found = argSchemas.get(tool);
  if (!found) {
    found = tool.input instanceof z.ZodObject ? tool.input.strict() : tool.input;
    argSchemas.set(tool, found);
  }
  return found;
}

function listing(tool: McpTool): Tool {
  let found = listings.get(tool);
  if (!found) {
    // Input side of the schema: what the agent sends (defaults optional, transforms before they run).
    const { $schema: _, ...schema } = z.toJSONSchema(argSchema(tool), { io: "input", unrepresentable: "any" });
    found = {
      name: tool.name,
      title: tool.title,
      description: `${tool.description}\n\n${UNTRUSTED_NOTE}`,
      inputSchema: schema as Tool["inputSchema"],
      annotations: { title: tool.title, ...tool.annotations },
    };
    listings.set(tool, found);
  }
  return found;
}

async function success(tool: McpTool, data: unknown, call: ToolCall): Promise<CallToolResult> {
  let summary = (tool.summary as (d: unknown) => string)(data);
  let warnings: Record<string, string> | null = null;
  const inboxId = (data as { inbox_id?: unknown }).inbox_id;
  if (tool.warns && typeof inboxId === "string") {
    warnings = await warningHeaders(call.ctx, inboxId, call.ctx.now()).catch((err: unknown) => {
      // Warnings are advice: a counter that cannot answer must not fail the send it rides on.
      log.error("reputation warning lookup failed", { error: String(err) });
      return null;
    });
    if (warnings)
      summary = `Warning: ${Object.entries(warnings)
        .map(([k, v]) => `${k}: ${v}`)
        .join("; ")}. ${summary}`;
  }
  return {
    content: [
      { type: "text", text: summary },
      { type: "text", text: JSON.stringify(data) },
    ],
    structuredContent: data as Record<string, unknown>,
    ...(warnings ? { _meta: { "mailbot/warnings": warnings } } : {}),
  };
}

/** Runs one tool call: scope, validation with the feature's schema, idempotency, the service verb, error mapping. */
async function callTool(tool: McpTool, rawArgs: Record<string, unknown>, call: ToolCall): Promise<CallToolResult> {
  const requestId = call.ctx.requestId;
  try {
    assertScope(call.auth, tool.scope);
    const parsed = argSchema(tool).safeParse(rawArgs);
    if (!parsed.success) throw new ValidationFailed(fieldIssues(parsed.error));
    const args = parsed.data as Record<string, unknown>;
    const key = args.idempotency_key;
    if (!tool.idempotent || typeof key !== "string") return await success(tool, await tool.run(call, args), call);

    // The HTTP route's idempotency, keyed the same way: the body is the arguments minus the
    // path parameters and the key itself, exactly what the HTTP request would carry.
    const spec = tool.idempotent;
    const body = Object.fromEntries(
      Object.entries(rawArgs).filter(([k]) => k !== "idempotency_key" && !spec.pathParams.includes(k)),
    );
    const stored = await runIdempotent(
      call.ctx,
      {
        key,
        scope: `key:${call.auth.key.id}`,
        accountId: call.ctx.accountId,
        method: "POST",
        path: spec.path(args),
        body: JSON.stringify(body),
      },
      async () => {
        try {
          return { status: spec.status, body: JSON.stringify({ data: await tool.run(call, args) }) };
        } catch (err) {
          // Refusals are remembered like the HTTP route's 4xx responses; server errors are not.
          const appError = toAppError(err, requestId);
          if (httpStatus(appError) >= 500) throw appError;
          return { status: httpStatus(appError), body: JSON.stringify({ error: errorBody(appError, requestId) }) };
        }
      },
    );
    const envelope = JSON.parse(stored.body) as { data?: unknown; error?: ErrorBody };
    if (envelope.error) return errorResult(kindOfStatus(stored.status), envelope.error);
    return await success(tool, envelope.data, call);
  } catch (err) {
    // errorResult already turned a stored refusal into a protocol error: pass it on as it is.
    if (err instanceof McpError) throw err;
    const appError: AppError = toAppError(err, requestId);
    return errorResult(appError.kind, errorBody(appError, requestId));
  }
}

/**
 * A fresh MCP server for one request (stateless Streamable HTTP): the SDK's transport refuses
 * reuse across requests, and Workers forbid sharing I/O objects between them.
 */
export function buildMcpServer(call: Omit<ToolCall, "signal">, requestSignal: AbortSignal, tools = TOOLS): Server {
  const byName = new Map(tools.map((t) => [t.name, t]));
  const server = new Server(
    { name: "mailbot", title: "mailbot", version: VERSION },
    { capabilities: { tools: { listChanged: false } }, instructions: INSTRUCTIONS },
  );
  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: tools.map(listing) }));
  server.setRequestHandler(CallToolRequestSchema, (request, extra) => {
    const tool = byName.get(request.params.name);
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${request.params.name}`);
    const signal = AbortSignal.any([requestSignal, extra.signal]);
    return callTool(tool, request.params.arguments ?? {}, { ...call, signal });
  });
  return server;
}
