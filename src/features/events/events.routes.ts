import { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { config } from "../../config";
import type { AppEnv } from "../../http/app-env";
import { offeredProtocols, requireScope, WS_PROTOCOL } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute, sseRoute, webSocketRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { BadRequest, ValidationFailed } from "../../lib/errors";
import { pageOf, toPage } from "../../lib/pagination";
import { tierLimits } from "../../lib/tiers";
import { replayEvent, toReplayWire } from "../webhooks/webhooks.service";
import {
  EventCursor,
  EventIdParam,
  EventWire,
  ListEventsQuery,
  ReplayEventInput,
  ReplayWire,
  StreamEventsQuery,
} from "./events.schemas";
import {
  eventsAfter,
  getEvent,
  listEvents,
  openEventStream,
  type StreamInput,
  toEventWire,
  waitForEvents,
} from "./events.service";

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

/** The stream's filters, cursor (Last-Event-ID wins over ?after=) and the key's cap, from a validated request. */
function streamInput(
  c: Context<AppEnv>,
  q: { type?: string | string[] | undefined; inbox_id?: string | undefined; after?: string | undefined },
  transport: StreamInput["transport"],
): StreamInput {
  const auth = requireScope(c, "read");
  const header = c.req.header("Last-Event-ID")?.trim();
  if (header !== undefined && header !== "" && !EventCursor.safeParse(header).success) {
    throw new ValidationFailed([{ path: "Last-Event-ID", message: "an event id (evt_…)" }]);
  }
  const limits = tierLimits(config(c.env).tiers, auth.account.tier);
  const types = q.type === undefined ? [] : Array.isArray(q.type) ? q.type : [q.type];
  return {
    transport,
    types,
    inboxId: q.inbox_id ?? null,
    after: header || q.after || null,
    keyId: auth.key.id,
    cap: limits.stream_connections,
    accountCap: limits.stream_connections_per_account,
  };
}

const STREAM_DESCRIPTION =
  "Every event committed after the cursor (`Last-Event-ID` header or `?after=`), in commit order, then each new event as it commits: no gap, no duplicate. Without a cursor, events from now on. Same visibility as `GET /v1/events` (a key restricted to inboxes sees only their events). Open streams are capped by tier per API key (`limits.stream_connections`) and per account (`limits.stream_connections_per_account`): one more is 429 `connection_limit_reached` (`details.scope`: `key` or `account`). A cursor more than 10,000 events behind the newest is 410 `cursor_too_old`: catch up with `GET /v1/events?after=`, then stream.";

eventRoutes.openapi(
  sseRoute({
    request: { query: StreamEventsQuery },
    path: "/events/stream",
    tags,
    summary: "Stream events (Server-Sent Events)",
    description: `${STREAM_DESCRIPTION} Each event is \`id: <event id>\`, \`event: <type>\`, \`data: <Event JSON>\`; a comment line (\`: heartbeat\`) every 15 s; the server may end a stream after a while (30 min), and the client reconnects with \`Last-Event-ID\`, losing nothing.`,
    errors: {
      410: "`cursor_too_old`: the cursor is more than 10,000 events behind; catch up with `GET /v1/events?after=`",
      429: "Rate limited, or `connection_limit_reached`: this key or account has as many open streams as its tier allows",
    },
  }),
  async (c) => {
    const input = streamInput(c, c.req.valid("query"), "sse");
    const stream = await openEventStream(serviceContext(c), input);
    if (!("body" in stream)) throw new Error("an SSE stream without a body");
    c.header("Content-Type", "text/event-stream; charset=utf-8");
    c.header("Cache-Control", "no-cache, no-transform");
    // Proxies that buffer (nginx) would hold events back.
    c.header("X-Accel-Buffering", "no");
    return c.body(stream.body, 200);
  },
);

eventRoutes.openapi(
  webSocketRoute({
    request: { query: StreamEventsQuery },
    path: "/events/ws",
    tags,
    summary: "Stream events over a WebSocket",
    description: `${STREAM_DESCRIPTION} One text message per event, the Event JSON. Authenticate with \`Authorization: Bearer mb_…\` or, from a browser, offer the key as a subprotocol next to \`mailbot\`: \`new WebSocket(url, ["mailbot", key])\` (the server answers \`mailbot\`). Send \`ping\` to get \`pong\`. Resume with \`?after=<last event id>\`.`,
    errors: {
      400: "Not a WebSocket upgrade (`websocket_upgrade_required`)",
      410: "`cursor_too_old`: the cursor is more than 10,000 events behind; catch up with `GET /v1/events?after=`",
      429: "Rate limited, or `connection_limit_reached`: this key or account has as many open streams as its tier allows",
    },
  }),
  async (c) => {
    if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
      throw new BadRequest("websocket_upgrade_required", "This endpoint speaks WebSocket: send Upgrade: websocket.");
    }
    const input = streamInput(c, c.req.valid("query"), "ws");
    input.protocol = offeredProtocols(c).includes(WS_PROTOCOL) ? WS_PROTOCOL : null;
    const stream = await openEventStream(serviceContext(c), input);
    if (!("webSocket" in stream)) throw new Error("a WebSocket stream without a socket");
    const headers = new Headers();
    if (stream.protocol) headers.set("Sec-WebSocket-Protocol", stream.protocol);
    // Hono's typed responses have no 101 with a socket; the declared route documents it.
    return new Response(null, { status: 101, webSocket: stream.webSocket, headers }) as never;
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
