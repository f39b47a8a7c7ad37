import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { pageOf, toPage } from "../../lib/pagination";
import { replayEvent, toReplayWire } from "../webhooks/webhooks.service";
import { EventIdParam, EventWire, ListEventsQuery, ReplayEventInput, ReplayWire } from "./events.schemas";
import { eventsAfter, getEvent, listEvents, toEventWire, waitForEvents } from "./events.service";

const tags = ["Events"];

export const eventRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

eventRoutes.use("/events/:event_id/replay", idempotent);

eventRoutes.openapi(
  jsonRoute({
    request: { query: ListEventsQuery },
    method: "get",
    path: "/events",
    tags,
    summary: "List events, or long-poll for newer ones",
    description:
      "Newest first with `cursor` pagination. With `after=<event id>`: only events committed after it, oldest first (page forward with the last id you saw). With `wait=<seconds <= 30>`: when nothing matches yet, waits and answers as soon as something does, else an empty list.",
    data: EventWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const q = c.req.valid("query");
    const ctx = serviceContext(c);
    const filters = { type: q.type, inboxId: q.inbox_id, threadId: q.thread_id };
    const waitMs = (q.wait ?? 0) * 1000;
    const signal = c.req.raw.signal;
    if (q.after) {
      const rows = await eventsAfter(ctx, q.after, filters, q.limit, waitMs, signal);
      return c.json({ data: rows.map(toEventWire), meta: { limit: q.limit, next_cursor: null } }, 200);
    }
    const page = toPage(q);
    const rows =
      waitMs > 0 ? await waitForEvents(ctx, filters, page, waitMs, signal) : await listEvents(ctx, filters, page);
    const { items, nextCursor } = pageOf(rows, q.limit);
    return c.json({ data: items.map(toEventWire), meta: { limit: q.limit, next_cursor: nextCursor } }, 200);
  },
);

eventRoutes.openapi(
  jsonRoute({
    request: { params: EventIdParam },
    method: "get",
    path: "/events/{event_id}",
    tags,
    summary: "Get an event",
    data: EventWire,
  }),
  async (c) => {
    requireScope(c, "read");
    const row = await getEvent(serviceContext(c), c.req.valid("param").event_id);
    return c.json({ data: toEventWire(row) }, 200);
  },
);

eventRoutes.openapi(
  jsonRoute({
    request: { params: EventIdParam, body: jsonBody(ReplayEventInput) },
    method: "post",
    path: "/events/{event_id}/replay",
    tags,
    summary: "Re-deliver a stored event (same id) to its webhooks, or to target_url",
    data: ReplayWire,
    status: 202,
    idempotent: true,
    errors: { 422: "Validation failed, the target URL was refused, or no webhook endpoint matches the event" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const result = await replayEvent(serviceContext(c), c.req.valid("param").event_id, c.req.valid("json"));
    return c.json({ data: toReplayWire(result) }, 202);
  },
);
