import { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { binaryRoute, jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { toPage } from "../../lib/pagination";
import {
  AttachmentParams,
  GetMessageQuery,
  InboxParam,
  ListMessagesQuery,
  MessageListItemWire,
  MessageParams,
  MessageWire,
  PatchMessageInput,
  SearchMessagesQuery,
  WaitMessagesQuery,
} from "./messages.schemas";
import {
  bodyBudgetPageOf,
  getAttachment,
  getMessage,
  getRaw,
  listMessages,
  patchMessage,
  releaseMessage,
  safeTextOf,
  searchMessages,
  toMessageListWire,
  toMessageWire,
  waitForMessage,
  withBodies,
} from "./messages.service";

const tags = ["Messages"];

export const messageRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

// Static segments (search, wait) are registered before `{message_id}` so they win the match.
messageRoutes.openapi(
  jsonRoute({
    request: { params: InboxParam, query: SearchMessagesQuery },
    method: "get",
    path: "/inboxes/{inbox_id}/messages/search",
    tags,
    summary: "Full-text search over subject, bodies and addresses (every word must match; newest first)",
    description:
      "Each message carries `preview` instead of its bodies; `?include=body` adds them, and a page with bodies stops early (fewer than `limit`, with `next_cursor`) once it carries about 1 MiB of them.",
    data: MessageListItemWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const ctx = serviceContext(c);
    const query = c.req.valid("query");
    const rows = await searchMessages(
      ctx,
      c.req.valid("param").inbox_id,
      query.q,
      toPage(query),
      query.include === "body",
    );
    const { items, nextCursor } = bodyBudgetPageOf(rows, query.limit);
    const data = items.map(toMessageListWire);
    return c.json({ data, meta: { limit: query.limit, next_cursor: nextCursor } }, 200);
  },
);

messageRoutes.openapi(
  jsonRoute({
    request: { params: InboxParam, query: WaitMessagesQuery },
    method: "get",
    path: "/inboxes/{inbox_id}/messages/wait",
    tags,
    summary: "Long-poll for the first message matching the filters",
    description:
      "Answers as soon as a matching message exists (oldest first from `since`, which defaults to the time of the call), or 408 `wait_timeout` after `timeout_ms` (at most 30000).",
    data: MessageWire,
    errors: { 408: "`wait_timeout`: no matching message arrived within `timeout_ms`" },
  }),
  async (c) => {
    requireScope(c, "read");
    const ctx = serviceContext(c);
    const query = c.req.valid("query");
    const row = await waitForMessage(ctx, c.req.valid("param").inbox_id, query, c.req.raw.signal);
    return c.json({ data: toMessageWire(row) }, 200);
  },
);

messageRoutes.openapi(
  jsonRoute({
    request: { params: InboxParam, query: ListMessagesQuery },
    method: "get",
    path: "/inboxes/{inbox_id}/messages",
    tags,
    summary: "List an inbox's messages (newest first)",
    description:
      "Each message carries `preview` instead of its bodies; `?include=body` adds them, and a page with bodies stops early (fewer than `limit`, with `next_cursor`) once it carries about 1 MiB of them.",
    data: MessageListItemWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const ctx = serviceContext(c);
    const query = c.req.valid("query");
    const rows = await listMessages(
      ctx,
      c.req.valid("param").inbox_id,
      {
        direction: query.direction,
        label: query.label,
        threadId: query.thread_id,
        sinceMs: query.since,
        untilMs: query.until,
      },
      toPage(query),
      query.include === "body",
    );
    const { items, nextCursor } = bodyBudgetPageOf(rows, query.limit);
    const data = items.map(toMessageListWire);
    return c.json({ data, meta: { limit: query.limit, next_cursor: nextCursor } }, 200);
  },
);

messageRoutes.openapi(
  jsonRoute({
    request: { params: MessageParams, query: GetMessageQuery },
    method: "get",
    path: "/inboxes/{inbox_id}/messages/{message_id}",
    tags,
    summary: "Get a message (`?view=safe` adds `safe_text`)",
    data: MessageWire,
  }),
  async (c) => {
    requireScope(c, "read");
    const ctx = serviceContext(c);
    const { inbox_id, message_id } = c.req.valid("param");
    const row = await withBodies(ctx, await getMessage(ctx, inbox_id, message_id));
    const data = toMessageWire(row);
    if (c.req.valid("query").view === "safe") data.safe_text = safeTextOf(row);
    return c.json({ data }, 200);
  },
);

messageRoutes.openapi(
  jsonRoute({
    request: { params: MessageParams },
    method: "post",
    path: "/inboxes/{inbox_id}/messages/{message_id}/release",
    tags,
    summary: "Release a quarantined message (audited)",
    description:
      "Removes the `quarantine` label: the message joins lists, `wait` and the MCP tools. 409 `not_quarantined` when it is not held.",
    data: MessageWire,
    errors: { 409: "`not_quarantined`" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const ctx = serviceContext(c);
    const { inbox_id, message_id } = c.req.valid("param");
    const row = await withBodies(ctx, await releaseMessage(ctx, inbox_id, message_id));
    return c.json({ data: toMessageWire(row) }, 200);
  },
);

messageRoutes.openapi(
  jsonRoute({
    request: { params: MessageParams, body: jsonBody(PatchMessageInput) },
    method: "patch",
    path: "/inboxes/{inbox_id}/messages/{message_id}",
    tags,
    summary: "Update a message's labels (replace with `labels`, or `add_labels` / `remove_labels`)",
    data: MessageWire,
  }),
  async (c) => {
    requireScope(c, "manage");
    const ctx = serviceContext(c);
    const { inbox_id, message_id } = c.req.valid("param");
    const row = await withBodies(ctx, await patchMessage(ctx, inbox_id, message_id, c.req.valid("json")));
    return c.json({ data: toMessageWire(row) }, 200);
  },
);

/** Headers for a download: never rendered by a browser as a page of ours. */
function downloadHeaders(c: Context<AppEnv>, contentType: string, size: number, filename: string) {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, "_");
  // The type comes from the sender's MIME headers: only a plain type/subtype is passed on.
  c.header("Content-Type", /^[\w.+-]+\/[\w.+-]+$/.test(contentType) ? contentType : "application/octet-stream");
  c.header("Content-Length", String(size));
  c.header("Content-Disposition", `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`);
  c.header("X-Content-Type-Options", "nosniff");
  c.header("Content-Security-Policy", "default-src 'none'; sandbox");
  c.header("Cache-Control", "private, no-store");
}

messageRoutes.openapi(
  binaryRoute({
    request: { params: MessageParams },
    path: "/inboxes/{inbox_id}/messages/{message_id}/raw",
    tags,
    summary: "The raw message (message/rfc822), exactly the bytes received or sent",
    contentType: "message/rfc822",
  }),
  async (c) => {
    requireScope(c, "read");
    const { inbox_id, message_id } = c.req.valid("param");
    const obj = await getRaw(serviceContext(c), inbox_id, message_id);
    downloadHeaders(c, "message/rfc822", obj.size, `${message_id}.eml`);
    return c.body(obj.body, 200);
  },
);

messageRoutes.openapi(
  binaryRoute({
    request: { params: AttachmentParams },
    path: "/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}",
    tags,
    summary: "Download an attachment (streamed, Content-Disposition: attachment)",
    contentType: "application/octet-stream",
  }),
  async (c) => {
    requireScope(c, "read");
    const { inbox_id, message_id, attachment_id } = c.req.valid("param");
    const { row, body } = await getAttachment(serviceContext(c), inbox_id, message_id, attachment_id);
    downloadHeaders(c, row.contentType, body.size, row.filename ?? attachment_id);
    return c.body(body.body, 200);
  },
);
