import { and, asc, desc, eq, getTableName, gt, isNotNull, lt, type SQL } from "drizzle-orm";
import { once } from "../../db/client";
import { insertRow, type Statement } from "../../db/compiled";
import { type EventRow, events, webhookEndpoints } from "../../db/schema";
import { inList, inListOf } from "../../db/sql";
import { eventHub, type HubConnect, type HubRefusal } from "../../durable-objects/event-hub.client";
import type { Bindings } from "../../env";
import { type ServiceContext, systemContext } from "../../lib/context";
import { Gone, NotFound, RateLimited } from "../../lib/errors";
import type { Subscription } from "../../lib/event-stream";
import { newId } from "../../lib/ids";
import { log } from "../../lib/log";
import type { Page } from "../../lib/pagination";
import { fanOut } from "../webhooks/dispatch";
import type { EVENT_TYPES } from "./events.schemas";

export type EventType = (typeof EVENT_TYPES)[number];

export interface EventRefs {
  inboxId?: string | null;
  threadId?: string | null;
  messageId?: string | null;
}

const NEXT_EVENT_SEQ = `(SELECT coalesce(max("${events.seq.name}"), 0) + 1 FROM "${getTableName(events)}" WHERE "${events.accountId.name}" = ?)`;
/** Bound: the account id, then the commit time. */
const BORN_DISPATCHED = `(CASE WHEN EXISTS (SELECT 1 FROM "${getTableName(webhookEndpoints)}" WHERE "${webhookEndpoints.accountId.name}" = ? AND "${webhookEndpoints.enabled.name}" = 1 AND "${webhookEndpoints.deletedAt.name}" IS NULL) THEN NULL ELSE ? END)`;

/**
 * The insert of one event, to go in the same `db.batch` as the change it reports, so an event
 * exists exactly when its change does. Delivery (webhooks, long-poll) reads the log later.
 */
export function eventStatement(
  ctx: ServiceContext,
  type: EventType,
  refs: EventRefs,
  data: Record<string, unknown>,
  /** The caller's batch also inserts this event's dispatches (webhook.test): always fan it out. */
  options: { ownDispatches?: boolean } = {},
): { id: string; statement: Statement } {
  const id = newId("evt", ctx.now());
  const statement = insertRow(
    events,
    {
      id,
      accountId: ctx.accountId,
      type,
      inboxId: refs.inboxId ?? null,
      threadId: refs.threadId ?? null,
      messageId: refs.messageId ?? null,
      data,
      createdAt: ctx.now(),
    },
    {
      computed: {
        // Computed inside the insert: D1 runs writes one at a time, so this is the commit order.
        seq: { sql: NEXT_EVENT_SEQ, params: [ctx.accountId] },
        // An account with no live webhook endpoint at commit has nothing to fan out: its event is born
        // dispatched, so publishing it costs no endpoint read, no dispatch read and no update (three
        // D1 round trips per inbound mail). Decided inside the commit's transaction, so an endpoint
        // gets every event committed while it is live; it may also get a few from just before it was
        // created or re-enabled when another endpoint of the account was live then (the fan-out
        // reads the endpoints after the commit). docs/webhooks.md says so.
        ...(options.ownDispatches
          ? {}
          : { dispatchedAt: { sql: BORN_DISPATCHED, params: [ctx.accountId, ctx.now()] } }),
      },
      // What publishing needs, read back by the commit itself (headsOf): no read after it.
      returning: HEAD_COLUMNS,
    },
  );
  return { id, statement };
}

/** What publishing needs of an event: its head (read back by the commit, or read after it). */
const HEAD_FIELDS = {
  id: events.id,
  accountId: events.accountId,
  type: events.type,
  inboxId: events.inboxId,
  seq: events.seq,
  dispatchedAt: events.dispatchedAt,
};
const HEAD_COLUMNS = Object.values(HEAD_FIELDS).map((column) => column.name);

/** The heads of the events among a commit's results (commitWithAudit's return). */
export function headsOf(results: unknown[]): EventHead[] {
  return results.map(eventHeadOf).filter((h): h is EventHead => h !== null);
}

/**
 * The head of a committed event from its statement's result in the batch (the RETURNING row of
 * eventStatement's insert), or null when the result is not one.
 */
function eventHeadOf(result: unknown): EventHead | null {
  const row = Array.isArray(result) ? (result[0] as Record<string, unknown> | undefined) : undefined;
  // Recognised by its id (events' own prefix) and the columns only eventStatement returns.
  if (
    !row ||
    typeof row.id !== "string" ||
    !row.id.startsWith("evt_") ||
    typeof row.account_id !== "string" ||
    !("dispatched_at" in row) ||
    !("seq" in row)
  )
    return null;
  return Object.fromEntries(
    Object.entries(HEAD_FIELDS).map(([key, column]) => [key, row[column.name] ?? null]),
  ) as EventHead;
}

/**
 * Hands committed events to delivery: webhooks, and the account's realtime hub (open SSE and
 * WebSocket streams). Call it after the `db.batch` that inserted them has committed. It never
 * throws: the producer's change is already done; events that miss their webhook fan-out here
 * (a crash, a queue outage) are picked up by the cron sweep, and a hub that misses a publish
 * reads the gap from D1 on the next one (or on its own periodic check).
 */
export async function publishEvents(env: Bindings, eventIds: string[], committed: EventHead[] = []): Promise<void> {
  if (eventIds.length === 0) return;
  const base = systemContext(env);
  // One small read serves both: which events still need their webhook fan-out, and how far each
  // account's log reached (the hub reads the events themselves from D1, and only if it has
  // listeners, so a producer never reads its payloads back). A producer that has every head from
  // its commit's RETURNING rows (`committed`, see headsOf) saves that read.
  const known = new Set(committed.map((h) => h.id));
  let heads: EventHead[];
  try {
    heads = eventIds.every((id) => known.has(id))
      ? committed.filter((h) => eventIds.includes(h.id))
      : await EVENT_HEADS.all(base.db, { ids: JSON.stringify(eventIds) });
  } catch (err) {
    log.error("event publish failed; the sweep retries", { events: eventIds, error: String(err) });
    return;
  }
  await Promise.all([
    // Events born dispatched (no live endpoint at commit) are filtered out here (dispatchedAt
    // set): with none left, fanOut returns before any query.
    fanOut(
      base,
      eventIds,
      "inline",
      heads.filter((h) => h.dispatchedAt === null),
    ).catch((err) => log.error("event fan-out failed; the sweep retries", { events: eventIds, error: String(err) })),
    notifyHubs(env, heads).catch((err) =>
      log.warn("event hub notify failed; the hub catches up from D1", { events: eventIds, error: String(err) }),
    ),
  ]);
}

export type EventHead = Pick<EventRow, "id" | "accountId" | "type" | "inboxId" | "seq" | "dispatchedAt">;

/** Tells each account's hub how far its log now reaches; a hub with listeners reads the new events. */
async function notifyHubs(env: Bindings, heads: EventHead[]): Promise<void> {
  const upTo = new Map<string, number>();
  for (const h of heads) if (h.seq !== null) upTo.set(h.accountId, Math.max(upTo.get(h.accountId) ?? 0, h.seq));
  await Promise.all([...upTo].map(([accountId, seq]) => eventHub(env, accountId).committed(accountId, seq)));
}

export interface StreamInput {
  transport: "sse" | "ws";
  /** Type patterns (validated by the schema); empty: every type. */
  types: string[];
  inboxId: string | null;
  /** Resume after this event id (Last-Event-ID or ?after=). */
  after: string | null;
  /** The API key opening the stream (the connection cap is per key). */
  keyId: string;
  /** The key's tier cap on open streams. */
  cap: number;
  /** The account's tier cap on open streams, all keys together. */
  accountCap: number;
  /** The WebSocket subprotocol to answer with, if the client offered ours. */
  protocol?: string | null;
}

/** An open stream: an SSE body, or the client end of an accepted WebSocket. */
export type OpenStream = { body: ReadableStream } | { webSocket: WebSocket; protocol: string | null };

/**
 * Opens a realtime stream of the caller's events on the account's hub: the events committed after
 * `after` (read from D1, in commit order), then every new one as it commits. Same visibility as
 * `GET /v1/events`: a restricted key sees only its inboxes' events, never account-level ones; a
 * cursor the caller cannot see is 404, one more than REPLAY_MAX events behind is 410 `cursor_too_old`.
 * Refused with 429 `connection_limit_reached` at the key's or the account's cap.
 */
export async function openEventStream(ctx: ServiceContext, input: StreamInput): Promise<OpenStream> {
  let afterSeq: number | null = null;
  if (input.after) {
    const anchor = await getEvent(ctx, input.after);
    afterSeq = anchor.seq ?? 0;
  }
  const sub: Subscription = {
    keyId: input.keyId,
    types: input.types.includes("*") ? [] : [...new Set(input.types)],
    inboxId: input.inboxId,
    inboxIds: ctx.inboxIds ?? null,
  };
  const connect: HubConnect = {
    accountId: ctx.accountId,
    transport: input.transport,
    sub,
    afterSeq,
    cap: input.cap,
    accountCap: input.accountCap,
    protocol: input.protocol ?? null,
  };
  // Both transports are hibernatable WebSockets on the hub; for SSE this Worker request holds the
  // hub's socket and turns each message into a frame (see sseBridge).
  const headers = { "x-hub-connect": JSON.stringify(connect), Upgrade: "websocket" };
  const res = await eventHub(ctx.env, ctx.accountId).fetch("https://event-hub/connect", { headers });
  if (res.status === 429 || res.status === 410) throw refusalError((await res.json()) as HubRefusal);
  if (!res.webSocket) throw new Error(`event hub answered ${res.status} without a WebSocket`);
  if (input.transport === "ws") return { webSocket: res.webSocket, protocol: input.protocol ?? null };
  return { body: sseBridge(res.webSocket) };
}

/** The hub's refusal as the error the caller sees. */
function refusalError(refusal: HubRefusal): Gone | RateLimited {
  if (refusal.refused === "cursor_too_old") {
    return new Gone(
      "cursor_too_old",
      `This cursor is ${refusal.behind} events behind the newest one; a stream replays at most ${refusal.limit}. Page through GET /v1/events?after=<cursor> to catch up, then stream from the last id you read (or without a cursor, from now).`,
      { behind: refusal.behind, limit: refusal.limit },
    );
  }
  const who =
    refusal.scope === "account"
      ? `This account already has ${refusal.open} open event streams, the most its tier allows for all its keys together (${refusal.limit}). Close one.`
      : `This API key already has ${refusal.open} open event streams, the most its tier allows (${refusal.limit}). Close one, or use another key.`;
  return new RateLimited("connection_limit_reached", who, 5, undefined, {
    limit: refusal.limit,
    open: refusal.open,
    scope: refusal.scope,
  });
}

const encoder = new TextEncoder();

/**
 * An SSE body fed by the hub's socket: the hub sends ready frames (events, heartbeats, the
 * closing reason) and this request only writes them through, so the hub keeps no stream in
 * memory and may hibernate. Either side closing ends the other.
 */
function sseBridge(ws: WebSocket): ReadableStream<Uint8Array> {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  const hangUp = () => {
    try {
      ws.close(1000, "client gone");
    } catch {
      // already closed
    }
  };
  ws.accept();
  // `retry` tells EventSource how soon to reconnect when the stream ends; the comment flushes headers.
  writer.write(encoder.encode("retry: 2000\n: connected\n\n")).catch(hangUp);
  ws.addEventListener("message", (m) => {
    writer.write(encoder.encode(typeof m.data === "string" ? m.data : "")).catch(hangUp);
  });
  const end = () => writer.close().catch(() => undefined);
  ws.addEventListener("close", end);
  ws.addEventListener("error", end);
  writer.closed.catch(hangUp);
  return readable;
}

export interface EventFilters {
  type?: EventType | undefined;
  inboxId?: string | undefined;
  threadId?: string | undefined;
}

/** Account scope, a restricted key's inboxes (account-level events are hidden from it), filters. */
function scoped(ctx: ServiceContext, filters: EventFilters, ...extra: SQL[]): SQL | undefined {
  const where: SQL[] = [eq(events.accountId, ctx.accountId), ...extra];
  if (ctx.inboxIds) where.push(isNotNull(events.inboxId), inList(events.inboxId, ctx.inboxIds));
  if (filters.type) where.push(eq(events.type, filters.type));
  if (filters.inboxId) where.push(eq(events.inboxId, filters.inboxId));
  if (filters.threadId) where.push(eq(events.threadId, filters.threadId));
  return and(...where);
}

/** Newest-first page of the account's events. */
export async function listEvents(ctx: ServiceContext, filters: EventFilters, page: Page): Promise<EventRow[]> {
  return ctx.db
    .select()
    .from(events)
    .where(scoped(ctx, filters, ...(page.before ? [lt(events.id, page.before)] : [])))
    .orderBy(desc(events.id))
    .limit(page.limit + 1)
    .all();
}

/** One event of the caller; 404 for anything else. */
export async function getEvent(ctx: ServiceContext, eventId: string): Promise<EventRow> {
  const row = await ctx.db
    .select()
    .from(events)
    .where(scoped(ctx, {}, eq(events.id, eventId)))
    .get();
  if (!row) throw new NotFound("Event");
  return row;
}

/**
 * Events committed after `afterId`, oldest first. With `waitMs`, polls until at least one
 * exists (or the time is up, or the client went away) and answers as soon as one does.
 */
export async function eventsAfter(
  ctx: ServiceContext,
  afterId: string,
  filters: EventFilters,
  limit: number,
  waitMs: number,
  signal?: AbortSignal,
): Promise<EventRow[]> {
  const anchor = await getEvent(ctx, afterId);
  // Rows written before the seq column existed were numbered by id in the migration, so seq is
  // always set; the id fallback only guards against a row that somehow lacks one.
  const newer = anchor.seq === null ? gt(events.id, anchor.id) : gt(events.seq, anchor.seq);
  const deadline = Date.now() + waitMs;
  let interval = 100;
  for (;;) {
    const rows = await ctx.db
      .select()
      .from(events)
      .where(scoped(ctx, filters, newer))
      .orderBy(asc(events.seq), asc(events.id))
      .limit(limit)
      .all();
    const left = deadline - Date.now();
    if (rows.length > 0 || left <= 0 || signal?.aborted) return rows;
    await new Promise((resolve) => setTimeout(resolve, Math.min(interval, left)));
    interval = Math.min(interval * 1.5, 1000);
  }
}

/** A newest-first list that waits for its first event when empty (`wait` without `after`). */
export async function waitForEvents(
  ctx: ServiceContext,
  filters: EventFilters,
  page: Page,
  waitMs: number,
  signal?: AbortSignal,
): Promise<EventRow[]> {
  const deadline = Date.now() + waitMs;
  let interval = 100;
  for (;;) {
    const rows = await listEvents(ctx, filters, page);
    const left = deadline - Date.now();
    if (rows.length > 0 || left <= 0 || signal?.aborted) return rows;
    await new Promise((resolve) => setTimeout(resolve, Math.min(interval, left)));
    interval = Math.min(interval * 1.5, 1000);
  }
}

export { toEventWire } from "./event-wire";

const EVENT_HEADS = once((db) => db.select(HEAD_FIELDS).from(events).where(inListOf(events.id, "ids")).prepare());
