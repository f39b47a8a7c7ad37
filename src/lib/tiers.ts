import { z } from "zod";

/** Per-tier limits. Operators may override any of them with the TIER_LIMITS var (JSON). */
export const TierLimits = z.object({
  requests_per_minute: z.number().int().positive(),
  burst: z.number().int().positive(),
  sends_per_inbox_per_day: z.number().int().positive(),
  max_inboxes: z.number().int().positive(),
  /** Webhook endpoints per account (API.md: sandbox 10; 403 `webhook_limit_reached`). */
  max_webhooks: z.number().int().positive(),
  /**
   * Webhook delivery attempts per account per minute: one inbound mail fans out to every
   * endpoint, so this bounds what an account can make Cloudflare's egress send anywhere.
   * Deliveries over it wait (they are not dropped and do not use up an attempt).
   */
  webhook_deliveries_per_minute: z.number().int().positive(),
  /** Open event streams (SSE + WebSocket) per API key; one more is refused with 429. */
  stream_connections: z.number().int().positive(),
  /**
   * Open event streams per account, all keys together: keys are unlimited, so the per-key cap
   * alone would let one account pile any number of sockets onto its one hub.
   */
  stream_connections_per_account: z.number().int().positive(),
});
export type TierLimits = z.infer<typeof TierLimits>;

export const DEFAULT_TIERS: Record<string, TierLimits> = {
  sandbox: {
    requests_per_minute: 60,
    burst: 10,
    sends_per_inbox_per_day: 100,
    max_inboxes: 10,
    max_webhooks: 10,
    webhook_deliveries_per_minute: 300,
    stream_connections: 10,
    stream_connections_per_account: 25,
  },
  standard: {
    requests_per_minute: 600,
    burst: 50,
    sends_per_inbox_per_day: 5_000,
    max_inboxes: 1_000,
    max_webhooks: 50,
    webhook_deliveries_per_minute: 3_000,
    stream_connections: 100,
    stream_connections_per_account: 250,
  },
  scale: {
    requests_per_minute: 3_000,
    burst: 200,
    sends_per_inbox_per_day: 50_000,
    max_inboxes: 100_000,
    max_webhooks: 200,
    webhook_deliveries_per_minute: 20_000,
    stream_connections: 1_000,
    stream_connections_per_account: 2_500,
  },
};

/** New accounts may send this many messages per rolling 24 h for their first 7 days. */
export const NEW_ACCOUNT_SEND_LIMIT = 10;
export const NEW_ACCOUNT_PERIOD_MS = 7 * 24 * 60 * 60 * 1000;

const cache = new Map<string, Record<string, TierLimits>>();

/** The effective tier table: defaults merged with the TIER_LIMITS override. */
export function tierTable(override: string | undefined): Record<string, TierLimits> {
  const raw = override?.trim() ?? "";
  const hit = cache.get(raw);
  if (hit) return hit;
  const table: Record<string, TierLimits> = { ...DEFAULT_TIERS };
  if (raw) {
    let parsed: Record<string, Partial<TierLimits>>;
    try {
      parsed = z.record(z.string(), TierLimits.partial()).parse(JSON.parse(raw));
    } catch (err) {
      // An operator's mistake, not the caller's: surfaces as a 500 and in the logs.
      throw new Error(`TIER_LIMITS is not valid: ${(err as Error).message}`);
    }
    for (const [name, limits] of Object.entries(parsed)) {
      table[name] = TierLimits.parse({ ...(table[name] ?? DEFAULT_TIERS.sandbox), ...limits });
    }
  }
  cache.set(raw, table);
  return table;
}

/** Limits of one tier (from a tier table, e.g. config's, or a TIER_LIMITS text); unknown tiers fall back to sandbox. */
export function tierLimits(tiers: Record<string, TierLimits> | string | undefined, tier: string): TierLimits {
  const table = typeof tiers === "object" ? tiers : tierTable(tiers);
  return table[tier] ?? (table.sandbox as TierLimits);
}
