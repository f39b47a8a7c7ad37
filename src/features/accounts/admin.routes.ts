import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "../../http/app-env";
import { contextFor, requestContext } from "../../http/context";
import { idempotent } from "../../http/idempotency";
import { jsonBody, jsonRoute } from "../../http/openapi";
import { validationHook } from "../../http/validation";
import { pageOf, toPage } from "../../lib/pagination";
import { CreatedApiKeyWire, CreateKeyInput } from "../api-keys/api-keys.schemas";
import { toKeyWire } from "../api-keys/api-keys.service";
import { authStats } from "../api-keys/key-auth";
import { InboxIdParam, InboxWire } from "../inboxes/inboxes.schemas";
import { adminEnableInbox, toInboxWire } from "../inboxes/inboxes.service";
import { AccountIdParam, AccountWire, AdminAccountPatch, AdminAccountsQuery } from "./accounts.schemas";
import { adminIssueKey, adminPatchAccount, adminViewAccount, listAllAccounts, toAccountWire } from "./accounts.service";

const tags = ["Operators"];

/** Operator endpoints, behind the ADMIN_TOKEN secret (mounted under /v1/admin). */
export const adminRoutes = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

adminRoutes.openapi(
  jsonRoute({
    request: { query: AdminAccountsQuery },
    method: "get",
    path: "/accounts",
    tags,
    summary:
      "List every account, or those matching `q` (email, name or id prefix); audited as `account.admin_listed` on each account shown",

    data: AccountWire,
    list: true,
    security: "admin",
  }),
  async (c) => {
    const query = c.req.valid("query");
    const { items, nextCursor } = pageOf(await listAllAccounts(requestContext(c), toPage(query), query.q), query.limit);
    return c.json(
      { data: items.map((a) => toAccountWire(a, c.env)), meta: { limit: query.limit, next_cursor: nextCursor } },
      200,
    );
  },
);

adminRoutes.openapi(
  jsonRoute({
    request: { params: AccountIdParam },
    method: "get",
    path: "/accounts/{account_id}",
    tags,
    summary: "Get an account",

    data: AccountWire,
    security: "admin",
  }),
  async (c) => {
    const row = await adminViewAccount(contextFor(c, c.req.valid("param").account_id));
    return c.json({ data: toAccountWire(row, c.env) }, 200);
  },
);

adminRoutes.openapi(
  jsonRoute({
    request: { params: AccountIdParam, body: jsonBody(AdminAccountPatch) },
    method: "patch",
    path: "/accounts/{account_id}",
    tags,
    summary: "Change an account's tier, status, or new-account window (audited on that account)",

    data: AccountWire,
    security: "admin",
  }),
  async (c) => {
    const ctx = contextFor(c, c.req.valid("param").account_id);
    const row = await adminPatchAccount(ctx, c.req.valid("json"));
    return c.json({ data: toAccountWire(row, c.env) }, 200);
  },
);

adminRoutes.use("/accounts/:account_id/api-keys", idempotent);

adminRoutes.openapi(
  jsonRoute({
    request: { params: AccountIdParam, body: jsonBody(CreateKeyInput) },
    method: "post",
    path: "/accounts/{account_id}/api-keys",
    tags,
    summary: "Issue an API key for an account, e.g. when its owner lost the first one (shown only in this response)",
    data: CreatedApiKeyWire,
    status: 201,
    security: "admin",
    idempotent: true,
    errors: {
      404: "Unknown account.",
      409: "`account_not_active`: the account is suspended or deleted.",
    },
  }),
  async (c) => {
    const ctx = contextFor(c, c.req.valid("param").account_id);
    const { row, key } = await adminIssueKey(ctx, c.req.valid("json"));
    return c.json({ data: { ...toKeyWire(row), key } }, 201);
  },
);

adminRoutes.openapi(
  jsonRoute({
    request: { params: InboxIdParam },
    method: "post",
    path: "/inboxes/{inbox_id}/enable",
    tags,
    summary: "Re-enable an inbox, e.g. one disabled for its bounce or complaint rate (audited with its figures)",
    description:
      "The account cannot re-enable an inbox disabled for its rates (409 `reputation_review_required`); an operator can, after review. The history stays in the 7-day window, so a further bounce or complaint over the threshold disables it again at once.",
    data: InboxWire,
    security: "admin",
    errors: { 404: "Unknown inbox." },
  }),
  async (c) => {
    const row = await adminEnableInbox(requestContext(c), c.req.valid("param").inbox_id);
    return c.json({ data: toInboxWire(row) }, 200);
  },
);

adminRoutes.openapi(
  jsonRoute({
    method: "get",
    path: "/stats",
    tags,
    summary: "Counters of the isolate that answers (Argon2 verifications, key-cache hits)",
    data: z.object({ argon2_verifications: z.number(), key_cache_hits: z.number(), isolate_started_at: z.string() }),
    security: "admin",
  }),
  (c) => {
    if (authStats.startedAt === 0) authStats.startedAt = Date.now();
    return c.json(
      {
        data: {
          argon2_verifications: authStats.argon2Verifications,
          key_cache_hits: authStats.cacheHits,
          isolate_started_at: new Date(authStats.startedAt).toISOString(),
        },
      },
      200,
    );
  },
);
