import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { createAccount } from "../helpers/accounts";
import { call } from "../helpers/api";
import { deliver, mail } from "../helpers/mail";
import { expectTenancyOnEveryIdRoute } from "../helpers/tenancy";

const WITH_ATTACHMENT = (to: string) =>
  mail({
    to,
    subject: "Quarterly numbers",
    contentType: 'multipart/mixed; boundary="b1"',
    body: [
      "--b1",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "See attached.",
      "--b1",
      'Content-Type: application/pdf; name="q3.pdf"',
      'Content-Disposition: attachment; filename="q3.pdf"',
      "Content-Transfer-Encoding: base64",
      "",
      "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK",
      "--b1--",
      "",
    ].join("\r\n"),
  });

describe("tenancy", () => {
  it("another account's ids are 404 on every route with an id, and leak nothing", async () => {
    const a = await createAccount("owner");
    const b = await createAccount("intruder");
    const extraKey = await call("POST", "/v1/api-keys", { key: a.key, body: { name: "second" } });
    expect(extraKey.status).toBe(201);
    expect((await deliver(WITH_ATTACHMENT(a.inbox.address), a.inbox.address)).setReject).not.toHaveBeenCalled();
    const stored = await env.DB.prepare(
      "SELECT m.id AS message_id, m.thread_id, a.id AS attachment_id FROM messages m JOIN attachments a ON a.message_id = m.id WHERE m.inbox_id = ?",
    )
      .bind(a.inbox.id)
      .first<{ message_id: string; thread_id: string; attachment_id: string }>();
    if (!stored) throw new Error("the fixture message was not stored");

    const hook = await call("POST", "/v1/webhooks", {
      key: a.key,
      body: { url: `${env.TEST_WEBHOOK_RECEIVER}/hooks/tenancy-owner`, description: "owner's hook" },
    });
    expect(hook.status, hook.text).toBe(201);
    const event = await env.DB.prepare("SELECT id FROM events WHERE account_id = ? AND type = 'message.received'")
      .bind(a.account.id)
      .first<{ id: string }>();
    if (!event) throw new Error("the fixture event was not stored");
    // The endpoint's first delivery (its webhook.test) is in its log before the intruder looks.
    await vi.waitFor(
      async () => {
        const log = await call("GET", `/v1/webhooks/${hook.body.data.id}/deliveries`, { key: a.key });
        expect(log.body.data.length).toBeGreaterThan(0);
      },
      { timeout: 10_000 },
    );

    const domain = await call("POST", "/v1/domains", { key: a.key, body: { domain: "owner-tenancy.example" } });
    expect(domain.status, domain.text).toBe(201);
    // A suppressed recipient of A (the reputation feature adds these on hard bounces and complaints).
    await env.DB.prepare(
      "INSERT INTO suppressions (id, account_id, address, reason, source, created_at) VALUES (?, ?, 'suppressed-owner@example.org', 'hard_bounce', 'report', ?)",
    )
      .bind(`sup_${"0".repeat(26)}`, a.account.id, Date.now())
      .run();

    const before = await env.DB.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    const { checked } = await expectTenancyOnEveryIdRoute(
      {
        ids: {
          inbox_id: a.inbox.id,
          key_id: extraKey.body.data.id,
          message_id: stored.message_id,
          thread_id: stored.thread_id,
          attachment_id: stored.attachment_id,
          webhook_id: hook.body.data.id,
          event_id: event.id,
          domain_id: domain.body.data.id,
          address: "suppressed-owner@example.org",
        },
        secrets: [
          a.inbox.address,
          a.account.email,
          "Quarterly numbers",
          "q3.pdf",
          hook.body.data.secret,
          "owner's hook",
          "tenancy-owner",
          "owner-tenancy.example",
        ],
      },
      b.key,
    );
    expect(checked).toEqual(
      expect.arrayContaining([
        "GET /v1/inboxes/{inbox_id}",
        "PATCH /v1/inboxes/{inbox_id}",
        "DELETE /v1/inboxes/{inbox_id}",
        "POST /v1/inboxes/{inbox_id}/enable",
        "DELETE /v1/api-keys/{key_id}",
        "GET /v1/inboxes/{inbox_id}/messages",
        "POST /v1/inboxes/{inbox_id}/messages",
        "POST /v1/messages/{message_id}/reply",
        "POST /v1/messages/{message_id}/forward",
        "GET /v1/inboxes/{inbox_id}/messages/search",
        "GET /v1/inboxes/{inbox_id}/messages/wait",
        "GET /v1/inboxes/{inbox_id}/messages/{message_id}",
        "PATCH /v1/inboxes/{inbox_id}/messages/{message_id}",
        "GET /v1/inboxes/{inbox_id}/messages/{message_id}/raw",
        "GET /v1/inboxes/{inbox_id}/messages/{message_id}/attachments/{attachment_id}",
        "GET /v1/inboxes/{inbox_id}/threads",
        "GET /v1/inboxes/{inbox_id}/threads/{thread_id}",
        "GET /v1/webhooks/{webhook_id}",
        "PATCH /v1/webhooks/{webhook_id}",
        "DELETE /v1/webhooks/{webhook_id}",
        "POST /v1/webhooks/{webhook_id}/enable",
        "POST /v1/webhooks/{webhook_id}/rotate-secret",
        "POST /v1/webhooks/{webhook_id}/test",
        "GET /v1/webhooks/{webhook_id}/deliveries",
        "GET /v1/events/{event_id}",
        "POST /v1/events/{event_id}/replay",
        "GET /v1/domains/{domain_id}",
        "POST /v1/domains/{domain_id}/verify",
        "DELETE /v1/domains/{domain_id}",
        "GET /v1/compliance/readiness/{inbox_id}",
        "GET /v1/inboxes/{inbox_id}/reputation",
        "DELETE /v1/suppressions/{address}",
      ]),
    );

    // Nothing of A changed: the inbox is intact, the key still works, no audit entry was written.
    const inbox = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(inbox.body.data).toMatchObject({ status: "active", display_name: null });
    const message = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${stored.message_id}`, { key: a.key });
    expect(message.body.data.labels).toEqual(["unread"]);
    expect((await call("GET", "/v1/account", { key: extraKey.body.data.key })).status).toBe(200);
    const ownHook = await call("GET", `/v1/webhooks/${hook.body.data.id}`, { key: a.key });
    expect(ownHook.body.data).toMatchObject({ enabled: true, description: "owner's hook" });
    const after = await env.DB.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    expect(after?.n).toBe(before?.n);
  });

  it("lists never include another account's data", async () => {
    const a = await createAccount("owner");
    const b = await createAccount("intruder");
    await call("POST", "/v1/webhooks", {
      key: a.key,
      body: { url: `${env.TEST_WEBHOOK_RECEIVER}/hooks/tenancy-list` },
    });
    await env.DB.prepare(
      "INSERT INTO suppressions (id, account_id, address, reason, source, created_at) VALUES (?, ?, 'listed-owner@example.org', 'complaint', 'report', ?)",
    )
      .bind(`sup_${"1".repeat(26)}`, a.account.id, Date.now())
      .run();
    for (const path of [
      "/v1/inboxes",
      "/v1/api-keys",
      "/v1/audit-log",
      "/v1/webhooks",
      "/v1/events",
      "/v1/suppressions",
    ]) {
      const res = await call("GET", path, { key: b.key });
      expect(res.status).toBe(200);
      expect(res.text).not.toContain(a.account.id);
      expect(res.text).not.toContain(a.inbox.id);
      expect(res.text).not.toContain("listed-owner");
    }
  });
});
