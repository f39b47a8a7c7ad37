import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { PageQuery, pageOf, toPage } from "../../lib/pagination";
import { CreateInboxInput, InboxIdParam, InboxWire, PatchInboxInput } from "./inboxes.schemas";
import {
  createInbox,
  deactivateInbox,
  enableInbox,
  getInbox,
  listInboxes,
  patchInbox,
  toInboxWire,
} from "./inboxes.service";

const tags = ["Inboxes"];

export const inboxRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

inboxRoutes.use("/inboxes", idempotent);

inboxRoutes.openapi(
  jsonRoute({
    request: { body: jsonBody(CreateInboxInput) },
    method: "post",
    path: "/inboxes",
    tags,
    summary: "Create an inbox",
    data: InboxWire,
    status: 201,
    idempotent: true,
  }),
  async (c) => {
    const auth = requireScope(c, "manage");
    const row = await createInbox(serviceContext(c), auth.account, c.req.valid("json"));
    return c.json({ data: toInboxWire(row) }, 201);
  },
);

inboxRoutes.openapi(
  jsonRoute({
    request: { query: PageQuery },
    method: "get",
    path: "/inboxes",
    tags,
    summary: "List inboxes",
    data: InboxWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const query = c.req.valid("query");
    const { items, nextCursor } = pageOf(await listInboxes(serviceContext(c), toPage(query)), query.limit);
    return c.json({ data: items.map(toInboxWire), meta: { limit: query.limit, next_cursor: nextCursor } }, 200);
  },
);

inboxRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam },
    method: "get",
    path: "/inboxes/{inbox_id}",
    tags,
    summary: "Get an inbox",
    data: InboxWire,
  }),
  async (c) => {
    requireScope(c, "read");
    const row = await getInbox(serviceContext(c), c.req.valid("param").inbox_id);
    return c.json({ data: toInboxWire(row) }, 200);
  },
);

inboxRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam, body: jsonBody(PatchInboxInput) },
    method: "patch",
    path: "/inboxes/{inbox_id}",
    tags,
    summary: "Update an inbox's display name or labels",

    data: InboxWire,
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await patchInbox(serviceContext(c), c.req.valid("param").inbox_id, c.req.valid("json"));
    return c.json({ data: toInboxWire(row) }, 200);
  },
);

inboxRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam },
    method: "delete",
    path: "/inboxes/{inbox_id}",
    tags,
    summary: "Deactivate an inbox (soft: data stays, inbound is rejected)",

    data: InboxWire,
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await deactivateInbox(serviceContext(c), c.req.valid("param").inbox_id);
    return c.json({ data: toInboxWire(row) }, 200);
  },
);

inboxRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam },
    method: "post",
    path: "/inboxes/{inbox_id}/enable",
    tags,
    summary: "Re-activate an inbox",
    description:
      "Re-activates a deactivated inbox. An inbox disabled for its bounce or complaint rate is re-enabled only by an operator (`POST /v1/admin/inboxes/{inbox_id}/enable`).",
    data: InboxWire,
    errors: { 409: "`reputation_review_required`: the inbox was disabled for its bounce or complaint rate (audited)" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await enableInbox(serviceContext(c), c.req.valid("param").inbox_id);
    return c.json({ data: toInboxWire(row) }, 200);
  },
);
