import { DurableObject } from "cloudflare:workers";
import { createDb } from "../db/client";
import { blockedStreamKeys, eventsAfterSeq, headSeq } from "../db/event-log";
import { type HubEvent, type Subscription, sseFrame, subscriptionMatches, toHubEvent } from "../lib/event-stream";
import { log } from "../lib/log";

/** The bindings the hub reads (not the Worker's Bindings: env.ts names this class). */
interface HubEnv {
  DB: D1Database;
}

/** What the events feature asks the hub for, in the `x-hub-connect` header of its fetch. */
export interface HubConnect {
  accountId: string;
  transport: "sse" | "ws";
  sub: Subscription;
  /** Resume after this seq (Last-Event-ID / ?after=); null: only events committed from now on. */
  afterSeq: number | null;
  /** The key's connection cap (its tier's `stream_connections`). */
  cap: number;
  /** The account's connection cap, all keys together (its tier's `stream_connections_per_account`). */
  accountCap: number;
  /** The WebSocket subprotocol to answer with (the browser offered it next to its key). */
  protocol?: string | null;
}

/** The hub's refusals (the feature turns them into error envelopes). */
export type HubRefusal =
  /** The key, or the whole account, is at its cap: 429. */
  | { refused: "connection_limit"; scope: "key" | "account"; open: number; limit: number }
  /** The cursor is more than REPLAY_MAX events behind the log's head: 410. */
  | { refused: "cursor_too_old"; behind: number; limit: number };

/**
 * What a WebSocket carries across hibernation (its attachment, which may not exceed 2 KiB). The
 * subscription is kept in storage under the socket's id instead: a key restricted to 100 inboxes
 * or 20 long patterns does not fit, and a failed serialize would leave an accepted socket behind.
 */
interface Attachment {
  id: string;
  keyId: string;
  /** Events up to this seq were replayed (or predate the connection); -1 while joining. */
  lastSeq: number;
  /** The socket feeds an SSE response (in the Worker request that opened it): send ready frames. */
  sse: boolean;
  openedAt: number;
}

/** One open stream as the hub holds it in memory. */
interface Conn extends Attachment {
  sub: Subscription;
}

/** SSE comment sent when nothing else was, so proxies and clients see a live stream. */
export const HEARTBEAT_MS = 15_000;
/**
 * Streams (SSE and WebSocket) end after this; the client reconnects with Last-Event-ID or
 * ?after= and loses nothing. Bounds how long any one authentication is relied on.
 */
export const MAX_STREAM_MS = 30 * 60_000;
/**
 * How often the hub re-reads the revocation and suspension state of its open streams' keys while
 * any is open: the backstop for a disconnect push that failed or raced the connect, so a blocked
 * key's stream ends within this (API.md: revocation takes effect everywhere within 2 s).
 */
export const KEY_CHECK_MS = 2_000;
/** How often a hub with open streams checks D1 for a commit it was never told of. */
const CATCH_UP_CHECK_MS = 15_000;
/** Rows per D1 read when replaying or filling a gap. */
const PAGE = 200;
/** A cursor further behind the head than this many events is refused (410 `cursor_too_old`). */
export const REPLAY_MAX = 10_000;
/** Events buffered for one stream while it replays; past this it is closed with 1013 (it resumes). */
export const JOIN_BUFFER_MAX = 2_000;

/**
 * One per account: the fan-out point of its event log to open streams. Producers commit events
 * to D1, then tell the hub how far the log reaches (`committed`, from publishEvents); a hub with
 * open streams reads what it has not dispatched from D1 (one reader at a time, so a burst of
 * commits costs a few reads) and sends each event to every matching connection in commit order
 * (`seq`), so no connection polls D1. A joining connection replays from D1 after its cursor; a
 * `committed` call lost in a crash is made up by the alarm's head check.
 *
 * Ordering and no-duplicates: the hub keeps `head`, the seq up to which it has dispatched every
 * event, and dispatches only head + 1 next. Each connection remembers the seq its replay reached
 * (`lastSeq`) and skips anything at or below it; events dispatched while it is still replaying
 * are buffered and flushed after the replay. Every stream is a hibernatable WebSocket (its
 * subscription in storage under the id in the socket's attachment, `head` in storage): a browser's
 * or agent's own socket, or, for SSE, the socket of the Worker request that serves the SSE
 * response, to which the hub sends ready SSE frames. So the hub holds no stream in memory.
 *
 * Bounds: per key and per account connection caps, a replay depth (REPLAY_MAX), the replay buffer
 * (JOIN_BUFFER_MAX); a stream lives MAX_STREAM_MS at most, and
 * while any is open the alarm re-reads its keys' revocation and suspension every KEY_CHECK_MS
 * (which keeps a hub with open streams awake: the price of revocation within 2 s without a push).
 */
export class EventHub extends DurableObject<HubEnv> {
  private accountId: string | null;
  private head: number | null;
  /** The highest seq producers announced (committed()), for a join that raced them. */
  private committedSeq = 0;
  private catchingUp = false;
  private catchUpAgain = false;
  private readonly sockets = new Map<WebSocket, Conn>();
  private lastHeartbeat = 0;
  private lastHeadCheck = 0;
  /** Events dispatched while a connection was still replaying, flushed when its replay ends. */
  private readonly joining = new Map<object, HubEvent[]>();

  constructor(ctx: DurableObjectState, env: HubEnv) {
    super(ctx, env);
    this.accountId = ctx.storage.kv.get<string>("account") ?? null;
    this.head = ctx.storage.kv.get<number>("head") ?? null;
    // Keep-alives that never wake a hibernated hub.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
    for (const ws of ctx.getWebSockets()) {
      const att = ws.deserializeAttachment() as Attachment | null;
      const sub = att ? ctx.storage.kv.get<Subscription>(subKey(att.id)) : undefined;
      if (att && sub) this.sockets.set(ws, { ...att, sub });
      else closeQuietly(ws, 1011, "stream state lost; reconnect with the last event id");
    }
  }

  /**
   * Opens one stream (SSE body or WebSocket upgrade), or refuses it: a cursor too far behind
   * (its replay would read the whole log inside the hub), or the key or account at its cap.
   */
  override async fetch(request: Request): Promise<Response> {
    const input = JSON.parse(request.headers.get("x-hub-connect") ?? "null") as HubConnect | null;
    if (!input) return new Response("bad hub request", { status: 400 });
    if (this.accountId !== input.accountId) {
      this.accountId = input.accountId;
      this.ctx.storage.kv.put("account", input.accountId);
    }
    if (input.afterSeq !== null) {
      const behind = (await headSeq(createDb(this.env.DB), input.accountId)) - input.afterSeq;
      if (behind > REPLAY_MAX) return refuse({ refused: "cursor_too_old", behind, limit: REPLAY_MAX });
    }
    // The caps are checked with no await before the accept below, so concurrent connects cannot overshoot.
    const all = this.ctx.getWebSockets().length;
    if (all >= input.accountCap) {
      return refuse({ refused: "connection_limit", scope: "account", open: all, limit: input.accountCap });
    }
    const open = this.openFor(input.sub.keyId);
    if (open >= input.cap) return refuse({ refused: "connection_limit", scope: "key", open, limit: input.cap });
    const response = this.openSocket(input);
    await this.scheduleAlarm(KEY_CHECK_MS);
    return response;
  }

  private openFor(keyId: string): number {
    return this.ctx.getWebSockets(keyTag(keyId)).length;
  }

  private openSocket(input: HubConnect): Response {
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    const sse = input.transport === "sse";
    const conn: Conn = {
      id: crypto.randomUUID(),
      keyId: input.sub.keyId,
      sub: input.sub,
      lastSeq: -1,
      sse,
      openedAt: Date.now(),
    };
    // Everything that can fail happens before the accept: no accepted socket is left uncounted.
    this.ctx.storage.kv.put(subKey(conn.id), input.sub);
    this.ctx.acceptWebSocket(server, [keyTag(input.sub.keyId)]);
    server.serializeAttachment(attachment(conn));
    this.sockets.set(server, conn);
    this.joining.set(server, []);
    void this.join(input, server, {
      send: (e) => server.send(sse ? sseFrame(e) : e.json),
      done: (lastSeq) => {
        conn.lastSeq = lastSeq;
        server.serializeAttachment(attachment(conn));
      },
      fail: (code, reason) => {
        this.end(server, code, reason);
        this.forgetIfIdle();
      },
    });
    const headers = input.protocol ? { "Sec-WebSocket-Protocol": input.protocol } : undefined;
    return new Response(null, { status: 101, webSocket: client, headers });
  }

  /**
   * Checks the key once more (a revocation that committed while this stream was on its way here
   * found no socket to close), replays the log after the connection's cursor (or only notes where
   * "now" is), then flushes what was dispatched meanwhile, skipping what the replay already sent:
   * no gap, no duplicate.
   */
  private async join(
    input: HubConnect,
    key: WebSocket,
    io: { send: (e: HubEvent) => void; done: (lastSeq: number) => void; fail: (code: number, reason: string) => void },
  ): Promise<void> {
    const db = createDb(this.env.DB);
    let lastSeq = -1;
    try {
      const blocked = (await blockedStreamKeys(db, input.accountId, [input.sub.keyId])).get(input.sub.keyId);
      if (blocked) {
        io.fail(4001, blocked);
        return;
      }
      let cursor = input.afterSeq;
      let replayed = 0;
      for (;;) {
        if (!this.sockets.has(key)) return; // closed meanwhile (a disconnect, the client)
        if (cursor === null) {
          lastSeq = await headSeq(db, input.accountId);
        } else {
          for (;;) {
            const { rows, head } = await eventsAfterSeq(db, input.accountId, cursor, PAGE, input.sub.inboxIds);
            if (!this.sockets.has(key)) return;
            // The cursor was checked against the head before the accept; this bounds what
            // producers commit during the replay too.
            replayed += rows.length;
            if (replayed > 2 * REPLAY_MAX) {
              io.fail(1013, "replay too long; reconnect with the last event id");
              return;
            }
            for (const row of rows) {
              const e = toHubEvent(row);
              if (subscriptionMatches(input.sub, e)) io.send(e);
              cursor = e.seq;
            }
            if (rows.length < PAGE) {
              lastSeq = Math.max(head, cursor);
              break;
            }
          }
        }
        // The hub may have moved past this snapshot without dispatching into our buffer (it starts
        // from a later stream's position when none was live): read the rest before going live.
        // No await between this check and the flush below, so nothing can slip in between.
        if (this.head === null || this.head <= lastSeq) break;
        cursor = lastSeq;
      }
    } catch (err) {
      log.error("event stream replay failed", { account: input.accountId, error: String(err) });
      io.fail(1011, "replay failed; reconnect with the last event id");
      return;
    }
    if (!this.sockets.has(key)) return;
    const buffered = this.joining.get(key) ?? [];
    this.joining.delete(key);
    for (const e of buffered) {
      if (e.seq <= lastSeq) continue;
      if (subscriptionMatches(input.sub, e)) io.send(e);
      lastSeq = e.seq;
    }
    io.done(lastSeq);
    // With no other live stream nobody needs the events before lastSeq dispatched: start there,
    // instead of reading back from D1 what the hub missed while nobody listened.
    if (this.head === null || this.liveCount() === 1) this.setHead(Math.max(this.head ?? 0, lastSeq));
    // A commit announced while this stream was joining (committed() cannot read without a head)
    // is read now, not on the next commit or the alarm.
    if (this.head !== null && this.committedSeq > this.head) void this.catchUp();
  }

  /**
   * A producer committed the account's events up to `seq`. With listeners, the hub reads what it
   * has not dispatched yet from D1 (one reader at a time, so a burst of commits costs a few reads,
   * not one per event); without, it forgets its position, so the next connection starts from
   * D1's head instead of reading back everything committed while the hub was idle.
   */
  async committed(accountId: string, seq: number): Promise<{ connections: number }> {
    const connections = this.sockets.size;
    if (connections === 0) {
      if (this.head !== null) this.setHead(null);
      return { connections };
    }
    if (this.accountId === null) {
      this.accountId = accountId;
      this.ctx.storage.kv.put("account", accountId);
    }
    this.committedSeq = Math.max(this.committedSeq, seq);
    if (this.head !== null && seq > this.head) void this.catchUp();
    return { connections };
  }

  /** Reads every committed event after `head` from D1 and dispatches it (one reader at a time). */
  private async catchUp(): Promise<void> {
    if (this.catchingUp) {
      this.catchUpAgain = true;
      return;
    }
    if (this.head === null || this.accountId === null) return;
    this.catchingUp = true;
    try {
      const db = createDb(this.env.DB);
      for (;;) {
        this.catchUpAgain = false;
        const { rows } = await eventsAfterSeq(db, this.accountId, this.head ?? 0, PAGE);
        for (const row of rows) {
          const e = toHubEvent(row);
          // Dispatches made while this read was in flight moved head on; never send twice.
          if (this.head === null || e.seq <= this.head) continue;
          this.dispatch(e);
          this.setHead(e.seq);
        }
        if (rows.length < PAGE && !this.catchUpAgain) break;
      }
    } catch (err) {
      log.error("event hub catch-up failed; retried on the next commit or alarm", { error: String(err) });
    } finally {
      this.catchingUp = false;
    }
  }

  /** Sends one event to every live connection that wants it; joining ones buffer it. */
  private dispatch(e: HubEvent): void {
    let frame: string | null = null;
    for (const [ws, att] of this.sockets) {
      const buffer = this.joining.get(ws);
      if (buffer) {
        // A replay that cannot keep up with the live rate: end it rather than hold memory.
        if (buffer.length >= JOIN_BUFFER_MAX) this.end(ws, 1013, "too far behind; reconnect with the last event id");
        else buffer.push(e);
      } else if (e.seq > att.lastSeq && subscriptionMatches(att.sub, e)) {
        if (att.sse) frame ??= sseFrame(e);
        this.send(ws, att.sse ? (frame as string) : e.json);
      }
    }
  }

  private send(ws: WebSocket, text: string): void {
    try {
      ws.send(text);
    } catch {
      this.forget(ws); // closed under us; webSocketClose may never come
      this.forgetIfIdle();
    }
  }

  /** Ends a stream; an SSE stream is told why first (unless it simply ran its course). */
  private end(ws: WebSocket, code: number, reason: string): void {
    if (code !== 1000 && this.sockets.get(ws)?.sse) {
      this.send(ws, `event: error\ndata: ${JSON.stringify({ code: reason })}\n\n`);
    }
    this.forget(ws);
    closeQuietly(ws, code, reason);
  }

  /** Drops a stream's state: memory, its replay buffer, its stored subscription. */
  private forget(ws: WebSocket): void {
    const conn = this.sockets.get(ws);
    this.sockets.delete(ws);
    this.joining.delete(ws);
    if (conn) this.ctx.storage.kv.delete(subKey(conn.id));
  }

  /** Streams past their replay. */
  private liveCount(): number {
    let n = 0;
    for (const ws of this.sockets.keys()) if (!this.joining.has(ws)) n++;
    return n;
  }

  /** The last stream went away: forget the position (the next one starts from D1's head). */
  private forgetIfIdle(): void {
    if (this.sockets.size > 0) return;
    if (this.head !== null) this.setHead(null);
    // Subscriptions of sockets that vanished without a close event.
    for (const [k] of this.ctx.storage.kv.list({ prefix: "sub:" })) this.ctx.storage.kv.delete(k);
  }

  private setHead(head: number | null): void {
    this.head = head;
    if (head === null) this.ctx.storage.kv.delete("head");
    else this.ctx.storage.kv.put("head", head);
  }

  private async scheduleAlarm(inMs: number): Promise<void> {
    const at = await this.ctx.storage.getAlarm();
    if (at === null || at > Date.now() + inMs) await this.ctx.storage.setAlarm(Date.now() + inMs);
  }

  /**
   * Runs every KEY_CHECK_MS while any stream is open: ends the streams of keys revoked or accounts
   * suspended since (the backstop for a lost disconnect), ends streams past MAX_STREAM_MS, sends
   * SSE heartbeats, and checks for events whose commit it was never told of.
   */
  override async alarm(): Promise<void> {
    const now = Date.now();
    for (const [ws, conn] of this.sockets) if (now - conn.openedAt >= MAX_STREAM_MS) this.end(ws, 1000, "max_duration");
    if (now - this.lastHeartbeat >= HEARTBEAT_MS) {
      this.lastHeartbeat = now;
      for (const [ws, conn] of this.sockets) if (conn.sse) this.send(ws, ": heartbeat\n\n");
    }
    this.forgetIfIdle();
    if (this.accountId !== null && this.sockets.size > 0) {
      const db = createDb(this.env.DB);
      try {
        const keyIds = [...new Set([...this.sockets.values()].map((c) => c.keyId))];
        const blocked = await blockedStreamKeys(db, this.accountId, keyIds);
        for (const [keyId, reason] of blocked) this.disconnect(keyId, reason);
      } catch (err) {
        log.warn("event hub key check failed", { error: String(err) });
      }
      if (this.head !== null && this.sockets.size > 0 && now - this.lastHeadCheck >= CATCH_UP_CHECK_MS) {
        this.lastHeadCheck = now;
        try {
          const head = await headSeq(db, this.accountId);
          if (this.head !== null && head > this.head) await this.catchUp();
        } catch (err) {
          log.warn("event hub head check failed", { error: String(err) });
        }
      }
    }
    if (this.sockets.size > 0) await this.ctx.storage.setAlarm(Date.now() + KEY_CHECK_MS);
  }

  /** Ends every stream of a key (revoked) or of the account (suspended, keyId null). */
  disconnect(keyId: string | null, reason: string): number {
    let n = 0;
    for (const ws of keyId === null ? this.ctx.getWebSockets() : this.ctx.getWebSockets(keyTag(keyId))) {
      this.end(ws, 4001, reason);
      n++;
    }
    this.forgetIfIdle();
    return n;
  }

  /** Open connections (SSE, WebSocket), for tests and the bench. */
  stats(): { sse: number; ws: number; head: number | null } {
    let sse = 0;
    for (const att of this.sockets.values()) if (att.sse) sse++;
    return { sse, ws: this.sockets.size - sse, head: this.head };
  }

  override async webSocketMessage(_ws: WebSocket, _message: string | ArrayBuffer): Promise<void> {
    // The stream is one-way; "ping" is answered by the auto-response without waking the hub.
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.forget(ws);
    this.forgetIfIdle();
    closeQuietly(ws, code === 1005 ? 1000 : code, reason);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.forget(ws);
    this.forgetIfIdle();
  }
}

function keyTag(keyId: string): string {
  return `key:${keyId}`;
}

function subKey(socketId: string): string {
  return `sub:${socketId}`;
}

function attachment(conn: Conn): Attachment {
  return { id: conn.id, keyId: conn.keyId, lastSeq: conn.lastSeq, sse: conn.sse, openedAt: conn.openedAt };
}

function refuse(refusal: HubRefusal): Response {
  return Response.json(refusal, { status: refusal.refused === "cursor_too_old" ? 410 : 429 });
}

function closeQuietly(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // already closed
  }
}
