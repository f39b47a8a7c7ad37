import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createAccount, createKey } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { countRows } from "../helpers/db";
import { sentMessageId } from "../helpers/outbound";
import { bounce, complaint, relayEvents } from "../helpers/relay";

describe("suppressed forms", () => {
  it("a suppression covers the address whatever its case and +tag", async () => {
    const a = await createAccount("sup-canonical");
    const msg = await sentMessageId(a, ["bob+news@example.net"]);
    await relayEvents([bounce(msg, "bob+news@example.net")]);
    const rows = await env.DB.prepare("SELECT address FROM suppressions WHERE account_id = ?")
      .bind(a.account.id)
      .all<{ address: string }>();
    expect(rows.results).toEqual([{ address: "bob@example.net" }]);

    const alone = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["Bob@Example.NET"], subject: "x", body_text: "x" },
    });
    expectError(alone, 422, "recipient_suppressed");
    const mixed = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["other@example.org", "BOB+promo@example.net"], subject: "x", body_text: "x" },
    });
    expect(mixed.status, mixed.text).toBe(202);
    expect(mixed.body.data).toMatchObject({
      to: ["other@example.org"],
      dropped_recipients: [{ address: "bob+promo@example.net", reason: "suppressed_hard_bounce" }],
    });
    const listed = await call("GET", `/v1/suppressions?address=${encodeURIComponent("Bob+x@example.net")}`, {
      key: a.key,
    });
    expect(listed.body.data).toHaveLength(1);
    // A key restricted to another inbox sees the entry, not which inbox's message caused it.
    const second = await call("POST", "/v1/inboxes", { key: a.key, body: { username: `sup-second-${Date.now()}` } });
    expect(second.status, second.text).toBe(201);
    const restricted = await createKey(a, { name: "other-inbox", scopes: ["read"], inbox_ids: [second.body.data.id] });
    const seen = await call("GET", "/v1/suppressions", { key: restricted.key });
    expect(seen.body.data).toEqual([
      expect.objectContaining({ address: "bob@example.net", inbox_id: null, message_id: null, detail: null }),
    ]);
    const own = await call("GET", "/v1/suppressions", { key: a.key });
    expect(own.body.data[0]).toMatchObject({ inbox_id: a.inbox.id, message_id: msg });
    const lifted = await call("DELETE", `/v1/suppressions/${encodeURIComponent("BOB+news@example.net")}`, {
      key: a.key,
    });
    expect(lifted.status, lifted.text).toBe(200);
    expect(await countRows("SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ?", a.account.id)).toBe(0);
  });
});

describe("usage and suppression validation", () => {
  it("GET /v1/usage and /v1/usage/daily count the log; bad input is a 422", async () => {
    const a = await createAccount("usage");
    const msg = await sentMessageId(a, ["u1@example.net", "u2@example.net"]);
    await relayEvents([bounce(msg, "u1@example.net"), complaint(msg, "u2@example.net")]);
    const usage = await call("GET", "/v1/usage", { key: a.key });
    expect(usage.status, usage.text).toBe(200);
    expect(usage.body.data).toMatchObject({
      sent: 1,
      bounced: 1,
      complained: 1,
      send_limit: { limit: 10, used: 0, window_hours: 24, scope: "new_account" },
    });
    const daily = await call("GET", "/v1/usage/daily?days=3", { key: a.key });
    expect(daily.body.data).toHaveLength(3);
    expect(daily.body.data[0]).toMatchObject({
      date: new Date().toISOString().slice(0, 10),
      sent: 1,
      bounced: 1,
      complained: 1,
    });
    expect(daily.body.meta).toEqual({ limit: 3, next_cursor: null });
    // A message queued two days ago that left today counts as sent today.
    await env.DB.prepare("UPDATE messages SET created_at = ? WHERE id = ?")
      .bind(Date.now() - 2 * 24 * 60 * 60 * 1000, msg)
      .run();
    const moved = await call("GET", "/v1/usage/daily?days=3", { key: a.key });
    expect(moved.body.data.map((d: { sent: number }) => d.sent)).toEqual([1, 0, 0]);
    expectError(await call("GET", "/v1/usage/daily?days=0", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/usage?since=yesterday", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/suppressions?reason=spam", { key: a.key }), 422, "validation_error");
    expectError(await call("DELETE", "/v1/suppressions/not-an-address", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/usage"), 401, "missing_api_key");
  });
});
