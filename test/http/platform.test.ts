import { env, exports } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { sha256Hex } from "../../src/lib/crypto";
import published from "../fixtures/openapi-contract.json";
import { createAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";
import { deliver, mail } from "../helpers/mail";
import { expectTenancyOnEveryIdRoute } from "../helpers/tenancy";

describe("public endpoints", () => {
  it("GET /health and /v1/info need no key and carry a request id", async () => {
    const health = await call("GET", "/health");
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ data: { status: "ok", version: expect.any(String) } });
    expect(health.headers.get("X-Request-Id")).toMatch(/^req_[0-9a-z]{26}$/);
    expect(health.headers.get("Content-Type")).toBe("application/json; charset=utf-8");

    const info = await call("GET", "/v1/info");
    expect(info.body.data).toMatchObject({ name: "mailbot", mail_domain: "mailbot.test", registration: "open" });
  });

  it("serves the OpenAPI document and the docs page", async () => {
    const doc = await call("GET", "/openapi.json");
    expect(doc.status).toBe(200);
    expect(doc.body.openapi).toBe("3.1.0");
    for (const path of [
      "/v1/auth/register",
      "/v1/account",
      "/v1/api-keys",
      "/v1/api-keys/{key_id}",
      "/v1/inboxes",
      "/v1/inboxes/{inbox_id}",
      "/v1/inboxes/{inbox_id}/enable",
      "/v1/audit-log",
      "/v1/audit-log/verify",
      "/v1/admin/accounts/{account_id}",
    ]) {
      expect(Object.keys(doc.body.paths), path).toContain(path);
    }
    expect(doc.body.components.securitySchemes.ApiKey).toMatchObject({ type: "http", scheme: "bearer" });
    const create = doc.body.paths["/v1/inboxes"].post;
    expect(create.parameters).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: "Idempotency-Key", in: "header" })]),
    );
    expect(Object.keys(create.responses["201"].headers)).toEqual(
      expect.arrayContaining(["X-Request-Id", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"]),
    );
    expect(Object.keys(create.responses["429"].headers)).toContain("Retry-After");
    expect(doc.body.components.schemas.Error).toBeDefined();
    const docs = await call("GET", "/docs");
    expect(docs.status).toBe(200);
    expect(docs.text).toContain("/openapi.json");
    expect(docs.text.toLowerCase()).toContain("swagger");
  });
});

describe("contract checks over every documented operation", () => {
  it("keeps every component name and operation published so far (SDKs are generated from them)", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    const operations = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([path, item]) =>
      Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
    );
    const missingOperations = published.operations.filter((o) => !operations.includes(o));
    const missingComponents = published.components.filter((c) => !(c in doc.components.schemas));
    expect({ missingOperations, missingComponents }).toEqual({ missingOperations: [], missingComponents: [] });
  });

  it("every API-key operation answers with X-Request-Id and X-RateLimit-*, even when it fails", async () => {
    const a = await createAccount();
    const doc = (await call("GET", "/openapi.json")).body;
    let checked = 0;
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { security?: unknown[] }>>)) {
      for (const [method, op] of Object.entries(ops)) {
        if (!JSON.stringify(op.security ?? []).includes("ApiKey")) continue;
        if (method === "delete" && path === "/v1/account") continue; // would close the account mid-test
        const url = path.replace(/\{\w+\}/g, "missing_id");
        // An event stream never ends: check its headers, then hang up instead of reading the body.
        const res = JSON.stringify(op).includes("text/event-stream")
          ? await exports.default
              .fetch(new Request(`http://localhost${url}`, { headers: { Authorization: `Bearer ${a.key}` } }))
              .then(async (r) => {
                await r.body?.cancel();
                return r;
              })
          : await call(method.toUpperCase(), url, { key: a.key, body: method === "get" ? undefined : {} });
        expect(res.headers.get("X-Request-Id"), `${method} ${path}`).toMatch(/^req_/);
        expect(res.headers.get("X-RateLimit-Limit"), `${method} ${path}`).toMatch(/^\d+$/);
        expect(res.headers.get("X-RateLimit-Remaining"), `${method} ${path}`).toMatch(/^\d+$/);
        expect(res.headers.get("X-RateLimit-Reset"), `${method} ${path}`).toMatch(/^\d+$/);
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(13);
  });

  it("every creating POST (201) documents Idempotency-Key", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    const creating = Object.entries(
      doc.paths as Record<string, Record<string, { responses: object; parameters?: { name: string }[] }>>,
    )
      .filter(([, ops]) => ops.post && "201" in ops.post.responses)
      .map(([path, ops]) => [path, (ops.post?.parameters ?? []).map((p) => p.name)] as const);
    expect(creating.length).toBeGreaterThanOrEqual(3);
    for (const [path, params] of creating) expect(params, path).toContain("Idempotency-Key");
  });
});

describe("the error envelope", () => {
  it("404 for unknown routes, 405 for a wrong method", async () => {
    const a = await createAccount();
    expectError(await call("GET", "/nope"), 404, "not_found");
    expectError(await call("GET", "/v1/nope"), 404, "not_found"); // no key needed to learn a route does not exist
    expectError(await call("GET", "/v1/nope", { key: a.key }), 404, "not_found");
    const wrong = await call("PUT", "/v1/inboxes", { key: a.key, body: {} });
    expectError(wrong, 405, "method_not_allowed");
    expect(wrong.headers.get("Allow")).toContain("GET");
    expect(wrong.headers.get("Allow")).toContain("POST");
  });

  it("400 for malformed JSON and for a non-JSON body", async () => {
    const a = await createAccount();
    expectError(
      await call("POST", "/v1/inboxes", {
        key: a.key,
        rawBody: "{nope",
        headers: { "Content-Type": "application/json" },
      }),
      400,
      "invalid_json",
    );
    expectError(
      await call("POST", "/v1/inboxes", {
        key: a.key,
        rawBody: "username=x",
        headers: { "Content-Type": "text/plain" },
      }),
      400,
      "unsupported_content_type",
    );
  });

  it("413 for a body over the limit", async () => {
    const a = await createAccount();
    const res = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "big", display_name: "x".repeat(1_100_000) },
    });
    expectError(res, 413, "payload_too_large");
  });

  it("422 lists every bad field", async () => {
    const res = await call("POST", "/v1/auth/register", { body: { email: 42, name: "" } });
    const error = expectError(res, 422, "validation_error");
    expect(error.details).toEqual([
      { path: "email", message: expect.any(String) },
      { path: "name", message: expect.any(String) },
    ]);
  });
});

describe("rate limits", () => {
  it("every authenticated response carries X-RateLimit-*; 429 with Retry-After past the limit", async () => {
    const a = await createAccount();
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { tier: "tight" } });
    // "tight" (test tier): 5 per minute, burst 3 per second.
    const first = await call("GET", "/v1/inboxes", { key: a.key });
    expect(first.headers.get("X-RateLimit-Limit")).toBe("5");
    expect(first.headers.get("X-RateLimit-Remaining")).toBe("4");
    expect(Number(first.headers.get("X-RateLimit-Reset"))).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000));
    const notFound = await call("GET", "/v1/inboxes/inbox_missing", { key: a.key });
    expect(notFound.status).toBe(404);
    expect(notFound.headers.get("X-RateLimit-Remaining")).toBe("3");
    await call("GET", "/v1/account", { key: a.key });
    const burst = await call("GET", "/v1/account", { key: a.key });
    expectError(burst, 429, "rate_limited");
    expect(Number(burst.headers.get("Retry-After"))).toBeGreaterThanOrEqual(1);
    expect(burst.headers.get("X-RateLimit-Limit")).toBe("5");
  });
});

describe("Idempotency-Key", () => {
  it("replays the first response for the same key and body, 409 for another body", async () => {
    const a = await createAccount();
    const headers = { "Idempotency-Key": "create-inbox-1" };
    const first = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "idem" }, headers });
    expect(first.status).toBe(201);
    const again = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "idem" }, headers });
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    const rows = await env.DB.prepare("SELECT COUNT(*) AS n FROM inboxes WHERE username = 'idem' AND account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    expect(rows?.n).toBe(1);
    expectError(
      await call("POST", "/v1/inboxes", { key: a.key, body: { username: "other" }, headers }),
      409,
      "idempotency_key_reused",
    );
    // Keys are scoped per account: B may use the same key for its own request.
    const b = await createAccount();
    expect((await call("POST", "/v1/inboxes", { key: b.key, body: { username: "idem" }, headers })).status).toBe(201);
  });

  it("replays a registration (api key included) without storing the key in clear", async () => {
    const headers = { "Idempotency-Key": crypto.randomUUID() };
    const body = { email: "idem-register@example.com" };
    const first = await call("POST", "/v1/auth/register", { body, headers });
    const again = await call("POST", "/v1/auth/register", { body, headers });
    expect(first.status).toBe(201);
    expect(again.body.data.api_key).toBe(first.body.data.api_key);
    const stored = await env.DB.prepare("SELECT response_sealed FROM idempotency_keys").all<{
      response_sealed: string;
    }>();
    expect(stored.results.length).toBeGreaterThan(0);
    for (const row of stored.results) expect(row.response_sealed).not.toContain(first.body.data.api_key);
  });

  it("a replay is only ever served to the API key that made the first request", async () => {
    const a = await createAccount();
    const headers = { "Idempotency-Key": "mint-key-1" };
    const first = await call("POST", "/v1/api-keys", { key: a.key, body: { name: "minted" }, headers });
    expect(first.status).toBe(201);
    const reader = (await call("POST", "/v1/api-keys", { key: a.key, body: { name: "r", scopes: ["read"] } })).body.data
      .key;
    const attempt = await call("POST", "/v1/api-keys", { key: reader, body: { name: "minted" }, headers });
    expectError(attempt, 403, "insufficient_scope");
    expect(attempt.text).not.toContain(first.body.data.key);
  });

  it("treats the same JSON with other key order or spacing as the same request", async () => {
    const a = await createAccount();
    const headers = { "Idempotency-Key": "order-1", "Content-Type": "application/json" };
    const first = await call("POST", "/v1/inboxes", {
      key: a.key,
      rawBody: '{"username":"ord","labels":["x"]}',
      headers,
    });
    const again = await call("POST", "/v1/inboxes", {
      key: a.key,
      rawBody: '{ "labels": ["x"], "username": "ord" }',
      headers,
    });
    expect(first.status).toBe(201);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    expect(again.body).toEqual(first.body);
  });

  it("a claim left pending by a request that died is taken over after a minute", async () => {
    const a = await createAccount();
    const keyId = (await call("GET", "/v1/api-keys", { key: a.key })).body.data[0].id;
    const body = '{"username":"revived"}';
    const insert = async (createdAt: number, idemKey: string) =>
      env.DB.prepare(
        "INSERT INTO idempotency_keys (id, lookup, account_id, method, path, request_hash, state, created_at, expires_at) VALUES (?, ?, ?, 'POST', '/v1/inboxes', ?, 'pending', ?, ?)",
      )
        .bind(
          `idem_${idemKey}`,
          await sha256Hex(`key:${keyId}\n${idemKey}`),
          a.account.id,
          await sha256Hex(`POST /v1/inboxes\n${body}`),
          createdAt,
          Date.now() + 3_600_000,
        )
        .run();
    const headers = { "Content-Type": "application/json" };
    await insert(Date.now() - 5_000, "busy");
    expectError(
      await call("POST", "/v1/inboxes", {
        key: a.key,
        rawBody: body,
        headers: { ...headers, "Idempotency-Key": "busy" },
      }),
      409,
      "idempotency_request_in_progress",
    );
    await insert(Date.now() - 120_000, "dead");
    const revived = await call("POST", "/v1/inboxes", {
      key: a.key,
      rawBody: body,
      headers: { ...headers, "Idempotency-Key": "dead" },
    });
    expect(revived.status, revived.text).toBe(201);
  });

  it("an operator's registration is never replayed to an anonymous caller", async () => {
    const headers = { "Idempotency-Key": "ops-register-1" };
    const body = { email: "ops-idem@example.com" };
    const first = await call("POST", "/v1/auth/register", { key: ADMIN_TOKEN, body, headers });
    expect(first.status).toBe(201);
    const anon = await call("POST", "/v1/auth/register", { body, headers });
    expectError(anon, 409, "email_taken");
    expect(anon.text).not.toContain(first.body.data.api_key);
  });

  it("rejects a malformed Idempotency-Key", async () => {
    const a = await createAccount();
    expectError(
      await call("POST", "/v1/inboxes", {
        key: a.key,
        body: { username: "x" },
        headers: { "Idempotency-Key": "x".repeat(300) },
      }),
      400,
      "invalid_idempotency_key",
    );
  });
});

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
