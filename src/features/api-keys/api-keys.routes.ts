import { OpenAPIHono } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { requireFullAccess } from "../../http/auth";
import { serviceContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { PageQuery, pageOf, toPage } from "../../lib/pagination";
import { ApiKeyWire, CreatedApiKeyWire, CreateKeyInput, KeyIdParam } from "./api-keys.schemas";
import { createKey, listKeys, revokeKey, toKeyWire } from "./api-keys.service";

const tags = ["API keys"];

export const apiKeyRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

apiKeyRoutes.use("/api-keys", idempotent);

apiKeyRoutes.openapi(
  jsonRoute({
    request: { body: jsonBody(CreateKeyInput) },
    method: "post",
    path: "/api-keys",
    tags,
    summary: "Create an API key (the key is shown only in this response)",

    data: CreatedApiKeyWire,
    status: 201,
    idempotent: true,
  }),
  async (c) => {
    requireFullAccess(c);
    const { row, key } = await createKey(serviceContext(c), c.req.valid("json"));
    return c.json({ data: { ...toKeyWire(row), key } }, 201);
  },
);

apiKeyRoutes.openapi(
  jsonRoute({
    request: { query: PageQuery },
    method: "get",
    path: "/api-keys",
    tags,
    summary: "List API keys",
    data: ApiKeyWire,
    list: true,
  }),
  async (c) => {
    requireFullAccess(c);
    const query = c.req.valid("query");
    const { items, nextCursor } = pageOf(await listKeys(serviceContext(c), toPage(query)), query.limit);
    return c.json({ data: items.map(toKeyWire), meta: { limit: query.limit, next_cursor: nextCursor } }, 200);
  },
);

apiKeyRoutes.openapi(
  jsonRoute({
    request: { params: KeyIdParam },
    method: "delete",
    path: "/api-keys/{key_id}",
    tags,
    summary: "Revoke an API key (effective on its next request)",

    data: ApiKeyWire,
  }),
  async (c) => {
    requireFullAccess(c);
    const row = await revokeKey(serviceContext(c), c.req.valid("param").key_id);
    return c.json({ data: toKeyWire(row) }, 200);
  },
);
