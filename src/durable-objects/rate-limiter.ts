import { DurableObject } from "cloudflare:workers";

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
  /** Why the subject is blocked outright (e.g. "revoked", "suspended"), or null. */
  blocked: string | null;
  limit: number;
  remaining: number;
  /** When the window is entirely free again (epoch ms). */
  resetAtMs: number;
  /** How long until one more request would be allowed, when refused. */
  retryAfterMs: number;
}

/** What a key's guard tells an isolate that reports its hits (see features/api-keys/key-guard.ts). */
export interface GuardState {
  /** Why the key is refused outright ("revoked", "suspended"), or null. */
  blocked: string | null;
  /** The account's tier as last pushed by a tier change, or null (the verified row's tier holds). */
  tier: string | null;
  /** Hits of other isolates in the window, and in the burst window. */
  others: number;
  othersBurst: number;
  /** When the oldest of the others' hits in the window expires (epoch ms), or null. */
  othersFreeAtMs: number | null;
}

export interface SlotDecision {
  allowed: boolean;
  used: number;
  limit: number;
  retryAfterMs: number;
  /** When the oldest slot in the window frees (epoch ms). */
  resetAtMs: number;
}

/**
 * One object per limited subject (an API key, a client address, a key prefix). It keeps an
 * exact sliding log of recent hits in memory: the object is single-threaded, so check and
 * record happen in one synchronous step and concurrent requests cannot overshoot. Losing the
 * log on eviction (after idle time) only forgets hits that are already old.
 *
 * A subject can also be blocked, durably. For an API key this object is the authority every
 * request already asks, so revocation and suspension are written here first: a key cached as
 * verified in any isolate is refused on its very next request, without a D1 read per request.
 */
export class RateLimiter extends DurableObject<unknown> {
  private hits: number[] = [];
  private blocked: string | null;
  private tier: string | null;
  /** Hits reported by isolates (key guards), each tagged with the isolate that served it. */
  private reported: { at: number; origin: string }[] = [];

  constructor(ctx: DurableObjectState, env: unknown) {
    super(ctx, env);
    this.blocked = ctx.storage.kv.get<string>("blocked") ?? null;
    this.tier = ctx.storage.kv.get<string>("tier") ?? null;
  }

  /**
   * A key's isolates report the hits they admitted on their own (off the request path) and learn
   * the key's state: blocked or not, its tier, and how many hits the other isolates served. Each
   * isolate then decides locally until its snapshot is too old (key-guard.ts), so the object is
   * no round trip on a request, only the authority the isolates keep in sync with.
   */
  sync(origin: string, hits: number[], windowMs: number, burstWindowMs: number, now: number = Date.now()): GuardState {
    const windowStart = now - windowMs;
    while (this.reported.length > 0 && (this.reported[0] as { at: number }).at <= windowStart) this.reported.shift();
    for (const at of hits) if (at > windowStart) this.reported.push({ at, origin });
    this.reported.sort((a, b) => a.at - b.at);
    let others = 0;
    let othersBurst = 0;
    let othersFreeAtMs: number | null = null;
    for (const h of this.reported) {
      if (h.origin === origin) continue;
      others++;
      if (othersFreeAtMs === null) othersFreeAtMs = h.at + windowMs;
      if (h.at > now - burstWindowMs) othersBurst++;
    }
    return { blocked: this.blocked, tier: this.tier, others, othersBurst, othersFreeAtMs };
  }

  /** Records the key's account tier (a tier change), so every isolate applies it at its next sync. */
  setTier(tier: string): void {
    this.ctx.storage.kv.put("tier", tier);
    this.tier = tier;
  }

  /**
   * Takes one slot of a durable sliding window (send limits: 10 per 24 h must survive eviction,
   * unlike the in-memory request log). The object runs one call at a time and the SQL calls are
   * synchronous, so count-then-insert cannot be overtaken: exact under any concurrency.
   */
  reserve(token: string, limit: number, windowMs: number, now: number = Date.now()): SlotDecision {
    this.slotTable();
    const sql = this.ctx.storage.sql;
    sql.exec("DELETE FROM slots WHERE at <= ?", now - windowMs);
    const times = sql
      .exec<{ at: number }>("SELECT at FROM slots ORDER BY at")
      .toArray()
      .map((r) => r.at);
    if (times.length >= limit) {
      const freesAt = (times[times.length - limit] as number) + windowMs;
      return {
        allowed: false,
        used: times.length,
        limit,
        retryAfterMs: Math.max(1, freesAt - now),
        resetAtMs: freesAt,
      };
    }
    sql.exec("INSERT OR REPLACE INTO slots (token, at) VALUES (?, ?)", token, now);
    return {
      allowed: true,
      used: times.length + 1,
      limit,
      retryAfterMs: 0,
      resetAtMs: (times[0] ?? now) + windowMs,
    };
  }

  /** Gives a slot back (the request it was taken for was refused later or failed to commit). */
  release(token: string): void {
    this.slotTable();
    this.ctx.storage.sql.exec("DELETE FROM slots WHERE token = ?", token);
  }

  /** Slots in use in the window, and when the oldest frees. */
  slotUsage(windowMs: number, now: number = Date.now()): { used: number; resetAtMs: number | null } {
    this.slotTable();
    const row = this.ctx.storage.sql
      .exec<{ n: number; oldest: number | null }>(
        "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM slots WHERE at > ?",
        now - windowMs,
      )
      .one();
    return { used: row.n, resetAtMs: row.oldest === null ? null : row.oldest + windowMs };
  }

  private slotsReady = false;
  private slotTable(): void {
    if (this.slotsReady) return;
    this.ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS slots (token TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID",
    );
    this.slotsReady = true;
  }

  /** Blocks the subject for good (until `unblock`). */
  block(reason: string): void {
    this.ctx.storage.kv.put("blocked", reason);
    this.blocked = reason;
  }

  /** Lifts a block, only if it was placed for `reason` (a revoked key stays revoked). */
  unblock(reason: string): void {
    if (this.blocked !== reason) return;
    this.ctx.storage.kv.delete("blocked");
    this.blocked = null;
  }

  /** Records one hit if the rule allows it (or only checks, with `dryRun`). */
  hit(rule: RateRule, now: number = Date.now(), dryRun = false): RateDecision {
    if (this.blocked !== null) {
      return {
        allowed: false,
        blocked: this.blocked,
        limit: rule.limit,
        remaining: 0,
        resetAtMs: now,
        retryAfterMs: 0,
      };
    }
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
      blocked: null,
      limit: rule.limit,
      remaining: Math.max(0, rule.limit - this.hits.length),
      resetAtMs: newest === undefined ? now : newest + rule.windowMs,
      retryAfterMs: Math.max(0, retryAfterMs),
    };
  }
}
