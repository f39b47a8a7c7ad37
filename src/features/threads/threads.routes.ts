import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { InboxParam } from "../messages/messages.schemas";
import { GetThreadQuery, ListThreadsQuery, ThreadParams, ThreadWire, ThreadWithMessagesWire } from "./threads.schemas";
import {
  asksForQuarantined,
  getThread,
  listThreads,
  threadPageOf,
  toThreadPage,
  toThreadWire,
  toThreadWithMessagesWire,
} from "./threads.service";

const tags = ["Threads"];

export const threadRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

threadRoutes.openapi(
  jsonRoute({
    request: { params: InboxParam, query: ListThreadsQuery },
    method: "get",
    path: "/inboxes/{inbox_id}/threads",
    tags,
    summary: "List an inbox's threads (most recently active first)",
    description:
      "A thread whose every message is quarantined is left out until one is released, unless `?label=quarantine`.",
    data: ThreadWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const query = c.req.valid("query");
    const rows = await listThreads(
      serviceContext(c),
      c.req.valid("param").inbox_id,
      { label: query.label, withQuarantined: asksForQuarantined(query.label) },
      toThreadPage(query),
    );
    const { items, nextCursor } = threadPageOf(rows, query.limit);
    return c.json({ data: items.map(toThreadWire), meta: { limit: query.limit, next_cursor: nextCursor } }, 200);
  },
);

threadRoutes.openapi(
  jsonRoute({
    request: { params: ThreadParams, query: GetThreadQuery },
    method: "get",
    path: "/inboxes/{inbox_id}/threads/{thread_id}",
    tags,
    summary: "Get a thread with its messages (oldest first)",
    description:
      "Quarantined messages are left out, and a thread with no other message is a 404, until released; `?label=quarantine` returns the thread with its quarantined messages only.",
    data: ThreadWithMessagesWire,
  }),
  async (c) => {
    requireScope(c, "read");
    const ctx = serviceContext(c);
    const { inbox_id, thread_id } = c.req.valid("param");
    const query = c.req.valid("query");
    const found = await getThread(ctx, inbox_id, thread_id, query.include === "body", asksForQuarantined(query.label));
    return c.json({ data: toThreadWithMessagesWire(found) }, 200);
  },
);
