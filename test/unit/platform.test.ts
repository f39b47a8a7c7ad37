import {
  createExecutionContext,
  createMessageBatch,
  createScheduledController,
  getQueueResult,
  waitOnExecutionContext,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import main from "../../src/index";
import { hashSecret, verifySecret } from "../../src/lib/argon2";
import { newId } from "../../src/lib/ids";
import { DEFAULT_TIERS, tierLimits } from "../../src/lib/tiers";
import { createAccount } from "../helpers/accounts";
import { call } from "../helpers/api";

// The handlers as the runtime sees them (they may ignore trailing arguments).
const worker = main as unknown as Required<ExportedHandler<Cloudflare.Env>>;

describe("ids", () => {
  it("are prefixed and sort in creation order, even within one millisecond", () => {
    const ids = Array.from({ length: 200 }, () => newId("msg", 1_700_000_000_000));
    expect(ids.every((id) => /^msg_[0-9a-z]{26}$/.test(id))).toBe(true);
    expect([...ids].sort()).toEqual(ids);
    expect(newId("msg", 1_700_000_000_001) > (ids.at(-1) as string)).toBe(true);
  });
});

describe("argon2id inside workerd", () => {
  it("hashes with the OWASP parameters and verifies", async () => {
    const hash = await hashSecret("mb_secret");
    expect(hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await verifySecret("mb_secret", hash)).toBe(true);
    expect(await verifySecret("mb_other", hash)).toBe(false);
    expect(await verifySecret("mb_secret", "garbage")).toBe(false);
  });
});

describe("tiers", () => {
  it("sandbox defaults are 60 requests a minute with a burst of 10", () => {
    expect(DEFAULT_TIERS.sandbox).toMatchObject({ requests_per_minute: 60, burst: 10 });
    expect(tierLimits(undefined, "sandbox").requests_per_minute).toBe(60);
    expect(tierLimits('{"sandbox":{"burst":20}}', "sandbox")).toMatchObject({ requests_per_minute: 60, burst: 20 });
    expect(tierLimits(undefined, "unknown")).toEqual(DEFAULT_TIERS.sandbox);
  });
});

describe("RateLimiter durable object", () => {
  const sandbox = { limit: 60, windowMs: 60_000, burst: 10, burstWindowMs: 1_000 };

  it("allows a burst of 10, then 60 per sliding minute", async () => {
    const stub = env.RATE_LIMITER.getByName("unit-sandbox");
    const t0 = 1_000_000;
    const burst = [];
    for (let i = 0; i < 11; i++) burst.push(await stub.hit(sandbox, t0 + i));
    expect(burst.slice(0, 10).every((d) => d.allowed)).toBe(true);
    expect(burst[10]).toMatchObject({ allowed: false, remaining: 50, retryAfterMs: 990 });
    // Spread the rest over the minute: 60 in all, then refused until the first hit ages out.
    let allowed = 10;
    for (let i = 1; allowed < 60; i++) if ((await stub.hit(sandbox, t0 + i * 900)).allowed) allowed++;
    const full = await stub.hit(sandbox, t0 + 59_000);
    expect(full).toMatchObject({ allowed: false, remaining: 0 });
    expect((await stub.hit(sandbox, t0 + 60_001)).allowed).toBe(true);
  });

  it("holds exactly under concurrent callers", async () => {
    const stub = env.RATE_LIMITER.getByName("unit-concurrent");
    const rule = { limit: 25, windowMs: 60_000 };
    const decisions = await Promise.all(Array.from({ length: 100 }, () => stub.hit(rule, 5_000)));
    expect(decisions.filter((d) => d.allowed)).toHaveLength(25);
  });

  it("dry runs do not count", async () => {
    const stub = env.RATE_LIMITER.getByName("unit-dry");
    const rule = { limit: 1, windowMs: 60_000 };
    expect((await stub.hit(rule, 1, true)).allowed).toBe(true);
    expect((await stub.hit(rule, 2)).allowed).toBe(true);
    expect((await stub.hit(rule, 3, true)).allowed).toBe(false);
  });
});

describe("InboxCounter durable object", () => {
  it("sums counters over a sliding window", async () => {
    const stub = env.INBOX_COUNTER.getByName("inbox_unit");
    const hour = 3_600_000;
    const now = 100 * 24 * hour;
    await stub.record("sent", 3, now - 10 * 24 * hour); // pruned: older than the kept window
    await stub.record("sent", 2, now - 2 * hour);
    await Promise.all(Array.from({ length: 50 }, () => stub.record("sent", 1, now)));
    await stub.record("bounced_hard", 1, now);
    expect(await stub.totals(7 * 24 * hour, now)).toEqual({ sent: 52, bounced_hard: 1 });
    expect(await stub.totals(hour, now)).toEqual({ sent: 50, bounced_hard: 1 });
  });
});

describe("the other triggers", () => {
  it("email(): refuses an unknown recipient with a reason and stores nothing", async () => {
    const setReject = vi.fn();
    const message = {
      from: "a@example.com",
      to: "nobody--zzzz@mailbot.test",
      rawSize: 10,
      setReject,
    } as unknown as ForwardableEmailMessage;
    await worker.email(message, env, createExecutionContext());
    expect(setReject).toHaveBeenCalledWith(expect.stringContaining("nobody--zzzz@mailbot.test"));
    const rows = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages").first<{ n: number }>();
    expect(rows?.n).toBe(0);
  });

  it("queue(): keeps messages it has no consumer for (retry, never a silent ack)", async () => {
    const batch = createMessageBatch("mailbot-unknown", [
      { id: "m1", timestamp: new Date(), attempts: 1, body: { v: 1 } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env, ctx);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryBatch.retry).toBe(true);
  });

  it("scheduled(): purges expired idempotency records and relay signatures only", async () => {
    const a = await createAccount();
    await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "keep" },
      headers: { "Idempotency-Key": "fresh" },
    });
    await env.DB.prepare(
      "INSERT INTO idempotency_keys (id, lookup, method, path, request_hash, state, created_at, expires_at) VALUES ('idem_old', 'old', 'POST', '/x', 'h', 'done', 0, 1)",
    ).run();
    const later = Date.now() + 3_600_000;
    await env.DB.prepare(
      "INSERT INTO relay_signatures (signature_hash, envelope_to, expires_at) VALUES ('old', 'a@x', 1), ('fresh', 'a@x', ?)",
    )
      .bind(later)
      .run();
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ scheduledTime: Date.now(), cron: "17 * * * *" }), env, ctx);
    await waitOnExecutionContext(ctx);
    const left = await env.DB.prepare("SELECT id FROM idempotency_keys").all<{ id: string }>();
    expect(left.results.map((r) => r.id)).not.toContain("idem_old");
    expect(left.results).toHaveLength(1);
    const relay = await env.DB.prepare("SELECT signature_hash FROM relay_signatures").all<{ signature_hash: string }>();
    expect(relay.results.map((r) => r.signature_hash)).toEqual(["fresh"]);
  });
});
