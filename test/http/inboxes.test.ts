import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";

describe("/v1/inboxes", () => {
  it("creates an inbox on the shared domain, audited in the same batch", async () => {
    const a = await createAccount();
    const res = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "Support.Team", display_name: "Support", labels: ["prod"] },
    });
    expect(res.status, res.text).toBe(201);
    expect(res.body.data).toMatchObject({
      id: expect.stringMatching(/^inbox_[0-9a-z]{26}$/),
      username: "support.team",
      domain: "mailbot.test",
      address: `support.team--${a.account.short_id}@mailbot.test`,
      display_name: "Support",
      status: "active",
      disabled_reason: null,
      labels: ["prod"],
    });
    const row = await env.DB.prepare("SELECT address, account_id FROM inboxes WHERE id = ?")
      .bind(res.body.data.id)
      .first();
    expect(row).toEqual({ address: res.body.data.address, account_id: a.account.id });
    const audit = await env.DB.prepare(
      "SELECT actor_type, actor_id, request_id, inbox_id FROM audit_log WHERE action = 'inbox.created' AND target_id = ?",
    )
      .bind(res.body.data.id)
      .first();
    expect(audit).toEqual({
      actor_type: "api_key",
      actor_id: expect.stringMatching(/^key_/),
      request_id: res.headers.get("X-Request-Id"),
      inbox_id: res.body.data.id,
    });
  });

  it("is 409 on a taken address and writes nothing", async () => {
    const a = await createAccount();
    expect((await call("POST", "/v1/inboxes", { key: a.key, body: { username: "twice" } })).status).toBe(201);
    const count = async () =>
      (
        await env.DB.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ?")
          .bind(a.account.id)
          .first<{ n: number }>()
      )?.n;
    const before = await count();
    const dup = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "TWICE" } });
    expect(expectError(dup, 409, "address_taken").details.address).toBe(`twice--${a.account.short_id}@mailbot.test`);
    expect(await count()).toBe(before);
  });

  it("validates usernames, domains, labels and unknown fields", async () => {
    const a = await createAccount();
    const bad = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "no spaces!", labels: ["x".repeat(65)], color: "red" },
    });
    const paths = expectError(bad, 422, "validation_error").details.map((d: { path: string }) => d.path);
    expect(paths).toEqual(expect.arrayContaining(["username", "labels.0"]));
    expectError(
      await call("POST", "/v1/inboxes", { key: a.key, body: { username: "x".repeat(65) } }),
      422,
      "validation_error",
    );
    expectError(await call("POST", "/v1/inboxes", { key: a.key, body: {} }), 422, "validation_error");
    const domain = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "ok", domain: "unverified.example" },
    });
    expect(expectError(domain, 422, "validation_error").details[0].path).toBe("domain");
    expectError(
      await call("PATCH", `/v1/inboxes/${a.inbox.id}`, { key: a.key, body: { username: "rename" } }),
      422,
      "validation_error",
    );
  });

  it("lists newest first with cursor pagination", async () => {
    const a = await createAccount();
    for (const name of ["p1", "p2", "p3"]) await call("POST", "/v1/inboxes", { key: a.key, body: { username: name } });
    const first = await call("GET", "/v1/inboxes?limit=2", { key: a.key });
    expect(first.body.data.map((i: { username: string }) => i.username)).toEqual(["p3", "p2"]);
    expect(first.body.meta).toEqual({ limit: 2, next_cursor: expect.any(String) });
    const second = await call("GET", `/v1/inboxes?limit=2&cursor=${first.body.meta.next_cursor}`, { key: a.key });
    expect(second.body.data.map((i: { username: string }) => i.username)).toEqual(["p1", "sandbox"]);
    expect(second.body.meta.next_cursor).toBeNull();
    expectError(await call("GET", "/v1/inboxes?limit=0", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/inboxes?limit=101", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/inboxes?cursor=%%%", { key: a.key }), 400, "invalid_cursor");
  });

  it("gets, patches, deactivates and re-enables, with audit entries", async () => {
    const a = await createAccount();
    const id = a.inbox.id;
    expect((await call("GET", `/v1/inboxes/${id}`, { key: a.key })).body.data.id).toBe(id);
    expectError(await call("GET", "/v1/inboxes/inbox_missing", { key: a.key }), 404, "not_found");

    const patched = await call("PATCH", `/v1/inboxes/${id}`, {
      key: a.key,
      body: { display_name: "Agent", labels: ["a", "b"] },
    });
    expect(patched.body.data).toMatchObject({ display_name: "Agent", labels: ["a", "b"] });

    const off = await call("DELETE", `/v1/inboxes/${id}`, { key: a.key });
    expect(off.status).toBe(200);
    expect(off.body.data).toMatchObject({ status: "disabled", disabled_reason: "deactivated" });
    // Soft: the row and its data stay.
    expect((await call("GET", `/v1/inboxes/${id}`, { key: a.key })).body.data.display_name).toBe("Agent");

    const on = await call("POST", `/v1/inboxes/${id}/enable`, { key: a.key });
    expect(on.body.data).toMatchObject({ status: "active", disabled_reason: null });

    const actions = await env.DB.prepare("SELECT action FROM audit_log WHERE target_id = ? ORDER BY seq")
      .bind(id)
      .all();
    expect(actions.results.map((r) => r.action)).toEqual([
      "inbox.created",
      "inbox.updated",
      "inbox.deactivated",
      "inbox.enabled",
    ]);
  });

  it("enforces the tier's inbox limit", async () => {
    const a = await createAccount();
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { tier: "tight" } });
    expect((await call("POST", "/v1/inboxes", { key: a.key, body: { username: "second" } })).status).toBe(201);
    expectError(
      await call("POST", "/v1/inboxes", { key: a.key, body: { username: "third" } }),
      403,
      "inbox_limit_reached",
    );
  });
});
