import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireScope } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { PageQuery, pageOf, toPage } from "../../lib/pagination";
import {
  CreateWebhookInput,
  DeletedWebhookWire,
  PatchWebhookInput,
  WebhookAttemptWire,
  WebhookIdParam,
  WebhookTestWire,
  WebhookWire,
  WebhookWithSecretWire,
} from "./webhooks.schemas";
import {
  createWebhook,
  deleteWebhook,
  getWebhook,
  listDeliveries,
  listWebhooks,
  patchWebhook,
  rotateSecret,
  sendTestEvent,
  toDeliveryWire,
  toWebhookWire,
} from "./webhooks.service";

const tags = ["Webhooks"];

export const webhookRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

webhookRoutes.use("/webhooks", idempotent);
webhookRoutes.use("/webhooks/:webhook_id/test", idempotent);

webhookRoutes.openapi(
  jsonRoute({
    request: { body: jsonBody(CreateWebhookInput) },
    method: "post",
    path: "/webhooks",
    tags,
    summary: "Create a webhook endpoint (the secret is shown once; a webhook.test event follows)",
    description:
      "`url` must be https and must not be, or resolve to, a private, loopback, link-local, CGNAT or metadata address. `events` lists event types, `*` for all (the default). `inbox_id` limits it to one inbox's events. *(new)* Endpoints are capped per account by tier (sandbox 10; the account's `limits.max_webhooks`).",
    data: WebhookWithSecretWire,
    status: 201,
    idempotent: true,
    errors: { 403: "`webhook_limit_reached`: the tier's endpoint cap is reached (or the key lacks the scope)" },
  }),
  async (c) => {
    requireScope(c, "manage");
    const { row, secret } = await createWebhook(serviceContext(c), c.req.valid("json"));
    return c.json({ data: { ...toWebhookWire(row), secret } }, 201);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { query: PageQuery },
    method: "get",
    path: "/webhooks",
    tags,
    summary: "List webhook endpoints",
    data: WebhookWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const q = c.req.valid("query");
    const { items, nextCursor } = pageOf(await listWebhooks(serviceContext(c), toPage(q)), q.limit);
    return c.json({ data: items.map(toWebhookWire), meta: { limit: q.limit, next_cursor: nextCursor } }, 200);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { params: WebhookIdParam },
    method: "get",
    path: "/webhooks/{webhook_id}",
    tags,
    summary: "Get a webhook endpoint",
    data: WebhookWire,
  }),
  async (c) => {
    requireScope(c, "read");
    const row = await getWebhook(serviceContext(c), c.req.valid("param").webhook_id);
    return c.json({ data: toWebhookWire(row) }, 200);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { params: WebhookIdParam, body: jsonBody(PatchWebhookInput) },
    method: "patch",
    path: "/webhooks/{webhook_id}",
    tags,
    summary: "Update a webhook endpoint (url, events, enabled, inbox_id, description)",
    data: WebhookWire,
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await patchWebhook(serviceContext(c), c.req.valid("param").webhook_id, c.req.valid("json"));
    return c.json({ data: toWebhookWire(row) }, 200);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { params: WebhookIdParam },
    method: "delete",
    path: "/webhooks/{webhook_id}",
    tags,
    summary: "Delete a webhook endpoint (pending deliveries are cancelled)",
    data: DeletedWebhookWire,
  }),
  async (c) => {
    requireScope(c, "manage");
    const id = c.req.valid("param").webhook_id;
    await deleteWebhook(serviceContext(c), id);
    return c.json({ data: { id, deleted: true as const } }, 200);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { params: WebhookIdParam },
    method: "post",
    path: "/webhooks/{webhook_id}/enable",
    tags,
    summary: "Re-enable a webhook endpoint (after a 410 or a manual disable)",
    data: WebhookWire,
  }),
  async (c) => {
    requireScope(c, "manage");
    const row = await patchWebhook(serviceContext(c), c.req.valid("param").webhook_id, { enabled: true });
    return c.json({ data: toWebhookWire(row) }, 200);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { params: WebhookIdParam },
    method: "post",
    path: "/webhooks/{webhook_id}/rotate-secret",
    tags,
    summary: "Rotate the signing secret (the old one keeps signing, alongside, for 24 h)",
    data: WebhookWithSecretWire,
  }),
  async (c) => {
    requireScope(c, "manage");
    const { row, secret } = await rotateSecret(serviceContext(c), c.req.valid("param").webhook_id);
    return c.json({ data: { ...toWebhookWire(row), secret } }, 200);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { params: WebhookIdParam },
    method: "post",
    path: "/webhooks/{webhook_id}/test",
    tags,
    summary: "Send a webhook.test event to this endpoint",
    data: WebhookTestWire,
    status: 202,
    idempotent: true,
  }),
  async (c) => {
    requireScope(c, "manage");
    const result = await sendTestEvent(serviceContext(c), c.req.valid("param").webhook_id);
    return c.json({ data: result }, 202);
  },
);

webhookRoutes.openapi(
  jsonRoute({
    request: { params: WebhookIdParam, query: PageQuery },
    method: "get",
    path: "/webhooks/{webhook_id}/deliveries",
    tags,
    summary: "Delivery attempts of this endpoint, newest first (status code, error, duration)",
    data: WebhookAttemptWire,
    list: true,
  }),
  async (c) => {
    requireScope(c, "read");
    const q = c.req.valid("query");
    const rows = await listDeliveries(serviceContext(c), c.req.valid("param").webhook_id, toPage(q));
    const { items, nextCursor } = pageOf(rows, q.limit);
    return c.json({ data: items.map(toDeliveryWire), meta: { limit: q.limit, next_cursor: nextCursor } }, 200);
  },
);
