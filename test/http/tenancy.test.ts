import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { call, registerAccount } from "../helpers/api";
import { expectTenancyOnEveryIdRoute } from "../helpers/tenancy";

describe("tenancy", () => {
  it("another account's ids are 404 on every route with an id, and leak nothing", async () => {
    const a = await registerAccount("owner");
    const b = await registerAccount("intruder");
    const extraKey = await call("POST", "/v1/api-keys", { key: a.key, body: { name: "second" } });
    expect(extraKey.status).toBe(201);

    const before = await env.DB.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    const { checked } = await expectTenancyOnEveryIdRoute(
      { ids: { inbox_id: a.inbox.id, key_id: extraKey.body.data.id }, secrets: [a.inbox.address, a.account.email] },
      b.key,
    );
    expect(checked).toEqual(
      expect.arrayContaining([
        "GET /v1/inboxes/{inbox_id}",
        "PATCH /v1/inboxes/{inbox_id}",
        "DELETE /v1/inboxes/{inbox_id}",
        "POST /v1/inboxes/{inbox_id}/enable",
        "DELETE /v1/api-keys/{key_id}",
      ]),
    );

    // Nothing of A changed: the inbox is intact, the key still works, no audit entry was written.
    const inbox = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(inbox.body.data).toMatchObject({ status: "active", display_name: null });
    expect((await call("GET", "/v1/account", { key: extraKey.body.data.key })).status).toBe(200);
    const after = await env.DB.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    expect(after?.n).toBe(before?.n);
  });

  it("lists never include another account's data", async () => {
    const a = await registerAccount("owner");
    const b = await registerAccount("intruder");
    for (const path of ["/v1/inboxes", "/v1/api-keys", "/v1/audit-log"]) {
      const res = await call("GET", path, { key: b.key });
      expect(res.status).toBe(200);
      expect(res.text).not.toContain(a.account.id);
      expect(res.text).not.toContain(a.inbox.id);
    }
  });
});
