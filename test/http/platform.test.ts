import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ADMIN_TOKEN, call, expectError, registerAccount } from "../helpers/api";

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
    expect(doc.body.components.schemas.Error).toBeDefined();
    const docs = await call("GET", "/docs");
    expect(docs.status).toBe(200);
    expect(docs.text).toContain("/openapi.json");
    expect(docs.text.toLowerCase()).toContain("swagger");
  });
});

describe("the error envelope", () => {
  it("404 for unknown routes, 405 for a wrong method", async () => {
    const a = await registerAccount();
    expectError(await call("GET", "/nope"), 404, "not_found");
    expectError(await call("GET", "/v1/nope", { key: a.key }), 404, "not_found");
    const wrong = await call("PUT", "/v1/inboxes", { key: a.key, body: {} });
    expectError(wrong, 405, "method_not_allowed");
    expect(wrong.headers.get("Allow")).toContain("GET");
    expect(wrong.headers.get("Allow")).toContain("POST");
  });

  it("400 for malformed JSON and for a non-JSON body", async () => {
    const a = await registerAccount();
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
    const a = await registerAccount();
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
    const a = await registerAccount();
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
    const a = await registerAccount();
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
    const b = await registerAccount();
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

  it("rejects a malformed Idempotency-Key", async () => {
    const a = await registerAccount();
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
