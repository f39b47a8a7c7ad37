import { DurableObject } from "cloudflare:workers";
import type { Bindings } from "../env";

export interface RateRule {
  /** Requests allowed in `windowMs`. */
  limit: number;
  windowMs: number;
  /** Requests allowed in `burstWindowMs`, at most. */
  burst?: number;
  burstWindowMs?: number;
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** When the window is entirely free again (epoch ms). */
  resetAtMs: number;
  /** How long until one more request would be allowed, when refused. */
  retryAfterMs: number;
}

/**
 * One object per limited subject (an API key, a client address, a key prefix). It keeps an
 * exact sliding log of recent hits in memory: the object is single-threaded, so check and
 * record happen in one synchronous step and concurrent requests cannot overshoot. Losing the
 * log on eviction (after idle time) only forgets hits that are already old.
 */
export class RateLimiter extends DurableObject<Bindings> {
  private hits: number[] = [];

  /** Records one hit if the rule allows it (or only checks, with `dryRun`). */
  hit(rule: RateRule, now: number = Date.now(), dryRun = false): RateDecision {
    const windowStart = now - rule.windowMs;
    while (this.hits.length > 0 && (this.hits[0] as number) <= windowStart) this.hits.shift();

    let retryAfterMs = 0;
    if (this.hits.length >= rule.limit) {
      retryAfterMs = (this.hits[this.hits.length - rule.limit] as number) + rule.windowMs - now;
    } else if (rule.burst !== undefined && rule.burstWindowMs !== undefined) {
      const burstStart = now - rule.burstWindowMs;
      const inBurst = this.hits.filter((t) => t > burstStart).length;
      if (inBurst >= rule.burst) {
        retryAfterMs = (this.hits[this.hits.length - rule.burst] as number) + rule.burstWindowMs - now;
      }
    }
    const allowed = retryAfterMs <= 0;
    if (allowed && !dryRun) this.hits.push(now);
    const newest = this.hits.at(-1);
    return {
      allowed,
      limit: rule.limit,
      remaining: Math.max(0, rule.limit - this.hits.length),
      resetAtMs: newest === undefined ? now : newest + rule.windowMs,
      retryAfterMs: Math.max(0, retryAfterMs),
    };
  }
}

/** The one client that names the RateLimiter namespace. */
export function rateLimiter(env: Bindings, subject: string) {
  return env.RATE_LIMITER.getByName(subject);
}
