import { and, eq, isNull, lt, or } from "drizzle-orm";
import { config, partialConfig } from "../../config";
import { runBatch, type Statement } from "../../db/compiled";
import { accounts, events, webhookDeliveries, webhookDispatches, webhookEndpoints } from "../../db/schema";
import { rateLimiter } from "../../durable-objects/rate-limiter.client";
import type { Bindings } from "../../env";
import { type BaseContext, forAccount } from "../../lib/context";
import { dnsResolver } from "../../lib/dns";
import { newId } from "../../lib/ids";
import { tierLimits } from "../../lib/tiers";
import { commitWithAudit } from "../audit/audit.service";
import { toEventWire } from "../events/event-wire";
import { openSecret, signatureHeaders } from "./signing";
import { allowLocalWebhooks, checkWebhookUrl } from "./url-guard";

export { DEFAULT_RETRY_SCHEDULE_SECONDS, DEFAULT_TIMEOUT_MS } from "../../config";
/** The longest a 429's Retry-After may push an attempt out (the schedule's own longest gap). */
export const MAX_RETRY_AFTER_SECONDS = 6 * 3600;
/** Kept of a receiver's error text, enough to diagnose without storing their pages. */
const ERROR_TEXT_LIMIT = 300;

/** The retry schedule in seconds, overridable for tests and local runs (WEBHOOK_RETRY_SCHEDULE). */
export function retrySchedule(env: Pick<Bindings, "WEBHOOK_RETRY_SCHEDULE">): number[] {
  return partialConfig(env).webhookRetryScheduleSeconds;
}

function timeoutMs(env: Bindings): number {
  return config(env).webhookTimeoutMs;
}

/** `Retry-After` as seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now: number): number | null {
  if (!value) return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

/** One slot of the account's webhook delivery budget (tier `webhook_deliveries_per_minute`). */
async function deliveryBudget(base: BaseContext, accountId: string, now: number) {
  const account = await base.db.select({ tier: accounts.tier }).from(accounts).where(eq(accounts.id, accountId)).get();
  const limit = tierLimits(config(base.env).tiers, account?.tier ?? "sandbox").webhook_deliveries_per_minute;
  return rateLimiter(base.env, `webhooks:${accountId}`).hit({ limit, windowMs: 60_000 }, now);
}

/** What the queue should do with the message that carried this dispatch. */
export type DispatchOutcome = { done: true } | { done: false; retryInSeconds: number };

interface AttemptResult {
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  retryAfterSeconds: number | null;
}

/**
 * Makes the next attempt of one dispatch, if it is due and nobody else is making it: leases
 * the dispatch, sends the signed event, records the attempt and the new state in one batch.
 * A finished dispatch is never sent again, so a redelivered queue message is harmless.
 */
export async function attemptDispatch(
  base: BaseContext,
  dispatchId: string,
  opts: { inline?: boolean } = {},
): Promise<DispatchOutcome> {
  const { db, env } = base;
  const now = base.now();
  const dispatch = await db.select().from(webhookDispatches).where(eq(webhookDispatches.id, dispatchId)).get();
  if (dispatch?.status !== "pending") return { done: true };
  // An early copy of the message (a duplicate from the sweep or a redelivery): come back when due.
  if (dispatch.nextAttemptAt > now + 1000) {
    return { done: false, retryInSeconds: Math.ceil((dispatch.nextAttemptAt - now) / 1000) };
  }
  // Per-account budget of attempts per minute: over it, the dispatch waits without using up an
  // attempt, so one account's fan-out cannot flood a target or crowd out other tenants' queue.
  const budget = await deliveryBudget(base, dispatch.accountId, now);
  if (!budget.allowed) return { done: false, retryInSeconds: Math.max(1, Math.ceil(budget.retryAfterMs / 1000)) };
  // Inline (waitUntil after a response): a shorter timeout, so the attempt ends well inside the
  // time the runtime grants; a receiver slower than that gets the retry from the queue.
  const limitMs = opts.inline ? config(env).webhookInlineTimeoutMs : timeoutMs(env);
  const leaseUntil = now + limitMs + 30_000;
  const claimed = await db
    .update(webhookDispatches)
    .set({ leaseUntil, attempts: dispatch.attempts + 1, updatedAt: now })
    .where(
      and(
        eq(webhookDispatches.id, dispatchId),
        eq(webhookDispatches.status, "pending"),
        eq(webhookDispatches.attempts, dispatch.attempts),
        or(isNull(webhookDispatches.leaseUntil), lt(webhookDispatches.leaseUntil, now)),
      ),
    )
    .returning({ attempts: webhookDispatches.attempts })
    .get();
  if (!claimed) {
    // Another consumer is mid-attempt (or just finished): look again once its lease is over.
    return { done: false, retryInSeconds: Math.ceil((leaseUntil - now) / 1000) };
  }
  const attempt = claimed.attempts;

  const [endpoint, event] = await Promise.all([
    db
      .select()
      .from(webhookEndpoints)
      .where(and(eq(webhookEndpoints.id, dispatch.endpointId), eq(webhookEndpoints.accountId, dispatch.accountId)))
      .get(),
    db
      .select()
      .from(events)
      .where(and(eq(events.id, dispatch.eventId), eq(events.accountId, dispatch.accountId)))
      .get(),
  ]);
  // Deleted endpoints get nothing; disabled ones only what was sent to them on purpose (a test, a replay).
  const gone = !endpoint || endpoint.deletedAt !== null || !event;
  if (gone || (dispatch.kind === "event" && !endpoint.enabled)) {
    await db
      .update(webhookDispatches)
      .set({
        status: "cancelled",
        attempts: dispatch.attempts,
        leaseUntil: null,
        lastError: gone ? "endpoint or event deleted" : "endpoint disabled",
        completedAt: now,
        updatedAt: now,
      })
      .where(eq(webhookDispatches.id, dispatchId))
      .run();
    return { done: true };
  }

  const url = dispatch.targetUrl ?? endpoint.url;
  const result = await send(env, url, event, endpoint, limitMs);
  const schedule = retrySchedule(env);
  const succeeded = result.statusCode !== null && result.statusCode >= 200 && result.statusCode < 300;
  const isGone = result.statusCode === 410;
  const final = succeeded || isGone || attempt >= schedule.length;
  const delaySeconds = final
    ? null
    : result.statusCode === 429 && result.retryAfterSeconds !== null
      ? Math.min(Math.max(result.retryAfterSeconds, 1), MAX_RETRY_AFTER_SECONDS)
      : (schedule[attempt] ?? 0);
  const finishedAt = Date.now();
  const nextAttemptAt = delaySeconds === null ? null : finishedAt + delaySeconds * 1000;
  const outcome = succeeded ? "succeeded" : final ? "failed" : "retrying";

  const statements: Statement[] = [
    db
      .insert(webhookDeliveries)
      .values({
        id: newId("dlv", finishedAt),
        accountId: dispatch.accountId,
        endpointId: endpoint.id,
        dispatchId,
        eventId: event.id,
        eventType: event.type,
        attempt,
        url,
        statusCode: result.statusCode,
        error: result.error,
        durationMs: result.durationMs,
        outcome,
        nextAttemptAt,
        createdAt: finishedAt,
      })
      .onConflictDoNothing(),
    db
      .update(webhookDispatches)
      .set({
        status: outcome === "retrying" ? "pending" : outcome,
        leaseUntil: null,
        nextAttemptAt: nextAttemptAt ?? finishedAt,
        lastStatusCode: result.statusCode,
        lastError: result.error,
        completedAt: final ? finishedAt : null,
        updatedAt: finishedAt,
      })
      .where(eq(webhookDispatches.id, dispatchId)),
  ];
  // 410 Gone: the receiver says this endpoint no longer exists. Stop sending to it (audited);
  // a replay's target_url answering 410 says nothing about the endpoint, so it is left alone.
  if (isGone && dispatch.targetUrl === null && endpoint.enabled) {
    statements.push(
      db
        .update(webhookEndpoints)
        .set({ enabled: false, disabledReason: "gone", updatedAt: finishedAt })
        .where(and(eq(webhookEndpoints.id, endpoint.id), eq(webhookEndpoints.accountId, endpoint.accountId))),
    );
    const ctx = forAccount({ ...base, now: () => finishedAt }, dispatch.accountId);
    await commitWithAudit(ctx, statements, [
      {
        action: "webhook.disabled",
        target: { type: "webhook", id: endpoint.id },
        inboxId: endpoint.inboxId,
        metadata: { reason: "gone", status_code: 410, url, event_id: event.id },
      },
    ]);
  } else {
    await runBatch(db, statements);
  }
  return delaySeconds === null ? { done: true } : { done: false, retryInSeconds: delaySeconds };
}

/** One signed POST of the event, with the SSRF check repeated (DNS may have changed) and redirects refused. */
async function send(
  env: Bindings,
  url: string,
  event: typeof events.$inferSelect,
  endpoint: typeof webhookEndpoints.$inferSelect,
  limitMs: number,
): Promise<AttemptResult> {
  const started = Date.now();
  const elapsed = () => Date.now() - started;
  // Resolved again now, bypassing the DNS cache: a host that answered with a public address
  // when it was saved (or minutes ago) may answer with a private one at delivery (rebinding).
  const verdict = await checkWebhookUrl(url, {
    allowLocal: allowLocalWebhooks(env),
    resolver: dnsResolver(),
    fresh: true,
  });
  if (!verdict.ok) {
    return {
      statusCode: null,
      error: `url refused: ${verdict.reason}`,
      durationMs: elapsed(),
      retryAfterSeconds: null,
    };
  }
  const body = new TextEncoder().encode(JSON.stringify(toEventWire(event)));
  const secrets = [await openSecret(env, endpoint.secret)];
  if (endpoint.previousSecret && (endpoint.previousSecretExpiresAt ?? 0) > started) {
    secrets.push(await openSecret(env, endpoint.previousSecret));
  }
  const headers = await signatureHeaders({
    eventId: event.id,
    timestampSeconds: Math.floor(started / 1000),
    body,
    secrets,
  });
  try {
    const res = await fetch(verdict.url.toString(), {
      method: "POST",
      headers: {
        ...headers,
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "mailbot-webhooks/1",
      },
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(limitMs),
    });
    // Read at most what is kept of the body (to explain a failure), then cancel: a receiver that
    // streams for the whole timeout cannot make this hold more than a few bytes.
    const text = await readPrefix(res, ERROR_TEXT_LIMIT);
    const durationMs = elapsed();
    if (res.status >= 200 && res.status < 300) {
      return { statusCode: res.status, error: null, durationMs, retryAfterSeconds: null };
    }
    if (res.status >= 300 && res.status < 400) {
      const location = res.headers.get("location") ?? "(none)";
      return {
        statusCode: res.status,
        error: `redirect refused (Location: ${location.slice(0, 200)}); webhook URLs must answer directly`,
        durationMs,
        retryAfterSeconds: null,
      };
    }
    return {
      statusCode: res.status,
      error: `HTTP ${res.status}${text ? `: ${text}` : ""}`,
      durationMs,
      retryAfterSeconds: res.status === 429 ? parseRetryAfter(res.headers.get("retry-after"), Date.now()) : null,
    };
  } catch (err) {
    const durationMs = elapsed();
    const name = (err as Error)?.name;
    const error =
      name === "TimeoutError" || name === "AbortError"
        ? `timed out after ${limitMs} ms`
        : `request failed: ${String((err as Error)?.message ?? err).slice(0, ERROR_TEXT_LIMIT)}`;
    return { statusCode: null, error, durationMs, retryAfterSeconds: null };
  }
}

/** The first `limit` bytes of a response body as text; the rest is never read (the stream is cancelled). */
export async function readPrefix(res: Response, limit: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      const part = value.byteLength > limit - size ? value.subarray(0, limit - size) : value;
      chunks.push(part);
      size += part.byteLength;
    }
  } catch {
    // A body that fails mid-read explains no more than what arrived.
  } finally {
    reader.cancel().catch(() => undefined);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(bytes);
}
