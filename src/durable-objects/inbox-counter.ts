import { DurableObject } from "cloudflare:workers";
import type { Bindings } from "../env";

const BUCKET_MS = 60 * 60 * 1000;
const KEEP_MS = 8 * 24 * BUCKET_MS;

export type CounterMetric = "sent" | "bounced_hard" | "bounced_soft" | "complained" | "received";

/**
 * Per-inbox counters in hourly buckets (SQLite storage). This is the single authority for an
 * inbox's send, bounce and complaint counts: one object per inbox, every update a synchronous
 * UPSERT, so concurrent events neither double-count nor get lost. The reputation feature adds
 * its threshold decisions here.
 */
export class InboxCounter extends DurableObject<Bindings> {
  constructor(ctx: DurableObjectState, env: Bindings) {
    super(ctx, env);
    ctx.storage.sql.exec(
      `CREATE TABLE IF NOT EXISTS counters (
         metric TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
         PRIMARY KEY (metric, bucket)
       ) WITHOUT ROWID`,
    );
  }

  /** Adds `n` to a metric in the current bucket and prunes buckets older than the window kept. */
  record(metric: CounterMetric, n = 1, now: number = Date.now()): void {
    const bucket = Math.floor(now / BUCKET_MS);
    this.ctx.storage.sql.exec(
      "INSERT INTO counters (metric, bucket, n) VALUES (?, ?, ?) ON CONFLICT (metric, bucket) DO UPDATE SET n = n + excluded.n",
      metric,
      bucket,
      n,
    );
    this.ctx.storage.sql.exec("DELETE FROM counters WHERE bucket < ?", Math.floor((now - KEEP_MS) / BUCKET_MS));
  }

  /** Sums of every metric over the last `windowMs`. */
  totals(windowMs: number, now: number = Date.now()): Record<string, number> {
    const rows = this.ctx.storage.sql
      .exec<{ metric: string; total: number }>(
        "SELECT metric, SUM(n) AS total FROM counters WHERE bucket > ? GROUP BY metric",
        Math.floor((now - windowMs) / BUCKET_MS),
      )
      .toArray();
    return Object.fromEntries(rows.map((r) => [r.metric, r.total]));
  }
}

/** The one client that names the InboxCounter namespace. */
export function inboxCounter(env: Bindings, inboxId: string) {
  return env.INBOX_COUNTER.getByName(inboxId);
}
