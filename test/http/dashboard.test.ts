import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { and, eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { createDb } from "../../src/db/client";
import { accounts, auditLog, dashboardSessions, suppressions } from "../../src/db/schema";
import { sha256Hex } from "../../src/lib/crypto";
import { newId } from "../../src/lib/ids";
import { createAccount, createKey, type TestAccount } from "../helpers/accounts";
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

// ---------------------------------------------------------------- review fixes (issue 19)

/** The dashboard under other Worker vars (a rotated or unset ADMIN_TOKEN). */
async function dashWith(
  vars: Record<string, string | undefined>,
  path: string,
  init: { cookie?: string; form?: Record<string, string> } = {},
) {
  const headers: Record<string, string> = { Origin: ORIGIN };
  if (init.cookie) headers.Cookie = init.cookie;
  let body: string | undefined;
  if (init.form) {
    body = new URLSearchParams(init.form).toString();
    headers["Content-Type"] = "application/x-www-form-urlencoded";
  }
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`${ORIGIN}${path}`, { method: init.form ? "POST" : "GET", headers, body, redirect: "manual" }),
    { ...env, ...vars },
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}

async function receive(a: TestAccount, raw: string): Promise<string> {
  const res = await exports.default.fetch(
    new Request(
      `http://localhost/webhooks/inbound/raw?to=${encodeURIComponent(a.inbox.address)}&from=eve%40example.net`,
      { method: "POST", headers: { "Content-Type": "message/rfc822", ...(await relaySignature(raw)) }, body: raw },
    ),
  );
  expect(res.status).toBeLessThan(300);
  const list = await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key });
  return list.body.data[0].id as string;
}

describe("operator sessions follow ADMIN_TOKEN", () => {
  it("rotating ADMIN_TOKEN ends the operator sessions opened with the old one at once", async () => {
    const op = await signIn(ADMIN_TOKEN, "operator");
    expect((await dash("/dashboard/operator/accounts", { cookie: op.cookie })).status).toBe(200);
    // The row does not hold the cookie token's plain SHA-256 (that would survive a rotation).
    const token = op.cookie.split("=")[1] ?? "";
    const db = createDb(env.DB);
    expect(
      await db
        .select()
        .from(dashboardSessions)
        .where(eq(dashboardSessions.tokenHash, await sha256Hex(token)))
        .get(),
    ).toBeUndefined();

    const rotated = { ADMIN_TOKEN: `rotated-${crypto.randomUUID()}` };
    const after = await dashWith(rotated, "/dashboard/operator/accounts", { cookie: op.cookie });
    expect(after.status).toBe(303);
    expect(after.headers.get("Location")).toBe("/dashboard/sign-in");
    // A POST with the old session is refused too, and changes nothing.
    const a = await createAccount("rot");
    const post = await dashWith(rotated, `/dashboard/operator/accounts/${a.account.id}`, {
      cookie: op.cookie,
      form: { status: "suspended" },
    });
    expect(post.status).toBe(401);
    expect((await call("GET", "/v1/account", { key: a.key })).status).toBe(200);
    // Operator access switched off: no operator session either.
    expect(
      (await dashWith({ ADMIN_TOKEN: undefined }, "/dashboard/operator/accounts", { cookie: op.cookie })).status,
    ).toBe(303);

    // The new token signs in; its session is refused under the old one.
    const signed = await dashWith(rotated, "/dashboard/sign-in", {
      form: { kind: "operator", secret: rotated.ADMIN_TOKEN },
    });
    expect(signed.status).toBe(303);
    const fresh = (signed.headers.get("Set-Cookie") ?? "").split(";")[0] ?? "";
    expect((await dashWith(rotated, "/dashboard/operator/accounts", { cookie: fresh })).status).toBe(200);
    expect((await dash("/dashboard/operator/accounts", { cookie: fresh })).status).toBe(303);
    // Sign-out still removes an operator row.
    const before = (await db.select().from(dashboardSessions).where(eq(dashboardSessions.kind, "operator")).all())
      .length;
    expect((await dashWith(rotated, "/dashboard/sign-out", { cookie: fresh, form: {} })).status).toBe(303);
    expect((await db.select().from(dashboardSessions).where(eq(dashboardSessions.kind, "operator")).all()).length).toBe(
      before - 1,
    );
  });

  it("an account session's token cannot be used as an operator session (and an account session is unaffected by rotation)", async () => {
    const a = await createAccount("dash");
    const { cookie } = await signIn(a.key);
    const rotated = { ADMIN_TOKEN: `rotated-${crypto.randomUUID()}` };
    expect((await dashWith(rotated, "/dashboard/overview", { cookie })).status).toBe(200);
    expect((await dashWith(rotated, "/dashboard/operator/accounts", { cookie })).status).toBe(303);
  });
});

describe("suppression lift", () => {
  async function suppress(accountId: string, address: string) {
    await createDb(env.DB)
      .insert(suppressions)
      .values({ id: newId("sup"), accountId, address, reason: "hard_bounce", source: "report", createdAt: Date.now() });
  }
  const remaining = async (accountId: string) =>
    (await createDb(env.DB).select().from(suppressions).where(eq(suppressions.accountId, accountId)).all())
      .map((r) => r.address)
      .sort();

  it("lifts exactly the address shown, even with % in it; a stray % is not a 500", async () => {
    const a = await createAccount("dash");
    await suppress(a.account.id, "x%41@example.org");
    await suppress(a.account.id, "xa@example.org");
    await suppress(a.account.id, "bad%zz@example.org");
    const { cookie } = await signIn(a.key);
    // The page links to the address as it encodes it; a second decode would lift xa@ (%41 = A) instead.
    const page = await (await dash("/dashboard/suppressions", { cookie })).text();
    expect(page).toContain(`/dashboard/suppressions/${encodeURIComponent("x%41@example.org")}/lift`);
    const lift = await dash(`/dashboard/suppressions/${encodeURIComponent("x%41@example.org")}/lift`, {
      cookie,
      form: {},
    });
    expect(lift.status).toBe(303);
    expect(await remaining(a.account.id)).toEqual(["bad%zz@example.org", "xa@example.org"]);
    // decodeURIComponent("bad%zz@…") throws URIError: it was a 500.
    const bad = await dash(`/dashboard/suppressions/${encodeURIComponent("bad%zz@example.org")}/lift`, {
      cookie,
      form: {},
    });
    expect(bad.status).toBe(303);
    expect(await remaining(a.account.id)).toEqual(["xa@example.org"]);
    const audit = await createDb(env.DB)
      .select()
      .from(auditLog)
      .where(and(eq(auditLog.accountId, a.account.id), eq(auditLog.action, "suppression.deleted")))
      .all();
    expect(audit).toHaveLength(2);
  });
});

describe("downloads", () => {
  it("raw and attachment downloads say nosniff and stay attachments", async () => {
    const a = await createAccount("dash");
    const raw = [
      "From: eve@example.net",
      `To: ${a.inbox.address}`,
      "Subject: with attachment",
      "Message-ID: <att-1@example.net>",
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="b"',
      "",
      "--b",
      "Content-Type: text/plain",
      "",
      "see attached",
      "--b",
      "Content-Type: text/html",
      'Content-Disposition: attachment; filename="page.html"',
      "",
      "<script>alert(1)</script>",
      "--b--",
      "",
    ].join("\r\n");
    const mid = await receive(a, raw);
    const msg = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${mid}`, { key: a.key });
    const att = msg.body.data.attachments[0];
    expect(att?.filename).toBe("page.html");
    const { cookie } = await signIn(a.key);
    const base = `/dashboard/inboxes/${a.inbox.id}/messages/${mid}`;
    const eml = await dash(`${base}/raw`, { cookie });
    expect(eml.status).toBe(200);
    expect(eml.headers.get("X-Content-Type-Options")).toBe("nosniff");
    expect(eml.headers.get("Content-Disposition")).toMatch(/^attachment;/);
    const file = await dash(`${base}/attachments/${att.id}`, { cookie });
    expect(file.status).toBe(200);
    expect(file.headers.get("X-Content-Type-Options")).toBe("nosniff");
    expect(file.headers.get("Content-Type")).toBe("application/octet-stream");
    expect(file.headers.get("Content-Disposition")).toBe('attachment; filename="page.html"');
    expect(await file.text()).toContain("<script>");
  });
});

describe("operator pages", () => {
  it("offers Reactivate for a suspended account, nothing for a deleted one", async () => {
    const tag = `st${crypto.randomUUID().slice(0, 6)}`;
    const suspended = await createAccount(`${tag}s`);
    const deleted = await createAccount(`${tag}d`);
    expect(
      (
        await call("PATCH", `/v1/admin/accounts/${suspended.account.id}`, {
          key: ADMIN_TOKEN,
          body: { status: "suspended" },
        })
      ).status,
    ).toBe(200);
    expect((await call("DELETE", "/v1/account", { key: deleted.key })).status).toBe(200);
    const op = await signIn(ADMIN_TOKEN, "operator");
    const rowOf = (html: string, id: string) => {
      const at = html.indexOf(`/dashboard/operator/accounts/${id}"`);
      return html.slice(at, html.indexOf("</tr>", at));
    };
    const html = await (await dash(`/dashboard/operator/accounts?q=${tag}`, { cookie: op.cookie })).text();
    expect(rowOf(html, suspended.account.id)).toContain("Reactivate");
    expect(rowOf(html, deleted.account.id)).not.toContain("Reactivate");
    expect(rowOf(html, deleted.account.id)).not.toContain("<form");
    const own = await (await dash(`/dashboard/operator/accounts/${deleted.account.id}`, { cookie: op.cookie })).text();
    expect(own).not.toContain("Reactivate");
  });

  it("re-enables an inbox disabled for its bounce rate, audited as the admin API does", async () => {
    const a = await createAccount("dash");
    await env.DB.prepare("UPDATE inboxes SET status = 'disabled', disabled_reason = 'bounce_rate' WHERE id = ?")
      .bind(a.inbox.id)
      .run();
    // The account cannot.
    const own = await signIn(a.key);
    expect((await dash(`/dashboard/inboxes/${a.inbox.id}/enable`, { cookie: own.cookie, form: {} })).status).toBe(409);
    expect(
      (await dash(`/dashboard/operator/inboxes/${a.inbox.id}/enable`, { cookie: own.cookie, form: {} })).status,
    ).toBe(403);
    // The operator sees why, and re-enables.
    const op = await signIn(ADMIN_TOKEN, "operator");
    const page = await dash(`/dashboard/operator/accounts/${a.account.id}`, { cookie: op.cookie });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain(a.inbox.address);
    expect(html).toContain("bounce_rate");
    expect(html).toContain(`action="/dashboard/operator/inboxes/${a.inbox.id}/enable"`);
    const res = await dash(`/dashboard/operator/inboxes/${a.inbox.id}/enable`, { cookie: op.cookie, form: {} });
    expect(res.status).toBe(303);
    expect(res.headers.get("Location")).toBe(`/dashboard/operator/accounts/${a.account.id}`);
    const row = await env.DB.prepare("SELECT status, disabled_reason FROM inboxes WHERE id = ?")
      .bind(a.inbox.id)
      .first();
    expect(row).toEqual({ status: "active", disabled_reason: null });
    const audit = await createDb(env.DB).select().from(auditLog).where(eq(auditLog.accountId, a.account.id)).all();
    const enabled = audit.find((r) => r.action === "inbox.enabled");
    expect(enabled?.actorType).toBe("dashboard");
    expect(enabled?.inboxId).toBe(a.inbox.id);
    expect(JSON.stringify(enabled?.metadata)).toContain("operator_review");
    expect(audit.some((r) => r.action === "account.admin_viewed" && r.actorType === "dashboard")).toBe(true);
    // An unknown inbox is a 404, not a 500.
    expect((await dash("/dashboard/operator/inboxes/inb_nope/enable", { cookie: op.cookie, form: {} })).status).toBe(
      404,
    );
  });
});

describe("operator account search", () => {
  it("searches every account in SQL (email, name, id prefix; @domain), beyond the first 100, paged", async () => {
    const tag = `srch${crypto.randomUUID().slice(0, 6)}`;
    const old = await createAccount(tag);
    // 120 newer accounts: the old in-memory filter only saw the newest 100.
    const now = Date.now();
    await createDb(env.DB).batch(
      Array.from({ length: 120 }, (_, i) =>
        createDb(env.DB)
          .insert(accounts)
          .values({
            id: newId("acct"),
            shortId: `f${tag}${i}`,
            email: `filler-${tag}-${i}@filler.example`,
            name: null,
            newAccountUntil: now,
            createdAt: now,
            updatedAt: now,
          }),
      ) as never,
    );
    const op = await signIn(ADMIN_TOKEN, "operator");
    const html = await (await dash(`/dashboard/operator/accounts?q=${tag}`, { cookie: op.cookie })).text();
    expect(html).toContain(old.account.email);
    expect(html).not.toContain("filler-");

    const q = (query: string) => call("GET", `/v1/admin/accounts?${query}`, { key: ADMIN_TOKEN });
    const emails = (r: Awaited<ReturnType<typeof q>>) => r.body.data.map((x: { email: string }) => x.email);
    expect(emails(await q(`q=${tag.toUpperCase()}`))).toEqual([old.account.email]); // case-insensitive
    expect(emails(await q(`q=${encodeURIComponent(old.account.name)}`))).toEqual([old.account.email]);
    expect(emails(await q(`q=${old.account.id}`))).toEqual([old.account.email]);
    // Not a substring search, and LIKE's wildcards match themselves.
    expect(emails(await q(`q=${tag.slice(2)}`))).toEqual([]);
    expect(emails(await q("q=%25"))).toEqual([]);
    expect(emails(await q("q=_"))).toEqual([]);
    // @domain matches the start of the email's domain.
    const domain = emails(await q(`q=${encodeURIComponent("@filler.exa")}&limit=3`));
    expect(domain).toHaveLength(3);
    expect(domain.every((e: string) => e.endsWith("@filler.example"))).toBe(true);
    // Paged with the cursor: filler-…-1, -10…-19, -100…-119 are 31 accounts.
    const prefix = `q=${encodeURIComponent(`filler-${tag}-1`)}&limit=20`;
    const first = await q(prefix);
    expect(first.body.data).toHaveLength(20);
    const second = await q(`${prefix}&cursor=${first.body.meta.next_cursor}`);
    expect(second.body.data).toHaveLength(11);
    expect(second.body.meta.next_cursor).toBeNull();
    expect(new Set([...emails(first), ...emails(second)]).size).toBe(31);
    // Without q, the list is unchanged (every account, newest first).
    const all = await q("limit=5");
    expect(all.body.data).toHaveLength(5);
    expect((await q("q=")).status).toBe(422); // an empty search is a mistake, not "everything"
  });
});

describe("events page stream", () => {
  /** The data of the next SSE frame that carries an event, or null after waitMs. */
  function frames(body: ReadableStream<Uint8Array>) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
    return {
      // biome-ignore lint/suspicious/noExplicitAny: the event JSON, read field by field
      async next(waitMs = 5_000): Promise<{ id: string; event: string; data: any } | null> {
        const deadline = Date.now() + waitMs;
        for (;;) {
          const end = buffer.indexOf("\n\n");
          if (end >= 0) {
            const raw = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const lines = raw.split("\n");
            const get = (p: string) => lines.find((l) => l.startsWith(p))?.slice(p.length);
            const data = get("data: ");
            if (data !== undefined)
              return { id: get("id: ") ?? "", event: get("event: ") ?? "", data: JSON.parse(data) };
            continue;
          }
          const left = deadline - Date.now();
          if (left <= 0) return null;
          pending ??= reader.read();
          const result = await Promise.race([pending, new Promise<"t">((r) => setTimeout(() => r("t"), left))]);
          if (result === "t") return null;
          pending = null;
          if (result.done) return null;
          buffer += decoder.decode(result.value, { stream: true });
        }
      },
      close: () => reader.cancel().catch(() => undefined),
    };
  }

  it("streams the session's events as they commit, and resumes after Last-Event-ID", async () => {
    const a = await createAccount("dash");
    const { cookie } = await signIn(a.key);
    const page = await (await dash("/dashboard/events", { cookie })).text();
    expect(page).toContain('data-types="');
    const res = await dash("/dashboard/events/stream", { cookie });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    expect(res.headers.get("Cache-Control")).toBe("no-store, no-transform");
    const s = frames(res.body as ReadableStream<Uint8Array>);
    const made = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "live" } });
    const f = await s.next();
    expect(f?.event).toBe("inbox.created");
    expect(JSON.stringify(f?.data)).toContain(made.body.data.id);
    await s.close();
    // Resume: what committed after the cursor comes first.
    const second = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "later" } });
    const again = await exports.default.fetch(
      new Request(`${ORIGIN}/dashboard/events/stream`, { headers: { Cookie: cookie, "Last-Event-ID": f?.id ?? "" } }),
    );
    const r = frames(again.body as ReadableStream<Uint8Array>);
    const backlog = await r.next();
    expect(backlog?.event).toBe("inbox.created");
    expect(JSON.stringify(backlog?.data)).toContain(second.body.data.id);
    await r.close();
  });

  it("a restricted key's stream carries only its inboxes' events; no session, no stream", async () => {
    const a = await createAccount("dash");
    const restricted = await createKey(a, { name: "r", scopes: ["read"], inbox_ids: [a.inbox.id] });
    const { cookie } = await signIn(restricted.key);
    const res = await dash("/dashboard/events/stream", { cookie });
    expect(res.status).toBe(200);
    const s = frames(res.body as ReadableStream<Uint8Array>);
    await call("POST", "/v1/inboxes", { key: a.key, body: { username: "hidden" } });
    expect(await s.next(1_500)).toBeNull();
    await s.close();
    expect((await dash("/dashboard/events/stream")).status).toBe(303);
    const op = await signIn(ADMIN_TOKEN, "operator");
    expect((await dash("/dashboard/events/stream", { cookie: op.cookie })).status).toBe(303);
  });
});

describe("read your writes in the console (the D1 bookmark cookie)", () => {
  const cookieOf = (res: Response, name: string) =>
    res.headers
      .getSetCookie()
      .find((c) => c.startsWith(`${name}=`))
      ?.split(";")[0]
      ?.slice(name.length + 1);

  it("a form post answers with the write's bookmark in an HttpOnly cookie; the next page hands it back and reads at least that", async () => {
    const a = await createAccount("dash-bookmark");
    await createDb(env.DB)
      .insert(suppressions)
      .values({
        id: newId("sup"),
        accountId: a.account.id,
        address: "gone@example.org",
        reason: "hard_bounce",
        source: "report",
        createdAt: Date.now(),
      });
    const { cookie } = await signIn(a.key);
    const lift = await dash(`/dashboard/suppressions/${encodeURIComponent("gone@example.org")}/lift`, {
      cookie,
      form: {},
    });
    expect(lift.status).toBe(303);
    const set = lift.headers.getSetCookie().find((c) => c.startsWith("mb_bookmark=")) ?? "";
    expect(set).toMatch(/HttpOnly/i);
    expect(set).toMatch(/SameSite=Strict/i);
    expect(set).toMatch(/Path=\/dashboard/);
    const written = cookieOf(lift, "mb_bookmark") ?? "";
    expect(written).toMatch(/^[0-9a-f]+(-[0-9a-f]+)+$/i);
    expect(written).toBe(lift.headers.get("X-Mailbot-Bookmark"));

    const page = await dash(lift.headers.get("Location") ?? "/dashboard/suppressions", {
      cookie: `${cookie}; mb_bookmark=${written}`,
    });
    expect(page.status).toBe(200);
    expect(await page.text()).not.toContain("gone@example.org");
    expect((page.headers.get("X-Mailbot-Bookmark") ?? "").localeCompare(written)).toBeGreaterThanOrEqual(0);

    // A junk cookie is ignored (served from the primary), never an error; the API never sets it.
    const junk = await dash("/dashboard/overview", { cookie: `${cookie}; mb_bookmark=%27%3B%20DROP` });
    expect(junk.status).toBe(200);
    const api = await call("GET", "/v1/inboxes", { key: a.key });
    expect(api.headers.getSetCookie?.() ?? []).toEqual([]);
  });
});
