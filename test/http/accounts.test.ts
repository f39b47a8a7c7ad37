import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { createAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError, registerAccount } from "../helpers/api";
import { auditActions } from "../helpers/db";

async function argon2Runs(): Promise<number> {
  return (await call("GET", "/v1/admin/stats", { key: ADMIN_TOKEN })).body.data.argon2_verifications;
}

describe("POST /v1/auth/register", () => {
  it("creates the account, a full key shown once, and a sandbox inbox, with audit entries", async () => {
    const res = await call("POST", "/v1/auth/register", { body: { email: "Ana@Example.com", name: "Ana" } });
    expect(res.status, res.text).toBe(201);
    const { account, api_key, inbox } = res.body.data;
    expect(api_key).toMatch(/^mb_[0-9A-Za-z]{40}$/);
    expect(account).toMatchObject({
      id: expect.stringMatching(/^acct_[0-9a-z]{26}$/),
      email: "ana@example.com",
      name: "Ana",
      tier: "sandbox",
      status: "active",
      limits: { new_account_send_limit: { limit: 10, window_hours: 24, active: true } },
    });
    expect(Date.parse(account.new_account_until) - Date.parse(account.created_at)).toBe(7 * 24 * 3600 * 1000);
    expect(inbox).toMatchObject({
      username: "sandbox",
      status: "active",
      address: `sandbox--${account.short_id}@mailbot.test`,
    });

    const key = await env.DB.prepare("SELECT prefix, key_hash, scopes FROM api_keys WHERE account_id = ?")
      .bind(account.id)
      .first<{ prefix: string; key_hash: string; scopes: string }>();
    expect(key?.prefix).toBe(api_key.slice(0, 8));
    expect(key?.key_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(JSON.parse(key?.scopes ?? "[]")).toEqual(["full"]);
    expect(await auditActions(account.id)).toEqual(["account.created", "api_key.created", "inbox.created"]);

    const me = await call("GET", "/v1/account", { key: api_key });
    expect(me.status).toBe(200);
    expect(me.body.data.id).toBe(account.id);
  });

  it("rejects bad input with the validation envelope", async () => {
    const res = await call("POST", "/v1/auth/register", { body: { email: "not-an-email", extra: 1 } });
    const error = expectError(res, 422, "validation_error");
    expect(error.details).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ path: "email" }),
        expect.objectContaining({ path: expect.any(String), message: expect.stringMatching(/extra/i) }),
      ]),
    );
  });

  it("is 409 for an email already registered", async () => {
    await call("POST", "/v1/auth/register", { body: { email: "dup@example.com" } });
    expectError(await call("POST", "/v1/auth/register", { body: { email: "DUP@example.com" } }), 409, "email_taken");
  });
});

describe("no plaintext key anywhere in the database", () => {
  it("scans every column of every table after register and key creation", async () => {
    const a = await registerAccount();
    const created = await call("POST", "/v1/api-keys", { key: a.key, body: { name: "ci" } });
    const replayed = await call("POST", "/v1/api-keys", {
      key: a.key,
      body: { name: "idem" },
      headers: { "Idempotency-Key": "scan-idem-1" },
    });
    const secrets = [a.key, created.body.data.key, replayed.body.data.key];
    const tables = await env.DB.prepare(
      "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'",
    ).all<{ name: string }>();
    expect(tables.results.map((t) => t.name)).toEqual(
      expect.arrayContaining(["api_keys", "idempotency_keys", "audit_log"]),
    );
    let cells = 0;
    for (const { name } of tables.results) {
      const rows = await env.DB.prepare(`SELECT * FROM "${name}"`).all<Record<string, unknown>>();
      for (const row of rows.results) {
        for (const value of Object.values(row)) {
          cells++;
          const text = String(value);
          for (const secret of secrets) {
            expect(text.includes(secret), `${name} holds a plaintext key`).toBe(false);
            expect(text.includes(secret.slice(3)), `${name} holds a key body`).toBe(false);
          }
        }
      }
    }
    expect(cells).toBeGreaterThan(50);
  });
});

describe("authentication", () => {
  it("refuses missing, malformed, unknown and wrong keys with 401", async () => {
    const a = await registerAccount();
    expectError(await call("GET", "/v1/inboxes"), 401, "missing_api_key");
    expectError(await call("GET", "/v1/inboxes", { key: "nope" }), 401, "invalid_api_key");
    expectError(await call("GET", "/v1/inboxes", { key: `mb_${"Z".repeat(40)}` }), 401, "invalid_api_key");
    // Right prefix, wrong secret: Argon2 runs and refuses.
    const wrong = `${a.key.slice(0, 8)}${"x".repeat(35)}`;
    const res = await call("GET", "/v1/inboxes", { key: wrong });
    expectError(res, 401, "invalid_api_key");
    expect(res.headers.get("WWW-Authenticate")).toContain("Bearer");
  });

  it("throttles a client's repeated failures (429); the owner's key keeps working", async () => {
    const a = await createAccount();
    expect((await call("GET", "/v1/inboxes", { key: a.key })).status).toBe(200); // verified and cached
    const wrong = `${a.key.slice(0, 8)}${"y".repeat(35)}`;
    const attacker = { "CF-Connecting-IP": "203.0.113.77" };
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++)
      statuses.push((await call("GET", "/v1/inboxes", { key: wrong, headers: attacker })).status);
    expect(statuses).toEqual(Array(20).fill(401));
    const limited = await call("GET", "/v1/inboxes", { key: wrong, headers: attacker });
    expectError(limited, 429, "too_many_failed_attempts");
    expect(Number(limited.headers.get("Retry-After"))).toBeGreaterThan(0);
    // The owner's verified (cached) key keeps working while its prefix is under attack.
    expect((await call("GET", "/v1/inboxes", { key: a.key })).status).toBe(200);
  });

  it("unknown and revoked keys lock out only the client that keeps sending them", async () => {
    const a = await createAccount();
    const temp = (await call("POST", "/v1/api-keys", { key: a.key, body: { name: "gone" } })).body.data;
    await call("DELETE", `/v1/api-keys/${temp.id}`, { key: a.key });
    const stale = { "CF-Connecting-IP": "203.0.113.78" };
    for (let i = 0; i < 10; i++) {
      expectError(await call("GET", "/v1/inboxes", { key: temp.key, headers: stale }), 401, "invalid_api_key");
      expectError(
        await call("GET", "/v1/inboxes", { key: `mb_${"Q".repeat(40)}`, headers: stale }),
        401,
        "invalid_api_key",
      );
    }
    expectError(await call("GET", "/v1/inboxes", { key: temp.key, headers: stale }), 429, "too_many_failed_attempts");
    const fresh = await createAccount();
    expect((await call("GET", "/v1/inboxes", { key: fresh.key })).status).toBe(200);
  });

  it("revocation takes effect on the very next request, even with the key cached", async () => {
    const a = await createAccount();
    const created = await call("POST", "/v1/api-keys", { key: a.key, body: { name: "temp" } });
    const temp = created.body.data.key;
    expect((await call("GET", "/v1/inboxes", { key: temp })).status).toBe(200); // now cached
    const revoked = await call("DELETE", `/v1/api-keys/${created.body.data.id}`, { key: a.key });
    expect(revoked.status).toBe(200);
    expect(revoked.body.data.revoked_at).toEqual(expect.any(String));
    expectError(await call("GET", "/v1/inboxes", { key: temp }), 401, "invalid_api_key");
    expect(await auditActions(a.account.id)).toContain("api_key.revoked");
  });

  it("a suspended account's keys get 403 account_suspended at once, cached or not, without re-hashing", async () => {
    const a = await createAccount();
    const b = await createAccount();
    expect((await call("GET", "/v1/inboxes", { key: a.key })).status).toBe(200); // a.key cached, b.key not
    const patch = await call("PATCH", `/v1/admin/accounts/${a.account.id}`, {
      key: ADMIN_TOKEN,
      body: { status: "suspended" },
    });
    expect(patch.status, patch.text).toBe(200);
    await call("PATCH", `/v1/admin/accounts/${b.account.id}`, { key: ADMIN_TOKEN, body: { status: "suspended" } });
    const before = await argon2Runs();
    for (let i = 0; i < 3; i++) {
      expectError(await call("GET", "/v1/inboxes", { key: a.key }), 403, "account_suspended");
      expectError(await call("GET", "/v1/inboxes", { key: b.key }), 403, "account_suspended");
    }
    expect((await argon2Runs()) - before).toBe(1); // b.key once, then cached
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { status: "active" } });
    await call("PATCH", `/v1/admin/accounts/${b.account.id}`, { key: ADMIN_TOKEN, body: { status: "active" } });
    expect((await call("GET", "/v1/inboxes", { key: a.key })).status).toBe(200);
    expect((await call("GET", "/v1/inboxes", { key: b.key })).status).toBe(200);
  });

  it("revoking a key while its account is suspended keeps it revoked after reactivation", async () => {
    const a = await createAccount();
    const extra = (await call("POST", "/v1/api-keys", { key: a.key, body: { name: "extra" } })).body.data;
    await call("GET", "/v1/inboxes", { key: extra.key });
    await call("DELETE", `/v1/api-keys/${extra.id}`, { key: a.key });
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { status: "suspended" } });
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { status: "active" } });
    expectError(await call("GET", "/v1/inboxes", { key: extra.key }), 401, "invalid_api_key");
    expect((await call("GET", "/v1/inboxes", { key: a.key })).status).toBe(200);
  });
});

describe("/v1/api-keys", () => {
  it("creates, lists (never the secret or hash) and revokes keys", async () => {
    const a = await createAccount();
    const created = await call("POST", "/v1/api-keys", {
      key: a.key,
      body: { name: "reader", scopes: ["read"], inbox_ids: [a.inbox.id] },
    });
    expect(created.status, created.text).toBe(201);
    expect(created.body.data).toMatchObject({
      id: expect.stringMatching(/^key_/),
      name: "reader",
      scopes: ["read"],
      inbox_ids: [a.inbox.id],
      key: expect.stringMatching(/^mb_/),
    });
    expect(created.body.data.prefix).toBe(created.body.data.key.slice(0, 8));

    const list = await call("GET", "/v1/api-keys", { key: a.key });
    expect(list.status).toBe(200);
    expect(list.body.data).toHaveLength(2);
    expect(list.text).not.toContain(created.body.data.key);
    expect(list.text).not.toContain("argon2");
    for (const k of list.body.data)
      expect(Object.keys(k).sort()).toEqual([
        "created_at",
        "id",
        "inbox_ids",
        "last_used_at",
        "name",
        "prefix",
        "revoked_at",
        "scopes",
      ]);
    expect(list.body.meta).toEqual({ limit: 20, next_cursor: null });

    expectError(await call("DELETE", "/v1/api-keys/key_doesnotexist", { key: a.key }), 404, "not_found");
  });

  it("validates names, scopes and inbox ids", async () => {
    const a = await createAccount();
    const res = await call("POST", "/v1/api-keys", { key: a.key, body: { name: "", scopes: ["root"] } });
    const error = expectError(res, 422, "validation_error");
    expect(error.details.map((d: { path: string }) => d.path).sort()).toEqual(["name", "scopes.0"]);
    const other = await createAccount();
    const foreign = await call("POST", "/v1/api-keys", {
      key: a.key,
      body: { name: "x", inbox_ids: [other.inbox.id] },
    });
    expect(expectError(foreign, 422, "validation_error").details[0].path).toBe("inbox_ids");
  });

  it("scopes and inbox restrictions are enforced", async () => {
    const a = await createAccount();
    const second = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "second" } });
    const reader = (await call("POST", "/v1/api-keys", { key: a.key, body: { name: "r", scopes: ["read"] } })).body.data
      .key;
    expectError(
      await call("POST", "/v1/inboxes", { key: reader, body: { username: "nope" } }),
      403,
      "insufficient_scope",
    );
    expectError(await call("GET", "/v1/api-keys", { key: reader }), 403, "insufficient_scope");
    expect((await call("GET", "/v1/inboxes", { key: reader })).status).toBe(200);

    const restricted = (
      await call("POST", "/v1/api-keys", { key: a.key, body: { name: "one", inbox_ids: [a.inbox.id] } })
    ).body.data.key;
    const list = await call("GET", "/v1/inboxes", { key: restricted });
    expect(list.body.data.map((i: { id: string }) => i.id)).toEqual([a.inbox.id]);
    expectError(await call("GET", `/v1/inboxes/${second.body.data.id}`, { key: restricted }), 404, "not_found");
    expectError(
      await call("PATCH", `/v1/inboxes/${second.body.data.id}`, { key: restricted, body: { display_name: "x" } }),
      404,
      "not_found",
    );
    expectError(await call("DELETE", `/v1/inboxes/${second.body.data.id}`, { key: restricted }), 404, "not_found");
    expectError(
      await call("POST", "/v1/inboxes", { key: restricted, body: { username: "more" } }),
      403,
      "insufficient_scope",
    );
    expectError(
      await call("POST", "/v1/api-keys", { key: restricted, body: { name: "escalate" } }),
      403,
      "insufficient_scope",
    );
    expect(
      (await call("PATCH", `/v1/inboxes/${a.inbox.id}`, { key: restricted, body: { labels: ["ok"] } })).status,
    ).toBe(200);
  });
});

describe("/v1/account", () => {
  it("gets, updates and closes the account", async () => {
    const a = await registerAccount();
    const patched = await call("PATCH", "/v1/account", { key: a.key, body: { name: "Renamed" } });
    expect(patched.status).toBe(200);
    expect(patched.body.data.name).toBe("Renamed");
    expectError(await call("PATCH", "/v1/account", { key: a.key, body: { tier: "scale" } }), 422, "validation_error");

    const closed = await call("DELETE", "/v1/account", { key: a.key });
    expect(closed.status).toBe(200);
    expect(closed.body.data.status).toBe("deleted");
    expectError(await call("GET", "/v1/account", { key: a.key }), 401, "invalid_api_key");
    const inbox = await env.DB.prepare("SELECT status, disabled_reason FROM inboxes WHERE id = ?")
      .bind(a.inbox.id)
      .first();
    expect(inbox).toEqual({ status: "disabled", disabled_reason: "deactivated" });
    expect(await auditActions(a.account.id)).toEqual(expect.arrayContaining(["account.updated", "account.deleted"]));
  });
});

describe("operators: /v1/admin/accounts", () => {
  it("needs the ADMIN_TOKEN", async () => {
    const a = await createAccount();
    expectError(await call("GET", "/v1/admin/accounts"), 401, "missing_api_key");
    expectError(await call("GET", "/v1/admin/accounts", { key: a.key }), 401, "invalid_admin_token");
  });

  it("lists, gets and patches accounts, audited with actor admin", async () => {
    const a = await createAccount();
    const list = await call("GET", "/v1/admin/accounts?limit=100", { key: ADMIN_TOKEN });
    expect(list.status).toBe(200);
    expect(list.body.data.map((x: { id: string }) => x.id)).toContain(a.account.id);
    const one = await call("GET", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN });
    expect(one.body.data.email).toBe(a.account.email);
    expect(await auditActions(a.account.id)).toContain("account.admin_viewed");
    expectError(await call("GET", "/v1/admin/accounts/acct_nope", { key: ADMIN_TOKEN }), 404, "not_found");

    const lifted = await call("PATCH", `/v1/admin/accounts/${a.account.id}`, {
      key: ADMIN_TOKEN,
      body: { tier: "standard", new_account_until: null },
    });
    expect(lifted.status, lifted.text).toBe(200);
    expect(lifted.body.data).toMatchObject({ tier: "standard", limits: { requests_per_minute: 600 } });
    expect(lifted.body.data.limits.new_account_send_limit.active).toBe(false);
    expectError(
      await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { tier: "gold" } }),
      422,
      "validation_error",
    );
    const entry = await env.DB.prepare(
      "SELECT actor_type, metadata FROM audit_log WHERE account_id = ? AND action = 'account.admin_updated'",
    )
      .bind(a.account.id)
      .first<{ actor_type: string; metadata: string }>();
    expect(entry?.actor_type).toBe("admin");
    expect(JSON.parse(entry?.metadata ?? "{}").changes.tier).toEqual({ from: "sandbox", to: "standard" });
  });

  it("with REGISTRATION closed, only the operator token may register", async () => {
    const closedEnv = { ...env, REGISTRATION: "closed" };
    const register = (headers: Record<string, string>) =>
      app.fetch(
        new Request("http://localhost/v1/auth/register", {
          method: "POST",
          headers: { "Content-Type": "application/json", ...headers },
          body: JSON.stringify({ email: `closed-${crypto.randomUUID()}@example.com` }),
        }),
        closedEnv,
        createExecutionContext(),
      );
    const refused = await register({});
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("registration_closed");
    expect((await register({ Authorization: `Bearer ${ADMIN_TOKEN}` })).status).toBe(201);
  });

  it("stats show Argon2 runs once per key per isolate, not per request", async () => {
    const a = await registerAccount();
    const stats = async () =>
      (await call("GET", "/v1/admin/stats", { key: ADMIN_TOKEN })).body.data.argon2_verifications;
    const before = await stats();
    for (let i = 0; i < 5; i++) expect((await call("GET", "/v1/inboxes", { key: a.key })).status).toBe(200);
    expect((await stats()) - before).toBe(1);
  });

  it("closed registration needs the operator token", async () => {
    // The binding is "open" in tests; the operator path must work regardless.
    const res = await call("POST", "/v1/auth/register", { key: ADMIN_TOKEN, body: { email: "ops-made@example.com" } });
    expect(res.status).toBe(201);
    const entry = await env.DB.prepare(
      "SELECT actor_type FROM audit_log WHERE account_id = ? AND action = 'account.created'",
    )
      .bind(res.body.data.account.id)
      .first<{ actor_type: string }>();
    expect(entry?.actor_type).toBe("admin");
  });
});

describe("/v1/audit-log", () => {
  it("lists entries newest first with filters and a verifiable chain", async () => {
    const a = await createAccount();
    const inbox = (await call("POST", "/v1/inboxes", { key: a.key, body: { username: "audited" } })).body.data;
    await call("DELETE", `/v1/inboxes/${inbox.id}`, { key: a.key });

    const all = await call("GET", "/v1/audit-log", { key: a.key });
    expect(all.status).toBe(200);
    expect(all.body.data.map((e: { action: string }) => e.action)).toEqual([
      "inbox.deactivated",
      "inbox.created",
      "inbox.created",
      "api_key.created",
      "account.created",
    ]);
    const newest = all.body.data[0];
    expect(newest).toMatchObject({
      id: expect.stringMatching(/^aud_/),
      actor: { type: "api_key", id: expect.stringMatching(/^key_/) },
      target: { type: "inbox", id: inbox.id },
      inbox_id: inbox.id,
      request_id: expect.stringMatching(/^req_/),
      hash: expect.stringMatching(/^[0-9a-f]{64}$/),
      prev_hash: all.body.data[1].hash,
    });

    const filtered = await call("GET", `/v1/audit-log?action=inbox.created&inbox_id=${inbox.id}`, { key: a.key });
    expect(filtered.body.data).toHaveLength(1);
    const future = await call("GET", "/v1/audit-log?since=2999-01-01T00:00:00.000Z", { key: a.key });
    expect(future.body.data).toHaveLength(0);
    const past = await call("GET", "/v1/audit-log?until=2000-01-01T00:00:00.000Z", { key: a.key });
    expect(past.body.data).toHaveLength(0);
    expectError(await call("GET", "/v1/audit-log?since=yesterday", { key: a.key }), 422, "validation_error");

    const verify = await call("GET", "/v1/audit-log/verify", { key: a.key });
    expect(verify.body).toEqual({ data: { ok: true, checked: 5, first_broken_id: null } });
  });

  it("the database refuses deleting entries (a cut-off tail would still verify)", async () => {
    const a = await createAccount();
    const last = await env.DB.prepare("SELECT id FROM audit_log WHERE account_id = ? ORDER BY seq DESC LIMIT 1")
      .bind(a.account.id)
      .first<{ id: string }>();
    await expect(env.DB.prepare("DELETE FROM audit_log WHERE id = ?").bind(last?.id).run()).rejects.toThrow(
      /append-only/,
    );
    expect((await call("GET", "/v1/audit-log/verify", { key: a.key })).body.data).toMatchObject({
      ok: true,
      checked: 3,
    });
  });

  it("an entry edited directly in D1 breaks the chain at that entry", async () => {
    const a = await createAccount();
    await call("POST", "/v1/inboxes", { key: a.key, body: { username: "tamper" } });
    const target = await env.DB.prepare("SELECT id FROM audit_log WHERE account_id = ? AND seq = 2")
      .bind(a.account.id)
      .first<{ id: string }>();
    // The database refuses the edit; an attacker who can drop the trigger is caught by /verify
    // (more attacks in test/http/audit-chain.test.ts).
    await expect(
      env.DB.prepare(`UPDATE audit_log SET metadata = '{"name":"forged"}' WHERE id = ?`).bind(target?.id).run(),
    ).rejects.toThrow(/append-only/);
    await env.DB.prepare("DROP TRIGGER audit_log_no_update").run();
    try {
      await env.DB.prepare(`UPDATE audit_log SET metadata = '{"name":"forged"}' WHERE id = ?`).bind(target?.id).run();
    } finally {
      await env.DB.prepare(
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
      ).run();
    }
    const verify = await call("GET", "/v1/audit-log/verify", { key: a.key });
    expect(verify.body.data).toEqual({ ok: false, checked: 2, first_broken_id: target?.id });
  });

  it("concurrent writes keep one linear chain", async () => {
    const a = await createAccount();
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) => call("POST", "/v1/inboxes", { key: a.key, body: { username: `race${i}` } })),
    );
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(201));
    const seqs = await env.DB.prepare("SELECT seq FROM audit_log WHERE account_id = ? ORDER BY seq")
      .bind(a.account.id)
      .all();
    expect(seqs.results.map((r) => r.seq)).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));
    expect((await call("GET", "/v1/audit-log/verify", { key: a.key })).body.data).toMatchObject({
      ok: true,
      checked: 11,
    });
  });
});
