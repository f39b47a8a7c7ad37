import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { CreateKeyInput } from "../../src/features/api-keys/api-keys.schemas";
import { createKey as createKeyVerb } from "../../src/features/api-keys/api-keys.service";
import { deliverOutbound } from "../../src/features/outbound/delivery.service";
import { SendMessageInput } from "../../src/features/outbound/outbound.schemas";
import { sendMessage } from "../../src/features/outbound/outbound.service";
import { HSTS_VALUE } from "../../src/http/hsts";
import { runIdempotent } from "../../src/http/idempotency";
import { openText, sha256Hex } from "../../src/lib/crypto";
import { createAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";
import { countRows, jobContext, liftLimit, messageRow, serviceContext, settledMessage, unique } from "../helpers/db";
import { smtpReceived } from "../helpers/outbound";

/** A distinct client address per test: failure throttles are per client, and tests must not share one. */
const ip = () => `198.51.100.${Math.floor(Math.random() * 250) + 1}-${crypto.randomUUID().slice(0, 6)}`;
const from = (addr: string) => ({ "CF-Connecting-IP": addr });

async function fetchWith(vars: Record<string, string>, path: string, init: RequestInit = {}) {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(`http://localhost${path}`, init), { ...env, ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

describe("1. suspension cannot be bypassed", () => {
  it("a key of a suspended account is refused on every request: a cached non-active row is never trusted", async () => {
    const a = await createAccount("susp-cache");
    // The account suspended in D1 while this key escaped the guard blocking (the race the review
    // describes: a key inserted after setAccountKeysBlocked's SELECT). Before the fix, its first
    // use cached it and every later request in the isolate skipped the status check.
    await env.DB.prepare("UPDATE accounts SET status = 'suspended' WHERE id = ?").bind(a.account.id).run();
    for (let i = 0; i < 3; i++) {
      expectError(await call("GET", "/v1/inboxes", { key: a.key }), 403, "account_suspended");
    }
  });

  it("key creation is refused for a non-active account (D1 decides), and nothing is inserted", async () => {
    const a = await createAccount("susp-create");
    await env.DB.prepare("UPDATE accounts SET status = 'suspended' WHERE id = ?").bind(a.account.id).run();
    const before = await countRows("SELECT COUNT(*) AS n FROM api_keys WHERE account_id = ?", a.account.id);
    const ctx = serviceContext(a.account.id, { actor: { type: "api_key", id: a.keyId } });
    await expect(createKeyVerb(ctx, CreateKeyInput.parse({ name: "sneaky" }))).rejects.toMatchObject({
      code: "account_suspended",
    });
    expect(await countRows("SELECT COUNT(*) AS n FROM api_keys WHERE account_id = ?", a.account.id)).toBe(before);
  });

  it("suspension blocks every key again after its commit, and lifting it restores them", async () => {
    const a = await createAccount("susp-reblock");
    const made = await call("POST", "/v1/api-keys", { key: a.key, body: { name: "second" } });
    expect(made.status, made.text).toBe(201);
    expect((await call("GET", "/v1/inboxes", { key: made.body.data.key })).status).toBe(200); // cached
    const res = await call("PATCH", `/v1/admin/accounts/${a.account.id}`, {
      key: ADMIN_TOKEN,
      body: { status: "suspended" },
    });
    expect(res.status, res.text).toBe(200);
    expectError(await call("GET", "/v1/inboxes", { key: made.body.data.key }), 403, "account_suspended");
    expectError(await call("GET", "/v1/inboxes", { key: a.key }), 403, "account_suspended");
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { status: "active" } });
    expect((await call("GET", "/v1/inboxes", { key: made.body.data.key })).status).toBe(200);
  });

  it("queued mail of a suspended or closed account does not leave", async () => {
    for (const status of ["suspended", "deleted"] as const) {
      const a = await createAccount(`susp-queue-${status}`);
      await liftLimit(a.account.id);
      const to = unique(`queued-${status}-`);
      const ctx = serviceContext(a.account.id, { actor: { type: "api_key", id: null }, unqueued: true });
      const queued = await sendMessage(
        ctx,
        a.inbox.id,
        SendMessageInput.parse({ to: [to], subject: "x", body_text: "y" }),
      );
      await env.DB.prepare("UPDATE accounts SET status = ? WHERE id = ?").bind(status, a.account.id).run();
      const outcome = await deliverOutbound(jobContext(), { v: 1, message_id: queued.id, account_id: a.account.id });
      expect(outcome).toEqual({ kind: "done", status: "failed" });
      const row = await messageRow(queued.id);
      expect(row?.status).toBe("failed");
      expect(row?.last_error).toMatch(status === "suspended" ? /^account_suspended:/ : /^account_closed:/);
      expect(await smtpReceived(to)).toHaveLength(0);
    }
  });
});

describe("2. a key's public prefix cannot lock the key out", () => {
  it("after the prefix's failure limit, a correct (uncached) key still gets in; the guesser does not", async () => {
    const victim = await createAccount("prefix-victim");
    const attacker = ip();
    const guess = (i: number) => `${victim.key.slice(0, 8)}${"g".repeat(34)}${i % 10}`;
    for (let i = 0; i < 12; i++) {
      expectError(await call("GET", "/v1/inboxes", { key: guess(i), headers: from(attacker) }), 401, "invalid_api_key");
    }
    // The key has never been used in this isolate (a cold cache): it is hashed and accepted.
    const res = await call("GET", "/v1/inboxes", { key: victim.key, headers: from(ip()) });
    expect(res.status, res.text).toBe(200);
    // The guesser is stopped by its own client limit (20 failures a minute).
    const statuses: number[] = [];
    for (let i = 0; i < 10; i++) {
      statuses.push((await call("GET", "/v1/inboxes", { key: guess(i), headers: from(attacker) })).status);
    }
    expect(statuses.slice(0, 8)).toEqual(Array(8).fill(401));
    expect(statuses.slice(8)).toEqual([429, 429]);
  });
});

describe("3. guesses are throttled before they are compared", () => {
  it("operator token: a client over its failure limit is refused even with the right token", async () => {
    const guesser = ip();
    for (let i = 0; i < 20; i++) {
      expectError(
        await call("GET", "/v1/admin/accounts", { key: `wrong-token-${i}`, headers: from(guesser) }),
        401,
        "invalid_admin_token",
      );
    }
    // Compare-then-throttle would let a right guess through here and so confirm it.
    expectError(
      await call("GET", "/v1/admin/accounts", { key: ADMIN_TOKEN, headers: from(guesser) }),
      429,
      "too_many_failed_attempts",
    );
    expect((await call("GET", "/v1/admin/accounts", { key: ADMIN_TOKEN, headers: from(ip()) })).status).toBe(200);
  });

  it("closed registration is no unthrottled oracle for the operator token", async () => {
    const guesser = ip();
    const register = (token: string) =>
      fetchWith({ REGISTRATION: "closed" }, "/v1/auth/register", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}`, ...from(guesser) },
        body: JSON.stringify({ email: `oracle-${crypto.randomUUID()}@example.com` }),
      });
    for (let i = 0; i < 20; i++) expect((await register(`guess-${i}`)).status).toBe(403);
    const throttled = await register(ADMIN_TOKEN);
    expect(throttled.status).toBe(429);
    expect(((await throttled.json()) as { error: { code: string } }).error.code).toBe("too_many_failed_attempts");
  });

  it("unknown prefixes count as failures per client (each costs a D1 read)", async () => {
    const guesser = ip();
    for (let i = 0; i < 20; i++) {
      const unknown = `mb_${crypto.randomUUID().replace(/-/g, "").slice(0, 8)}${"U".repeat(32)}`;
      expectError(await call("GET", "/v1/inboxes", { key: unknown, headers: from(guesser) }), 401, "invalid_api_key");
    }
    expectError(
      await call("GET", "/v1/inboxes", { key: `mb_${"V".repeat(40)}`, headers: from(guesser) }),
      429,
      "too_many_failed_attempts",
    );
    // Another client is unaffected.
    const a = await createAccount("unknown-others");
    expect((await call("GET", "/v1/inboxes", { key: a.key, headers: from(ip()) })).status).toBe(200);
  });
});

describe("4. registration settings fail loudly", () => {
  it("a non-numeric REGISTRATIONS_PER_HOUR is a 500 config_invalid naming it, not an unlimited door", async () => {
    const res = await fetchWith({ REGISTRATIONS_PER_HOUR: "ten" }, "/v1/auth/register", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...from(ip()) },
      body: JSON.stringify({ email: `ten-${crypto.randomUUID()}@example.com` }),
    });
    expect(res.status).toBe(500);
    const body = (await res.json()) as { error: { code: string; details: { variable: string } } };
    expect(body.error).toMatchObject({ code: "config_invalid", details: { variable: "REGISTRATIONS_PER_HOUR" } });
    expect(await countRows("SELECT COUNT(*) AS n FROM accounts WHERE email LIKE 'ten-%'")).toBe(0);
  });
});

describe("13. idempotency", () => {
  it("a throttled send (429) is not remembered: the same key is tried again once the limit frees", async () => {
    const a = await createAccount("idem-429");
    const sent: string[] = [];
    for (let i = 0; i < 10; i++) {
      const ok = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
        key: a.key,
        body: { to: [unique("fill-")], subject: `fill ${i}`, body_text: "x" },
      });
      expect(ok.status, ok.text).toBe(202);
      sent.push(ok.body.data.id);
    }
    const body = { to: [unique("retry-")], subject: "retried", body_text: "x" };
    const headers = { "Idempotency-Key": `retry-${crypto.randomUUID()}` };
    const limited = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key, body, headers });
    expectError(limited, 429, "send_limit_exceeded");
    expect(limited.headers.get("Retry-After")).toMatch(/^\d+$/);
    await liftLimit(a.account.id);
    const retried = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key, body, headers });
    expect(retried.status, retried.text).toBe(202);
    expect(retried.headers.get("Idempotent-Replayed")).toBeNull();
    // And now it is remembered: the next retry replays the 202, no second message.
    const replay = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key, body, headers });
    expect(replay.status).toBe(202);
    expect(replay.headers.get("Idempotent-Replayed")).toBe("true");
    expect(replay.body.data.id).toBe(retried.body.data.id);
    // Let the deliveries finish inside the test (none may outlive its file's runtime).
    await Promise.all([...sent, retried.body.data.id].map((id) => settledMessage(id)));
  });

  it("replays carry the stored response's relevant headers (Location, Retry-After)", async () => {
    const ctx = jobContext();
    const req = {
      key: `hdr-${crypto.randomUUID()}`,
      scope: "key:test",
      accountId: null,
      method: "POST",
      path: "/v1/things",
      body: "{}",
    };
    let runs = 0;
    const run = async () => {
      runs++;
      return { status: 201, body: '{"data":{}}', headers: { location: "/v1/things/1", "retry-after": "7" } };
    };
    expect((await runIdempotent(ctx, req, run)).replayed).toBe(false);
    const replay = await runIdempotent(ctx, req, run);
    expect(replay).toMatchObject({
      replayed: true,
      status: 201,
      headers: { location: "/v1/things/1", "retry-after": "7" },
    });
    expect(runs).toBe(1);
  });

  it("a stored new API key is sealed with a server secret: the client's key alone does not open it", async () => {
    const a = await createAccount("idem-seal");
    const idemKey = `seal-${crypto.randomUUID()}`;
    const res = await call("POST", "/v1/api-keys", {
      key: a.key,
      body: { name: "sealed" },
      headers: { "Idempotency-Key": idemKey },
    });
    expect(res.status, res.text).toBe(201);
    const lookup = await sha256Hex(`key:${a.keyId}\n${idemKey}`);
    const row = await env.DB.prepare("SELECT response_sealed FROM idempotency_keys WHERE lookup = ?")
      .bind(lookup)
      .first<{ response_sealed: string }>();
    const sealed = row?.response_sealed ?? "";
    expect(sealed.startsWith("v2.")).toBe(true);
    expect(sealed).not.toContain(res.body.data.key);
    const info = `mailbot idempotency key:${a.keyId}`;
    // What a database dump plus a guessed (or leaked) client key gives: nothing.
    await expect(openText(idemKey, info, sealed.slice(3))).rejects.toThrow();
    const opened = JSON.parse(await openText(`${ADMIN_TOKEN}\n${idemKey}`, info, sealed.slice(3)));
    expect(opened.body).toContain(res.body.data.key);
  });
});

describe("21. Strict-Transport-Security in production", () => {
  it("is on every response in production (success, error, 404), and absent elsewhere", async () => {
    const prod = { ENVIRONMENT: "production" };
    for (const [path, init] of [
      ["/health", {}],
      ["/v1/inboxes", {}],
      ["/no/such/route", {}],
    ] as const) {
      const res = await fetchWith(prod, path, init);
      expect(res.headers.get("Strict-Transport-Security"), `${path} ${res.status}`).toBe(HSTS_VALUE);
    }
    const dev = await fetchWith({}, "/v1/inboxes");
    expect(dev.status).toBe(401);
    expect(dev.headers.get("Strict-Transport-Security")).toBeNull();
  });
});
