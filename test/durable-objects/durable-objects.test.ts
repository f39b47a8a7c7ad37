import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

// The Durable Objects through their RPC methods: RateLimiter (requests, sends, key guards) and
// InboxCounter (per-inbox reputation counters and the auto-disable decision).

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

describe("InboxCounter durable object: decisions", () => {
  it("the counter answers `disable` to one of many concurrent callers only", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_race_${crypto.randomUUID()}`);
    await stub.apply([{ metric: "sent", n: 100 }]);
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => stub.apply([{ metric: "bounced_hard", key: `b${i}` }])),
    );
    expect(results.filter((r) => r.disable !== null)).toHaveLength(1);
    expect(results.find((r) => r.disable)?.figures.bounced).toBe(11);
    expect((await stub.snapshot())?.bounced).toBe(50);
    // Re-enabled: the next input over the threshold is told again, once.
    await stub.enable();
    const again = await Promise.all([1, 2, 3].map(() => stub.apply([{ metric: "sent" }])));
    expect(again.filter((r) => r.disable === "bounce_rate")).toHaveLength(1);
  });
});

describe("the counter's window", () => {
  const HOUR = 60 * 60 * 1000;
  const DAY = 24 * HOUR;

  it("slides: an input older than 7 days (by an hour) no longer counts, one just inside does", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_window_${crypto.randomUUID()}`);
    const now = Date.now();
    await stub.apply([{ metric: "sent", n: 40, key: "s" }], now);
    await stub.apply([{ metric: "bounced_hard", key: "old" }], now - 7 * DAY - HOUR);
    await stub.apply([{ metric: "bounced_hard", key: "inside" }], now - 7 * DAY + HOUR);
    expect(await stub.snapshot(now)).toMatchObject({ sent: 40, bounced: 1 });
    // An hour later the second one has left the window too.
    expect(await stub.snapshot(now + 2 * HOUR)).toMatchObject({ sent: 40, bounced: 0 });
  });

  it("forgets idempotency keys past the 8 days kept, pruning once per hour", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_prune_${crypto.randomUUID()}`);
    const now = Date.now();
    await stub.apply([{ metric: "complained", key: "k" }], now - 9 * DAY);
    expect((await stub.apply([{ metric: "complained", key: "k" }], now - 9 * DAY)).counted).toBe(0);
    // Now (a new hour bucket): the prune runs and the 9-day-old key is gone, so it counts again.
    expect((await stub.apply([{ metric: "sent", key: "trigger" }], now)).counted).toBe(1);
    expect((await stub.apply([{ metric: "complained", key: "k" }], now)).counted).toBe(1);
  });

  it("warns at 2/3 of the bounce threshold, not just under it (2 in 31 sends)", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_warn_${crypto.randomUUID()}`);
    await stub.apply([
      { metric: "sent", n: 31 },
      { metric: "bounced_hard", n: 2 },
    ]);
    expect((await stub.snapshot())?.warnings).toEqual([]); // 6.45 % < 6.67 %
    await stub.apply([{ metric: "bounced_hard" }]);
    expect((await stub.snapshot())?.warnings).toEqual(["bounce_rate"]); // 3/31 = 9.7 %
  });
});
