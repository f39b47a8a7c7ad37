import { DurableObject } from "cloudflare:workers";

const BUCKET_MS = 60 * 60 * 1000;
const KEEP_MS = 8 * 24 * BUCKET_MS;

export type CounterMetric = "sent" | "bounced_hard" | "bounced_soft" | "complained" | "received";

/** The reputation rules of API.md: judged over 7 days, from 20 sends, warned at 2/3 of a threshold. */
export const REPUTATION_RULES = {
  windowDays: 7,
  minSends: 20,
  /** Disabled when hard bounces / sends is ABOVE this. */
  bounceRate: 0.1,
  /** Disabled when complaints / sends is ABOVE this. */
  complaintRate: 0.003,
  /** Warned at or above this fraction of a threshold. */
  warningFraction: 2 / 3,
} as const;

const WINDOW_MS = REPUTATION_RULES.windowDays * 24 * BUCKET_MS;

export type DisableReason = "bounce_rate" | "complaint_rate";

/** An inbox's standing over the window, as the counter sees it. */
export interface ReputationFigures {
  window_days: number;
  sent: number;
  bounced: number;
  soft_bounced: number;
  complained: number;
  bounce_rate: number;
  complaint_rate: number;
  /** The rates at or above 2/3 of their threshold (whatever the number of sends). */
  warnings: DisableReason[];
  /** The counter's own memory of a disable it decided, until `enable()`. */
  disabled: { reason: DisableReason; at: number } | null;
}

/** One counted fact. `key` makes it idempotent: a key seen in the last 8 days is not counted again. */
export interface CounterSignal {
  metric: CounterMetric;
  n?: number;
  key?: string;
  /**
   * The recipient the fact is about. Facts with a subject count distinct subjects in the window,
   * not occurrences: one recipient is one send however many messages it got (a message to 50 seed
   * addresses mailed daily does not dilute the rates), and contributes at most one hard bounce
   * and one complaint, however many reports name it.
   */
  subject?: string;
}

export interface ApplyResult {
  /** How many of the signals were new (not seen before by key). */
  counted: number;
  figures: ReputationFigures;
  /**
   * Set for exactly one call: the one whose signals took the inbox over a threshold while the
   * counter did not already consider it disabled. The caller disables the inbox in D1.
   */
  disable: DisableReason | null;
  /**
   * The threshold the figures are above now (enough sends to judge), whether or not this call
   * decided the disable: with `figures.disabled` already set, the caller checks that D1 agrees
   * (a disable whose D1 write was lost, or a re-enable the counter never heard of).
   */
  over: DisableReason | null;
}

/**
 * Per-inbox counters in hourly buckets (SQLite storage), and the reputation decisions. This is
 * the single authority for an inbox's send, bounce and complaint counts: one object per inbox,
 * every method synchronous SQL (no await inside), so each call runs alone: concurrent inputs
 * neither double-count nor miss a threshold, and "disable" is answered to one caller only.
 */
export class InboxCounter extends DurableObject<unknown> {
  /**
   * Tables are created on first use, not in the constructor: merely addressing the object (a
   * reputation read for an inbox that never sent) must not leave persistent storage behind.
   */
  private tablesReady = false;
  private tables(): void {
    if (this.tablesReady) return;
    const ctx = this.ctx;
    ctx.storage.sql.exec(
      `CREATE TABLE IF NOT EXISTS counters (
         metric TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
         PRIMARY KEY (metric, bucket)
       ) WITHOUT ROWID`,
    );
    ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID",
    );
    ctx.storage.sql.exec("CREATE INDEX IF NOT EXISTS applied_at ON applied (at)");
    ctx.storage.sql.exec(
      `CREATE TABLE IF NOT EXISTS subjects (
         metric TEXT NOT NULL, subject TEXT NOT NULL, at INTEGER NOT NULL,
         PRIMARY KEY (metric, subject)
       ) WITHOUT ROWID`,
    );
    ctx.storage.sql.exec("CREATE INDEX IF NOT EXISTS subjects_at ON subjects (metric, at)");
    this.tablesReady = true;
  }

  /**
   * Drops buckets and idempotency keys older than the 8 days kept, at most once per hour bucket
   * (the hour it last ran is kept in KV), so an input pays for a range delete on the index once an hour.
   */
  private prune(now: number): void {
    this.tables();
    const bucket = Math.floor(now / BUCKET_MS);
    if (this.ctx.storage.kv.get<number>("pruned") === bucket) return;
    this.ctx.storage.sql.exec("DELETE FROM counters WHERE bucket < ?", Math.floor((now - KEEP_MS) / BUCKET_MS));
    this.ctx.storage.sql.exec("DELETE FROM applied WHERE at < ?", now - KEEP_MS);
    this.ctx.storage.sql.exec("DELETE FROM subjects WHERE at < ?", now - KEEP_MS);
    this.ctx.storage.kv.put("pruned", bucket);
  }

  /** Adds `n` to a metric in the current bucket (and prunes, once an hour). */
  record(metric: CounterMetric, n = 1, now: number = Date.now()): void {
    this.tables();
    const bucket = Math.floor(now / BUCKET_MS);
    this.ctx.storage.sql.exec(
      "INSERT INTO counters (metric, bucket, n) VALUES (?, ?, ?) ON CONFLICT (metric, bucket) DO UPDATE SET n = n + excluded.n",
      metric,
      bucket,
      n,
    );
    this.prune(now);
  }

  /** Sums of every metric over the last `windowMs`. */
  totals(windowMs: number, now: number = Date.now()): Record<string, number> {
    this.tables();
    const rows = this.ctx.storage.sql
      .exec<{ metric: string; total: number }>(
        "SELECT metric, SUM(n) AS total FROM counters WHERE bucket > ? GROUP BY metric",
        Math.floor((now - windowMs) / BUCKET_MS),
      )
      .toArray();
    const totals: Record<string, number> = Object.fromEntries(rows.map((r) => [r.metric, r.total]));
    // Distinct recipients last seen inside the window (a sliding window, exact to the millisecond).
    const distinct = this.ctx.storage.sql
      .exec<{ metric: string; total: number }>(
        "SELECT metric, COUNT(*) AS total FROM subjects WHERE at > ? GROUP BY metric",
        now - windowMs,
      )
      .toArray();
    for (const r of distinct) totals[r.metric] = (totals[r.metric] ?? 0) + r.total;
    return totals;
  }

  /**
   * Counts the signals (skipping keys already counted), then decides: with at least 20 sends in
   * the window and a rate above its threshold, the first call to see it gets `disable`, and the
   * object remembers it until `enable()`, so every later input is told nothing new.
   */
  apply(signals: CounterSignal[], now: number = Date.now(), accountId?: string): ApplyResult {
    this.tables();
    const sql = this.ctx.storage.sql;
    if (accountId && this.ctx.storage.kv.get("account") !== accountId) this.ctx.storage.kv.put("account", accountId);
    let counted = 0;
    for (const s of signals) {
      if (s.key) {
        const inserted = sql.exec("INSERT OR IGNORE INTO applied (key, at) VALUES (?, ?)", s.key, now).rowsWritten;
        if (inserted === 0) continue;
      }
      if (s.subject !== undefined) {
        // Already in the window: only its time moves (a send keeps the recipient in the window;
        // a second bounce or complaint of the same recipient adds nothing).
        const existing = sql
          .exec<{ at: number }>("SELECT at FROM subjects WHERE metric = ? AND subject = ?", s.metric, s.subject)
          .toArray()[0];
        sql.exec(
          "INSERT INTO subjects (metric, subject, at) VALUES (?, ?, ?) ON CONFLICT (metric, subject) DO UPDATE SET at = MAX(at, excluded.at)",
          s.metric,
          s.subject,
          now,
        );
        if (existing && existing.at > now - WINDOW_MS) continue;
        counted++;
        continue;
      }
      this.record(s.metric, s.n ?? 1, now);
      counted++;
    }
    this.prune(now);
    const figures = this.figures(now);
    let disable: DisableReason | null = null;
    const over = overThreshold(figures);
    if (!figures.disabled) {
      disable = over;
      if (disable) {
        this.ctx.storage.kv.put("disabled", { reason: disable, at: now });
        figures.disabled = { reason: disable, at: now };
      }
    }
    return { counted, figures, disable, over };
  }

  /**
   * The inbox's figures over the window (read only). With `accountId`, null unless that account
   * is the one whose inputs were counted here (warning headers never describe another's inbox).
   */
  snapshot(now: number = Date.now(), accountId?: string): ReputationFigures | null {
    if (accountId && this.ctx.storage.kv.get("account") !== accountId) return null;
    return this.figures(now);
  }

  private figures(now: number): ReputationFigures {
    const t = this.totals(WINDOW_MS, now);
    const sent = t.sent ?? 0;
    const bounced = t.bounced_hard ?? 0;
    const complained = t.complained ?? 0;
    const warnings: DisableReason[] = [];
    // Integer comparisons: 3 complaints in 1000 sends is exactly 0.3 %, never a float above it.
    if (bounced > 0 && bounced * 15 >= sent) warnings.push("bounce_rate"); // >= 2/3 of 10 % = 1/15
    if (complained > 0 && complained * 500 >= sent) warnings.push("complaint_rate"); // >= 2/3 of 0.3 % = 1/500
    return {
      window_days: REPUTATION_RULES.windowDays,
      sent,
      bounced,
      soft_bounced: t.bounced_soft ?? 0,
      complained,
      bounce_rate: rate(bounced, sent),
      complaint_rate: rate(complained, sent),
      warnings,
      disabled: this.ctx.storage.kv.get<{ reason: DisableReason; at: number }>("disabled") ?? null,
    };
  }

  /** Forgets the disable (the inbox was re-enabled): the next input over a threshold disables again. */
  enable(now: number = Date.now()): ReputationFigures {
    this.ctx.storage.kv.delete("disabled");
    return this.figures(now);
  }

  /** Takes back a disable whose D1 write failed, only if it is still the one decided at `at`. */
  revertDisable(at: number): void {
    const current = this.ctx.storage.kv.get<{ at: number }>("disabled");
    if (current?.at === at) this.ctx.storage.kv.delete("disabled");
  }
}

/** Which threshold the figures are above, once the window holds enough sends to judge. */
export function overThreshold(f: ReputationFigures): DisableReason | null {
  if (f.sent < REPUTATION_RULES.minSends) return null;
  if (f.complained * 1000 > f.sent * 3) return "complaint_rate"; // > 0.3 %
  if (f.bounced * 10 > f.sent) return "bounce_rate"; // > 10 %
  return null;
}

/** A rate in [0, 1]; reports of mail sent before the window can make the count exceed the sends. */
function rate(count: number, sent: number): number {
  if (sent === 0) return count > 0 ? 1 : 0;
  return Math.min(1, count / sent);
}
