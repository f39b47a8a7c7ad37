import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";

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
    await env.DB.prepare(`UPDATE audit_log SET metadata = '{"name":"forged"}' WHERE id = ?`).bind(target?.id).run();
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
