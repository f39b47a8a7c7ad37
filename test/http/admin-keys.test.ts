import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ADMIN_TOKEN, call, expectError, registerAccount } from "../helpers/api";

const issue = (accountId: string, body: unknown, key: string | null = ADMIN_TOKEN) =>
  call("POST", `/v1/admin/accounts/${accountId}/api-keys`, { key, body });

describe("POST /v1/admin/accounts/:id/api-keys (an operator issues a key, e.g. for a lost first key)", () => {
  it("issues a working key, shown once, audited as api_key.created by the admin", async () => {
    const a = await registerAccount("lost-key");
    const res = await issue(a.account.id, { name: "recovery" });
    expect(res.status, res.text).toBe(201);
    expect(res.body.data).toMatchObject({
      id: expect.stringMatching(/^key_/),
      name: "recovery",
      scopes: ["full"],
      inbox_ids: null,
      revoked_at: null,
      key: expect.stringMatching(/^mb_[0-9A-Za-z]{40}$/),
    });
    expect(res.body.data.prefix).toBe(res.body.data.key.slice(0, res.body.data.prefix.length));

    // The key works, on that account and nowhere else.
    const me = await call("GET", "/v1/account", { key: res.body.data.key });
    expect(me.status, me.text).toBe(200);
    expect(me.body.data.id).toBe(a.account.id);
    const keys = await call("GET", "/v1/api-keys", { key: res.body.data.key });
    expect(keys.body.data.map((k: { id: string }) => k.id)).toContain(res.body.data.id);
    expect(JSON.stringify(keys.body)).not.toContain(res.body.data.key);

    const row = await env.DB.prepare(
      "SELECT actor_type, actor_id, target_type, target_id, metadata FROM audit_log WHERE account_id = ? AND action = 'api_key.created' ORDER BY seq DESC",
    )
      .bind(a.account.id)
      .first<{
        actor_type: string;
        actor_id: string | null;
        target_type: string;
        target_id: string;
        metadata: string;
      }>();
    expect(row).toMatchObject({ actor_type: "admin", target_type: "api_key", target_id: res.body.data.id });
    expect(JSON.parse(row?.metadata ?? "{}")).toMatchObject({ name: "recovery", scopes: ["full"], inbox_ids: null });
    expect(row?.metadata).not.toContain(res.body.data.key);

    // The chain still verifies with the operator's entry in it.
    const verify = await call("GET", "/v1/audit-log/verify", { key: a.key });
    expect(verify.body.data.ok, verify.text).toBe(true);
  });

  it("applies the same rules as POST /v1/api-keys: scopes, inbox_ids of that account only", async () => {
    const a = await registerAccount("scoped");
    const b = await registerAccount("other");
    const res = await issue(a.account.id, { name: "reader", scopes: ["read"], inbox_ids: [a.inbox.id] });
    expect(res.status, res.text).toBe(201);
    expect(res.body.data).toMatchObject({ scopes: ["read"], inbox_ids: [a.inbox.id] });
    const seen = await call("GET", "/v1/inboxes", { key: res.body.data.key });
    expect(seen.body.data.map((i: { id: string }) => i.id)).toEqual([a.inbox.id]);
    expectError(
      await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: res.body.data.key }),
      403,
      "insufficient_scope",
    );

    const foreign = expectError(
      await issue(a.account.id, { name: "x", inbox_ids: [b.inbox.id] }),
      422,
      "validation_error",
    );
    expect(foreign.details).toEqual([{ path: "inbox_ids", message: `Unknown inbox ${b.inbox.id}.` }]);
    expectError(await issue(a.account.id, { scopes: ["read"] }), 422, "validation_error");
    expectError(await issue(a.account.id, { name: "x", scopes: ["root"] }), 422, "validation_error");
  });

  it("needs the ADMIN_TOKEN; 404 for an unknown account", async () => {
    const a = await registerAccount("guarded");
    expectError(await issue(a.account.id, { name: "x" }, null), 401, "missing_api_key");
    expectError(await issue(a.account.id, { name: "x" }, a.key), 401, "invalid_admin_token");
    expectError(await issue("acct_nope", { name: "x" }), 404, "not_found");
    const count = await env.DB.prepare("SELECT count(*) AS n FROM api_keys WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(1);
  });

  it("refuses a suspended or deleted account (409 account_not_active), issuing nothing", async () => {
    const a = await registerAccount("suspended");
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { status: "suspended" } });
    const err = expectError(await issue(a.account.id, { name: "x" }), 409, "account_not_active");
    expect(err.details).toEqual({ status: "suspended" });

    const d = await registerAccount("deleted");
    const closed = await call("DELETE", "/v1/account", { key: d.key });
    expect(closed.status, closed.text).toBe(200);
    expect(expectError(await issue(d.account.id, { name: "x" }), 409, "account_not_active").details).toEqual({
      status: "deleted",
    });
    const count = await env.DB.prepare("SELECT count(*) AS n FROM api_keys WHERE account_id IN (?, ?)")
      .bind(a.account.id, d.account.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(2);
  });

  it("takes an Idempotency-Key: a retry replays the same key instead of issuing a second", async () => {
    const a = await registerAccount("retry");
    const headers = { "Idempotency-Key": crypto.randomUUID() };
    const path = `/v1/admin/accounts/${a.account.id}/api-keys`;
    const first = await call("POST", path, { key: ADMIN_TOKEN, body: { name: "again" }, headers });
    const second = await call("POST", path, { key: ADMIN_TOKEN, body: { name: "again" }, headers });
    expect(first.status, first.text).toBe(201);
    expect(second.headers.get("Idempotent-Replayed")).toBe("true");
    expect(second.body.data.key).toBe(first.body.data.key);
    expectError(
      await call("POST", path, { key: ADMIN_TOKEN, body: { name: "other" }, headers }),
      409,
      "idempotency_key_reused",
    );
    const count = await env.DB.prepare("SELECT count(*) AS n FROM api_keys WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(2);
  });

  it("is described in /openapi.json", async () => {
    const spec = await call("GET", "/openapi.json");
    const op = spec.body.paths["/v1/admin/accounts/{account_id}/api-keys"]?.post;
    expect(op).toBeDefined();
    expect(op.security).toEqual([{ AdminToken: [] }]);
    expect(op.parameters.map((p: { name: string }) => p.name)).toContain("Idempotency-Key");
    expect(Object.keys(op.responses)).toEqual(expect.arrayContaining(["201", "404", "409"]));
  });
});
