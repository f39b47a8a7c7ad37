import { waitUntil } from "cloudflare:workers";
import { and, eq, isNull, lt, or } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { type EventRow, events, type WebhookEndpointRow, webhookDispatches, webhookEndpoints } from "../../db/schema";
import { inList } from "../../db/sql";
import type { Bindings } from "../../env";
import { type BaseContext, systemContext } from "../../lib/context";
import { newId } from "../../lib/ids";
import type { WebhookJob } from "../../lib/jobs";
import { log } from "../../lib/log";
import { attemptDispatch } from "./attempt";

/**
 * Fan-out: which endpoints get which events, and the queue messages that carry dispatch ids
 * (never payloads: the queue's limit is 128 KB and a received mail's event can be larger).
 */

/** Whether an endpoint wants this event (type filter, inbox filter). Test events go only where they are sent. */
export function endpointMatches(endpoint: WebhookEndpointRow, event: Pick<EventRow, "type" | "inboxId">): boolean {
  if (event.type === "webhook.test") return false;
  if (!endpoint.enabled || endpoint.deletedAt !== null) return false;
  if (endpoint.inboxId !== null && endpoint.inboxId !== event.inboxId) return false;
  return endpoint.events.includes("*") || endpoint.events.includes(event.type);
}

/** A pending dispatch row of one event to one endpoint. */
export function newDispatch(
  input: {
    accountId: string;
    endpointId: string;
    eventId: string;
    kind: "event" | "test" | "replay";
    targetUrl?: string | null;
  },
  now: number,
) {
  return {
    id: newId("dsp", now),
    accountId: input.accountId,
    endpointId: input.endpointId,
    eventId: input.eventId,
    kind: input.kind,
    targetUrl: input.targetUrl ?? null,
    status: "pending" as const,
    attempts: 0,
    nextAttemptAt: now,
    leaseUntil: null,
    lastStatusCode: null,
    lastError: null,
    dedupeKey: input.kind === "event" ? `${input.endpointId}:${input.eventId}` : null,
    createdAt: now,
    updatedAt: now,
    completedAt: null,
  };
}

/** Puts dispatch ids on the webhook queue (in chunks of the queue's batch limit). */
export async function enqueueDispatches(env: Bindings, dispatchIds: string[], delaySeconds = 0): Promise<void> {
  for (let i = 0; i < dispatchIds.length; i += 100) {
    const chunk = dispatchIds.slice(i, i + 100);
    await env.WEBHOOK_QUEUE.sendBatch(
      chunk.map((id) => ({ body: { v: 1, dispatch_id: id } satisfies WebhookJob, delaySeconds })),
    );
  }
}

/** First attempts made right after the commit, at most this many at once per fan-out (the rest queue). */
const INLINE_ATTEMPTS_MAX = 20;

/**
 * Creates one dispatch per (event, matching endpoint), hands every not-yet-attempted dispatch of
 * these events to delivery, then marks the events dispatched. Each step is idempotent (the
 * dedupe key, the attempts = 0 check, the consumer's status check), so running it twice, or
 * again from the sweep after a crash at any point, sends nothing twice.
 *
 * `inline` (publishEvents, right after a commit): the first attempts start at once in the
 * background of the current invocation instead of after the queue's batch window, and the queue
 * carries only retries. The events are marked dispatched only after those attempts have ended
 * (or been queued), so a Worker that dies in between leaves them to the sweep, which fans them
 * out again through the queue. The sweep itself always queues.
 */
export async function fanOut(
  base: BaseContext,
  eventIds: string[],
  mode: "queue" | "inline" = "queue",
  /** These events' rows not yet dispatched, when the caller has just read them (publishEvents). */
  known?: Pick<EventRow, "id" | "accountId" | "type" | "inboxId">[],
): Promise<void> {
  const { db, env } = base;
  const now = base.now();
  const rows =
    known ??
    (await db
      .select({ id: events.id, accountId: events.accountId, type: events.type, inboxId: events.inboxId })
      .from(events)
      .where(and(inList(events.id, eventIds), isNull(events.dispatchedAt)))
      .all());
  if (rows.length === 0) return;
  const accountIds = [...new Set(rows.map((r) => r.accountId))];
  const endpoints = await db
    .select()
    .from(webhookEndpoints)
    .where(
      and(
        inList(webhookEndpoints.accountId, accountIds),
        eq(webhookEndpoints.enabled, true),
        isNull(webhookEndpoints.deletedAt),
      ),
    )
    .all();
  const inserts: BatchItem<"sqlite">[] = [];
  for (const event of rows) {
    for (const endpoint of endpoints) {
      if (endpoint.accountId !== event.accountId || !endpointMatches(endpoint, event)) continue;
      const row = newDispatch(
        { accountId: event.accountId, endpointId: endpoint.id, eventId: event.id, kind: "event" },
        now,
      );
      inserts.push(db.insert(webhookDispatches).values(row).onConflictDoNothing());
    }
  }
  if (inserts.length > 0) await db.batch(inserts as [BatchItem<"sqlite">, ...BatchItem<"sqlite">[]]);
  const ids = rows.map((r) => r.id);
  const pending = await db
    .select({ id: webhookDispatches.id })
    .from(webhookDispatches)
    .where(
      and(
        inList(webhookDispatches.eventId, ids),
        eq(webhookDispatches.status, "pending"),
        eq(webhookDispatches.attempts, 0),
      ),
    )
    .all();
  const markDispatched = async () => {
    await db
      .update(events)
      .set({ dispatchedAt: now })
      .where(and(inList(events.id, ids), isNull(events.dispatchedAt)))
      .run();
  };
  if (mode === "inline" && pending.length > 0) {
    const inline = pending.slice(0, INLINE_ATTEMPTS_MAX).map((p) => p.id);
    const queued = pending.slice(INLINE_ATTEMPTS_MAX).map((p) => p.id);
    await enqueueDispatches(env, queued);
    waitUntil(
      firstAttempts(base, inline)
        .then(markDispatched)
        .catch((err) => log.error("first webhook attempts failed; the sweep retries", { error: String(err) })),
    );
    return;
  }
  await enqueueDispatches(
    env,
    pending.map((p) => p.id),
  );
  await markDispatched();
}

/**
 * How long the inline first attempts may take in all. waitUntil work is cut about 30 s after the
 * response; each attempt's own timeout (webhookInlineTimeoutMs) is shorter still, and this bounds
 * what surrounds it (the budget check, D1 writes, a slow DNS answer).
 */
const INLINE_DEADLINE_MS = 20_000;

/**
 * Attempts each dispatch now; what is not done goes on the queue with its retry delay. An attempt
 * still running at the deadline is queued as it stands: its lease (held until the attempt's
 * timeout + 30 s) keeps the queued copy from sending while it may still be in flight, and once it
 * ends the copy finds the dispatch finished or due, so nothing is delivered twice.
 */
async function firstAttempts(base: BaseContext, dispatchIds: string[]): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<"deadline">((resolve) => {
    timer = setTimeout(() => resolve("deadline"), INLINE_DEADLINE_MS);
  });
  await Promise.all(
    dispatchIds.map(async (id) => {
      let delaySeconds = 0;
      try {
        const outcome = await Promise.race([attemptDispatch(base, id, { inline: true }), deadline]);
        if (outcome === "deadline") {
          log.warn("first webhook attempt past the inline deadline; queued", { dispatch_id: id });
        } else if (outcome.done) {
          return;
        } else {
          delaySeconds = outcome.retryInSeconds;
        }
      } catch (err) {
        log.warn("first webhook attempt failed; queued", { dispatch_id: id, error: String(err) });
      }
      await enqueueDispatches(base.env, [id], Math.min(delaySeconds, MAX_QUEUE_DELAY_SECONDS));
    }),
  );
  clearTimeout(timer);
}

/** Queues' longest message delay (12 h). */
const MAX_QUEUE_DELAY_SECONDS = 43_200;

/** Events older than this without a fan-out were missed by their producer (a crash, a queue outage). */
const UNDISPATCHED_GRACE_MS = 60_000;
/** A pending dispatch this far past its due time lost its queue message (dead-lettered, dropped). */
const STUCK_DISPATCH_MS = 10 * 60_000;
/** Accounts, and missed events of each, one sweep run fans out (bounded work per cron tick). */
const SWEEP_ACCOUNTS = 50;
const SWEEP_EVENTS_PER_ACCOUNT = 50;

/**
 * The cron sweep that makes delivery survive crashes: fans out events whose producer never
 * did, and re-enqueues pending dispatches whose queue message was lost. Duplicates it may
 * create are harmless (the consumer leases each dispatch and skips finished ones).
 */
export async function sweepWebhooks(base: BaseContext): Promise<{ events: number; dispatches: number }> {
  const { db, env } = base;
  const now = base.now();
  const overdue = and(isNull(events.dispatchedAt), lt(events.createdAt, now - UNDISPATCHED_GRACE_MS));
  // Account by account, each in its own try: one account whose fan-out keeps failing (or whose
  // backlog is large) neither aborts the sweep nor takes the places of other tenants' events.
  const owners = await db
    .selectDistinct({ accountId: events.accountId })
    .from(events)
    .where(overdue)
    .limit(SWEEP_ACCOUNTS)
    .all();
  let swept = 0;
  for (const { accountId } of owners) {
    const missed = await db
      .select({ id: events.id })
      .from(events)
      .where(and(overdue, eq(events.accountId, accountId)))
      .orderBy(events.id)
      .limit(SWEEP_EVENTS_PER_ACCOUNT)
      .all();
    try {
      // Written with the real clock: `now` only decides what counts as missed or stuck.
      await fanOut(
        systemContext(env),
        missed.map((e) => e.id),
      );
      swept += missed.length;
    } catch (err) {
      log.error("webhook sweep: fan-out failed for one account; continuing with the others", {
        account_id: accountId,
        events: missed.length,
        error: String(err),
      });
    }
  }
  const stuck = await db
    .select({ id: webhookDispatches.id })
    .from(webhookDispatches)
    .where(
      and(
        eq(webhookDispatches.status, "pending"),
        lt(webhookDispatches.nextAttemptAt, now - STUCK_DISPATCH_MS),
        or(isNull(webhookDispatches.leaseUntil), lt(webhookDispatches.leaseUntil, now)),
      ),
    )
    .limit(1000)
    .all();
  await enqueueDispatches(
    env,
    stuck.map((d) => d.id),
  );
  if (stuck.length > 0) {
    // Their due time moves to now, so the next sweep leaves them to the consumer for a while.
    await db
      .update(webhookDispatches)
      .set({ nextAttemptAt: Date.now(), updatedAt: Date.now() })
      .where(
        inList(
          webhookDispatches.id,
          stuck.map((d) => d.id),
        ),
      )
      .run();
  }
  return { events: swept, dispatches: stuck.length };
}
