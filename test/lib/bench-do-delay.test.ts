import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { keyGuard, rateLimiter } from "../../src/durable-objects/rate-limiter.client";
import type { Bindings } from "../../src/env";
import { benchHooks } from "../../src/lib/bench";

describe("BENCH_DO_DELAY_MS (development only)", () => {
  it("a delayed stub still makes the real call (RPC methods, arguments and results intact)", async () => {
    const delayed = { ...env, BENCH_DO_DELAY_MS: "5" } as Bindings;
    expect(benchHooks(delayed).doDelayMs).toBe(5);
    const subject = `bench-delay-${crypto.randomUUID()}`;
    const first = await rateLimiter(delayed, subject).hit({ limit: 1, windowMs: 60_000 }, Date.now());
    expect(first.allowed).toBe(true);
    // The same object, reached without the delay, saw that hit.
    const second = await rateLimiter(env, subject).hit({ limit: 1, windowMs: 60_000 }, Date.now());
    expect(second.allowed).toBe(false);
    const state = await keyGuard(delayed, `k-${subject}`).sync("o", [Date.now()], 60_000, 1_000);
    expect(state).toMatchObject({ blocked: null, others: 0 });
  });

  it("is ignored outside development", () => {
    const prod = { ...env, ENVIRONMENT: "production", BENCH_DO_DELAY_MS: "50" } as Bindings;
    expect(benchHooks(prod).doDelayMs).toBe(0);
  });
});
