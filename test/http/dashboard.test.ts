import { env, exports } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client";
import { auditLog, dashboardSessions } from "../../src/db/schema";
import { createAccount, createKey } from "../helpers/accounts";
import { ADMIN_TOKEN, call } from "../helpers/api";
import { relaySignature } from "../helpers/relay";

const ORIGIN = "http://localhost";

async function dash(
  path: string,
  init: { method?: string; cookie?: string; form?: Record<string, string>; origin?: string | null } = {},
) {
  const headers: Record<string, string> = {};
  if (init.cookie) headers.Cookie = init.cookie;
  const method = init.method ?? (init.form ? "POST" : "GET");
  if (method !== "GET" && init.origin !== null) headers.Origin = init.origin ?? ORIGIN;
  let body: string | undefined;
  if (init.form) {
    body = new URLSearchParams(init.form).toString();
    headers["Content-Type"] = "application/x-www-form-urlencoded";
  }
  return exports.default.fetch(new Request(`${ORIGIN}${path}`, { method, headers, body, redirect: "manual" }));
}

async function signIn(secret: string, kind = "key"): Promise<{ res: Response; cookie: string }> {
  const res = await dash("/dashboard/sign-in", { form: { kind, secret } });
  const set = res.headers.get("Set-Cookie") ?? "";
  return { res, cookie: set.split(";")[0] ?? "" };
}

describe("dashboard sessions", () => {
  it("exchanges a key for an HttpOnly SameSite=Strict cookie holding a random token, not the key", async () => {
    const a = await createAccount("dash");
    const { res, cookie } = await signIn(a.key);
    expect(res.status).toBe(303);
    expect(res.headers.get("Location")).toBe("/dashboard/overview");
    const set = res.headers.get("Set-Cookie") ?? "";
    expect(set).toMatch(/HttpOnly/i);
    expect(set).toMatch(/SameSite=Strict/i);
    expect(set).toMatch(/Path=\/dashboard/);
    expect(set).not.toContain(a.key);
    const token = cookie.split("=")[1] ?? "";
    // Only the hash is stored.
    const rows = await createDb(env.DB)
      .select()
      .from(dashboardSessions)
      .where(eq(dashboardSessions.keyId, a.keyId))
      .all();
    expect(rows).toHaveLength(1);
    expect(rows[0]?.tokenHash).not.toBe(token);
    expect(rows[0]?.expiresAt).toBeGreaterThan(rows[0]?.createdAt ?? 0);
    const page = await dash("/dashboard/overview", { cookie });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain(a.account.email);
    expect(page.headers.get("Content-Security-Policy")).toContain("script-src 'self'");
  });

  it("refuses a wrong key with the API's code and sets no cookie", async () => {
    const res = await dash("/dashboard/sign-in", { form: { kind: "key", secret: `mb_${"x".repeat(40)}` } });
    expect(res.status).toBe(401);
    expect(res.headers.get("Set-Cookie")).toBeNull();
    expect(await res.text()).toContain("invalid_api_key");
  });

  it("sign-out ends the session: the old cookie is refused", async () => {
    const a = await createAccount("dash");
    const { cookie } = await signIn(a.key);
    const out = await dash("/dashboard/sign-out", { form: {}, cookie });
    expect(out.status).toBe(303);
    const again = await dash("/dashboard/overview", { cookie });
    expect(again.status).toBe(303);
    expect(again.headers.get("Location")).toBe("/dashboard/sign-in");
    const post = await dash("/dashboard/inboxes", { form: { username: "x" }, cookie });
    expect(post.status).toBe(401);
  });

  it("a revoked key ends its session at once", async () => {
    const a = await createAccount("dash");
    const other = await createKey(a, { name: "second" });
    const { cookie } = await signIn(other.key);
    expect((await dash("/dashboard/inboxes", { cookie })).status).toBe(200);
    const revoked = await call("DELETE", `/v1/api-keys/${other.id}`, { key: a.key });
    expect(revoked.status).toBe(200);
    expect((await dash("/dashboard/inboxes", { cookie })).status).toBe(303);
  });
});

describe("dashboard CSRF", () => {
  it("refuses a cross-site POST and one with no Origin, and changes nothing", async () => {
    const a = await createAccount("dash");
    const { cookie } = await signIn(a.key);
    const evil = await dash("/dashboard/inboxes", {
      form: { username: "evil" },
      cookie,
      origin: "https://evil.example",
    });
    expect(evil.status).toBe(403);
    expect(await evil.text()).toContain("cross_site_request");
    const none = await dash("/dashboard/inboxes", { form: { username: "evil2" }, cookie, origin: null });
    expect(none.status).toBe(403);
    const list = await call("GET", "/v1/inboxes", { key: a.key });
    expect(list.body.data.map((i: { username: string }) => i.username)).not.toContain("evil");
    expect(list.body.data.map((i: { username: string }) => i.username)).not.toContain("evil2");
  });

  it("a same-origin POST acts, audited with actor dashboard", async () => {
    const a = await createAccount("dash");
    const { cookie } = await signIn(a.key);
    const res = await dash("/dashboard/inboxes", { form: { username: "fromdash" }, cookie });
    expect(res.status).toBe(303);
    const rows = await createDb(env.DB).select().from(auditLog).where(eq(auditLog.accountId, a.account.id)).all();
    const created = rows.find((r) => r.action === "inbox.created" && r.actorType === "dashboard");
    expect(created?.actorId).toBe(a.keyId);
  });
});

describe("dashboard tenancy and scopes", () => {
  it("a restricted key's session sees only its inboxes; another account's inbox is 404", async () => {
    const a = await createAccount("dash");
    const second = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "hidden" } });
    const restricted = await createKey(a, { name: "r", scopes: ["read"], inbox_ids: [a.inbox.id] });
    const { cookie } = await signIn(restricted.key);
    const list = await (await dash("/dashboard/inboxes", { cookie })).text();
    expect(list).toContain(a.inbox.address);
    expect(list).not.toContain(second.body.data.address);
    expect((await dash(`/dashboard/inboxes/${second.body.data.id}`, { cookie })).status).toBe(404);
    const b = await createAccount("other");
    expect((await dash(`/dashboard/inboxes/${b.inbox.id}`, { cookie })).status).toBe(404);
    // read-only: creating is refused with the API's scope error
    const create = await dash("/dashboard/inboxes", { form: { username: "nope" }, cookie });
    expect(create.status).toBe(403);
    expect(await create.text()).toContain("insufficient_scope");
    // account-wide pages need an unrestricted full key
    expect((await dash("/dashboard/keys", { cookie })).status).toBe(403);
  });

  it("operator pages need the operator session, and the operator sees accounts", async () => {
    const a = await createAccount("dash");
    const { cookie } = await signIn(a.key);
    expect((await dash("/dashboard/operator/accounts", { cookie })).status).toBe(303);
    const wrong = await dash("/dashboard/sign-in", { form: { kind: "operator", secret: "nope" } });
    expect(wrong.status).toBe(401);
    const op = await signIn(ADMIN_TOKEN, "operator");
    const page = await dash("/dashboard/operator/accounts", { cookie: op.cookie });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(a.account.email);
    expect((await dash("/dashboard/overview", { cookie: op.cookie })).status).toBe(303);
  });
});

describe("message HTML frame", () => {
  it("serves sender HTML with a script-free, form-free, sandboxed CSP; the page shows text first", async () => {
    const a = await createAccount("dash");
    const raw = [
      "From: eve@example.net",
      `To: ${a.inbox.address}`,
      "Subject: hostile",
      "Message-ID: <hostile-1@example.net>",
      "MIME-Version: 1.0",
      'Content-Type: multipart/alternative; boundary="b"',
      "",
      "--b",
      "Content-Type: text/plain",
      "",
      "plain part",
      "--b",
      "Content-Type: text/html",
      "",
      '<script>alert(1)</script><a href="https://x.example/">x</a><img src="http://127.0.0.1:9/i">',
      "--b--",
      "",
    ].join("\r\n");
    const res = await exports.default.fetch(
      new Request(
        `http://localhost/webhooks/inbound/raw?to=${encodeURIComponent(a.inbox.address)}&from=eve%40example.net`,
        {
          method: "POST",
          headers: { "Content-Type": "message/rfc822", ...(await relaySignature(raw)) },
          body: raw,
        },
      ),
    );
    expect(res.status).toBeLessThan(300);
    const list = await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key });
    const mid = list.body.data[0].id as string;
    const { cookie } = await signIn(a.key);
    const page = await (await dash(`/dashboard/inboxes/${a.inbox.id}/messages/${mid}`, { cookie })).text();
    expect(page).toContain("plain part");
    expect(page).not.toContain("<script>alert");
    expect(page).not.toContain("<iframe");
    const withHtml = await (
      await dash(`/dashboard/inboxes/${a.inbox.id}/messages/${mid}?view=html`, { cookie })
    ).text();
    expect(withHtml).toMatch(/<iframe[^>]*sandbox="allow-popups allow-popups-to-escape-sandbox"/);
    const frame = await dash(`/dashboard/inboxes/${a.inbox.id}/messages/${mid}/html`, { cookie });
    expect(frame.status).toBe(200);
    const csp = frame.headers.get("Content-Security-Policy") ?? "";
    expect(csp).toContain("script-src 'none'");
    expect(csp).toContain("form-action 'none'");
    expect(csp).toContain("img-src data: cid:;");
    expect(csp).toMatch(/sandbox allow-popups/);
    expect(await frame.text()).toContain('<a rel="noopener noreferrer" href="https://x.example/">');
    const remote = await dash(`/dashboard/inboxes/${a.inbox.id}/messages/${mid}/html?remote=1`, { cookie });
    expect(remote.headers.get("Content-Security-Policy")).toContain("img-src data: cid: https: http:");
    // Another account's session cannot open it.
    const b = await createAccount("other");
    const other = await signIn(b.key);
    expect((await dash(`/dashboard/inboxes/${a.inbox.id}/messages/${mid}/html`, { cookie: other.cookie })).status).toBe(
      404,
    );
  });
});
