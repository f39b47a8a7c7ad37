import type { z } from "@hono/zod-openapi";
import { and, count, desc, eq, isNull, lt, type SQL, sql } from "drizzle-orm";
import { config } from "../../config";
import { runBatch, type Statement } from "../../db/compiled";
import { isLimitReached } from "../../db/errors";
import {
  accounts,
  type WebhookDeliveryRow,
  type WebhookEndpointRow,
  webhookDeliveries,
  webhookDispatches,
  webhookEndpoints,
} from "../../db/schema";
import { abortIfOver, inList } from "../../db/sql";
import type { ServiceContext } from "../../lib/context";
import { dnsResolver } from "../../lib/dns";
import { Forbidden, NotFound, ValidationFailed } from "../../lib/errors";
import { newId } from "../../lib/ids";
import type { Page } from "../../lib/pagination";
import { tierLimits } from "../../lib/tiers";
import { DAY_MS, iso } from "../../lib/time";
import { commitWithAudit } from "../audit/audit.service";
import { eventStatement, getEvent, publishEvents } from "../events/events.service";
import { getInbox } from "../inboxes/inboxes.service";
import { endpointMatches, enqueueDispatches, newDispatch } from "./dispatch";
import { newSecret, sealSecret } from "./signing";
import { allowLocalWebhooks, checkWebhookUrl } from "./url-guard";
import type {
  CreateWebhookInput,
  PatchWebhookInput,
  WebhookAttemptWire,
  WebhookTestWire,
  WebhookWire,
} from "./webhooks.schemas";

/** How long the previous secret keeps signing after a rotation. */
export const ROTATION_OVERLAP_MS = DAY_MS;

/** The deployment's SSRF verdict on a URL (422 on the `url` field, or on `field`). */
export async function assertWebhookUrl(ctx: ServiceContext, url: string, field = "url"): Promise<string> {
  const verdict = await checkWebhookUrl(url, { allowLocal: allowLocalWebhooks(ctx.env), resolver: dnsResolver() });
  if (!verdict.ok) {
    throw new ValidationFailed(
      [{ path: field, message: verdict.reason }],
      `The webhook URL was refused: ${verdict.reason}`,
    );
  }
  return url.trim();
}

/**
 * A restricted key only manages endpoints of its inboxes, and cannot create one that would
 * receive other inboxes' events. The inbox must be the caller's (422 on the field otherwise).
 */
async function checkInboxFilter(ctx: ServiceContext, inboxId: string | null): Promise<void> {
  if (inboxId === null) {
    if (ctx.inboxIds) {
      throw new Forbidden("insufficient_scope", "A key restricted to inboxes must set inbox_id on its webhooks.");
    }
    return;
  }
  try {
    await getInbox(ctx, inboxId);
  } catch (err) {
    if (err instanceof NotFound) throw new ValidationFailed([{ path: "inbox_id", message: "No such inbox." }]);
    throw err;
  }
}

function scoped(ctx: ServiceContext, ...extra: SQL[]): SQL | undefined {
  const where = [eq(webhookEndpoints.accountId, ctx.accountId), isNull(webhookEndpoints.deletedAt), ...extra];
  if (ctx.inboxIds) where.push(inList(webhookEndpoints.inboxId, ctx.inboxIds));
  return and(...where);
}

/** The `webhook.test` event, its dispatch to one endpoint, for the caller's batch. */
function testStatements(ctx: ServiceContext, endpoint: { id: string; url: string }, reason: "created" | "requested") {
  const event = eventStatement(
    ctx,
    "webhook.test",
    {},
    {
      webhook_id: endpoint.id,
      url: endpoint.url,
      reason,
      message: "This is a test event from mailbot. Verify its signature, then answer 2xx.",
    },
    { ownDispatches: true },
  );
  const dispatch = ctx.db
    .insert(webhookDispatches)
    .values(
      newDispatch({ accountId: ctx.accountId, endpointId: endpoint.id, eventId: event.id, kind: "test" }, ctx.now()),
    );
  return { eventId: event.id, statements: [event.statement, dispatch] as Statement[] };
}

/** Creates an endpoint and sends it a `webhook.test` event; the secret is returned only here. */
export async function createWebhook(
  ctx: ServiceContext,
  input: z.infer<typeof CreateWebhookInput>,
): Promise<{ row: WebhookEndpointRow; secret: string }> {
  const inboxId = input.inbox_id ?? null;
  await checkInboxFilter(ctx, inboxId);
  // Every endpoint turns each event into one more signed request: capped per tier, so an
  // account cannot point thousands of endpoints at a victim. Deleted endpoints do not count.
  const account = await ctx.db
    .select({ tier: accounts.tier })
    .from(accounts)
    .where(eq(accounts.id, ctx.accountId))
    .get();
  const tier = account?.tier ?? "sandbox";
  const max = tierLimits(config(ctx.env).tiers, tier).max_webhooks;
  const limitReached = () =>
    new Forbidden("webhook_limit_reached", `The ${tier} tier allows ${max} webhook endpoints.`, { max_webhooks: max });
  const live = and(eq(webhookEndpoints.accountId, ctx.accountId), isNull(webhookEndpoints.deletedAt));
  const existing = await ctx.db.select({ n: count() }).from(webhookEndpoints).where(live).get();
  if ((existing?.n ?? 0) >= max) throw limitReached();
  const url = await assertWebhookUrl(ctx, input.url);
  const secret = newSecret();
  const now = ctx.now();
  const row: WebhookEndpointRow = {
    id: newId("whk", now),
    accountId: ctx.accountId,
    url,
    events: input.events ?? ["*"],
    inboxId,
    description: input.description ?? null,
    enabled: true,
    disabledReason: null,
    secret: await sealSecret(ctx.env, secret),
    previousSecret: null,
    previousSecretExpiresAt: null,
    createdAt: now,
    updatedAt: now,
    deletedAt: null,
  };
  const test = testStatements(ctx, row, "created");
  const guard = abortIfOver(
    ctx.db,
    "webhook_endpoints",
    sql`SELECT count(*) FROM ${webhookEndpoints} WHERE ${live}`,
    max,
  );
  try {
    await commitWithAudit(
      ctx,
      [ctx.db.insert(webhookEndpoints).values(row), guard, ...test.statements],
      [
        {
          action: "webhook.created",
          target: { type: "webhook", id: row.id },
          inboxId,
          metadata: { url, events: row.events, inbox_id: inboxId, test_event_id: test.eventId },
        },
      ],
    );
  } catch (err) {
    if (isLimitReached(err)) throw limitReached();
    throw err;
  }
  await publishEvents(ctx.env, [test.eventId]);
  return { row, secret };
}

/** Newest-first page of the caller's endpoints. */
export async function listWebhooks(ctx: ServiceContext, page: Page): Promise<WebhookEndpointRow[]> {
  return ctx.db
    .select()
    .from(webhookEndpoints)
    .where(scoped(ctx, ...(page.before ? [lt(webhookEndpoints.id, page.before)] : [])))
    .orderBy(desc(webhookEndpoints.id))
    .limit(page.limit + 1)
    .all();
}

/** One endpoint of the caller; 404 for anything else. */
export async function getWebhook(ctx: ServiceContext, webhookId: string): Promise<WebhookEndpointRow> {
  const row = await ctx.db
    .select()
    .from(webhookEndpoints)
    .where(scoped(ctx, eq(webhookEndpoints.id, webhookId)))
    .get();
  if (!row) throw new NotFound("Webhook");
  return row;
}

/** Updates url, events, inbox filter, description, enabled; each change audited. */
export async function patchWebhook(
  ctx: ServiceContext,
  webhookId: string,
  patch: z.infer<typeof PatchWebhookInput>,
): Promise<WebhookEndpointRow> {
  const current = await getWebhook(ctx, webhookId);
  const url = patch.url === undefined ? current.url : await assertWebhookUrl(ctx, patch.url);
  const inboxId = patch.inbox_id === undefined ? current.inboxId : patch.inbox_id;
  if (patch.inbox_id !== undefined) await checkInboxFilter(ctx, inboxId);
  const enabled = patch.enabled ?? current.enabled;
  const next: WebhookEndpointRow = {
    ...current,
    url,
    inboxId,
    events: patch.events ?? current.events,
    description: patch.description === undefined ? current.description : patch.description,
    enabled,
    disabledReason: enabled ? null : current.enabled ? "manual" : current.disabledReason,
    updatedAt: ctx.now(),
  };
  const changes = Object.keys(patch).filter((k) => k !== "enabled");
  const audit = [];
  if (changes.length > 0) {
    audit.push({
      action: "webhook.updated",
      target: { type: "webhook", id: webhookId },
      inboxId: next.inboxId,
      metadata: { changes, url: next.url, events: next.events, inbox_id: next.inboxId },
    });
  }
  if (enabled !== current.enabled) {
    audit.push({
      action: enabled ? "webhook.enabled" : "webhook.disabled",
      target: { type: "webhook", id: webhookId },
      inboxId: next.inboxId,
      metadata: { reason: enabled ? null : "manual", previous_reason: current.disabledReason },
    });
  }
  if (audit.length === 0) return current;
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(webhookEndpoints)
        .set({
          url: next.url,
          inboxId: next.inboxId,
          events: next.events,
          description: next.description,
          enabled: next.enabled,
          disabledReason: next.disabledReason,
          updatedAt: next.updatedAt,
        })
        .where(scoped(ctx, eq(webhookEndpoints.id, webhookId))),
    ],
    audit,
  );
  return next;
}

/** Deletes an endpoint (soft: its delivery log stays for the record) and cancels what it had pending. */
export async function deleteWebhook(ctx: ServiceContext, webhookId: string): Promise<void> {
  const current = await getWebhook(ctx, webhookId);
  const now = ctx.now();
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(webhookEndpoints)
        .set({ deletedAt: now, enabled: false, updatedAt: now })
        .where(scoped(ctx, eq(webhookEndpoints.id, webhookId))),
      ctx.db
        .update(webhookDispatches)
        .set({ status: "cancelled", lastError: "endpoint deleted", completedAt: now, updatedAt: now })
        .where(
          and(
            eq(webhookDispatches.accountId, ctx.accountId),
            eq(webhookDispatches.endpointId, webhookId),
            eq(webhookDispatches.status, "pending"),
          ),
        ),
    ],
    [
      {
        action: "webhook.deleted",
        target: { type: "webhook", id: webhookId },
        inboxId: current.inboxId,
        metadata: { url: current.url },
      },
    ],
  );
}

/** New secret; the previous one keeps signing, alongside, for 24 h. Returned only here. */
export async function rotateSecret(
  ctx: ServiceContext,
  webhookId: string,
): Promise<{ row: WebhookEndpointRow; secret: string }> {
  const current = await getWebhook(ctx, webhookId);
  const secret = newSecret();
  const now = ctx.now();
  const next: WebhookEndpointRow = {
    ...current,
    secret: await sealSecret(ctx.env, secret),
    // Only the last secret overlaps: rotating twice within 24 h retires the oldest at once.
    previousSecret: current.secret,
    previousSecretExpiresAt: now + ROTATION_OVERLAP_MS,
    updatedAt: now,
  };
  await commitWithAudit(
    ctx,
    [
      ctx.db
        .update(webhookEndpoints)
        .set({
          secret: next.secret,
          previousSecret: next.previousSecret,
          previousSecretExpiresAt: next.previousSecretExpiresAt,
          updatedAt: now,
        })
        .where(scoped(ctx, eq(webhookEndpoints.id, webhookId))),
    ],
    [
      {
        action: "webhook.secret_rotated",
        target: { type: "webhook", id: webhookId },
        inboxId: current.inboxId,
        metadata: { previous_secret_expires_at: iso(next.previousSecretExpiresAt) },
      },
    ],
  );
  return { row: next, secret };
}

/** Sends a `webhook.test` event to one endpoint (enabled or not: a test is how you check it is back). */
export async function sendTestEvent(ctx: ServiceContext, webhookId: string): Promise<z.infer<typeof WebhookTestWire>> {
  const endpoint = await getWebhook(ctx, webhookId);
  const test = testStatements(ctx, endpoint, "requested");
  await runBatch(ctx.db, test.statements);
  await publishEvents(ctx.env, [test.eventId]);
  return { webhook_id: endpoint.id, event_id: test.eventId, status: "queued" };
}

/** Newest-first page of an endpoint's delivery attempts. */
export async function listDeliveries(
  ctx: ServiceContext,
  webhookId: string,
  page: Page,
): Promise<WebhookDeliveryRow[]> {
  await getWebhook(ctx, webhookId);
  return ctx.db
    .select()
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.accountId, ctx.accountId),
        eq(webhookDeliveries.endpointId, webhookId),
        ...(page.before ? [lt(webhookDeliveries.id, page.before)] : []),
      ),
    )
    .orderBy(desc(webhookDeliveries.id))
    .limit(page.limit + 1)
    .all();
}

/**
 * Re-delivers a stored event, same id, to every enabled endpoint it matches (or to the one
 * named), or to `target_url` signed with that endpoint's secret. Audited.
 */
export async function replayEvent(
  ctx: ServiceContext,
  eventId: string,
  input: { target_url?: string | undefined; webhook_id?: string | undefined },
): Promise<{ eventId: string; webhookIds: string[]; targetUrl: string | null }> {
  const event = await getEvent(ctx, eventId);
  const targetUrl = input.target_url === undefined ? null : await assertWebhookUrl(ctx, input.target_url, "target_url");
  let endpoints: WebhookEndpointRow[];
  if (input.webhook_id) {
    try {
      endpoints = [await getWebhook(ctx, input.webhook_id)];
    } catch (err) {
      if (err instanceof NotFound) throw new ValidationFailed([{ path: "webhook_id", message: "No such webhook." }]);
      throw err;
    }
  } else {
    const all = await ctx.db.select().from(webhookEndpoints).where(scoped(ctx)).orderBy(webhookEndpoints.id).all();
    endpoints = all.filter((e) => endpointMatches(e, event));
    // A target URL gets one copy, signed with the oldest matching endpoint's secret.
    if (targetUrl !== null) endpoints = endpoints.slice(0, 1);
  }
  if (endpoints.length === 0) {
    throw new ValidationFailed(
      [
        {
          path: input.webhook_id ? "webhook_id" : "event_id",
          message: "No enabled webhook endpoint matches this event.",
        },
      ],
      "There is no webhook endpoint to replay this event to; create one or name one with webhook_id.",
    );
  }
  const now = ctx.now();
  const dispatches = endpoints.map((e) =>
    newDispatch({ accountId: ctx.accountId, endpointId: e.id, eventId: event.id, kind: "replay", targetUrl }, now),
  );
  await commitWithAudit(
    ctx,
    dispatches.map((d) => ctx.db.insert(webhookDispatches).values(d)),
    [
      {
        action: "webhook.replayed",
        target: { type: "event", id: event.id },
        inboxId: event.inboxId,
        metadata: { event_type: event.type, webhook_ids: endpoints.map((e) => e.id), target_url: targetUrl },
      },
    ],
  );
  await enqueueDispatches(
    ctx.env,
    dispatches.map((d) => d.id),
  );
  return { eventId: event.id, webhookIds: endpoints.map((e) => e.id), targetUrl };
}

/** Wire shape of an endpoint (never its secret). */
export function toWebhookWire(row: WebhookEndpointRow): z.infer<typeof WebhookWire> {
  return {
    id: row.id,
    url: row.url,
    events: row.events,
    inbox_id: row.inboxId,
    description: row.description,
    enabled: row.enabled,
    disabled_reason: row.enabled ? null : row.disabledReason === "gone" ? "gone" : "manual",
    created_at: iso(row.createdAt),
    updated_at: iso(row.updatedAt),
  };
}

/** Wire shape of one delivery attempt. */
export function toDeliveryWire(row: WebhookDeliveryRow): z.infer<typeof WebhookAttemptWire> {
  return {
    id: row.id,
    event_id: row.eventId,
    event_type: row.eventType,
    attempt: row.attempt,
    status_code: row.statusCode,
    error: row.error,
    duration_ms: row.durationMs,
    url: row.url,
    status: row.outcome,
    next_attempt_at: iso(row.nextAttemptAt),
    created_at: iso(row.createdAt),
  };
}

/** Wire shape of a replay (the route's `data` and the replay_event tool's result). */
export function toReplayWire(r: Awaited<ReturnType<typeof replayEvent>>) {
  return { event_id: r.eventId, webhook_ids: r.webhookIds, target_url: r.targetUrl };
}
