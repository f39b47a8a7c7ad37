import { DurableObject } from "cloudflare:workers";
import { createDb } from "../db/client";
import { eventsAfterSeq, headSeq } from "../db/event-log";
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
  /** The WebSocket subprotocol to answer with (the browser offered it next to its key). */
  protocol?: string | null;
}

/** The hub's refusal when a key is at its cap (the feature turns it into a 429 envelope). */
export interface HubRefusal {
  refused: "connection_limit";
  open: number;
  limit: number;
}

/** What a WebSocket carries across hibernation (its attachment; 2 KiB at most). */
interface Attachment {
  sub: Subscription;
  /** Events up to this seq were replayed (or predate the connection); -1 while joining. */
  lastSeq: number;
  /** The socket feeds an SSE response (in the Worker request that opened it): send ready frames. */
  sse: boolean;
  openedAt: number;
}

/** SSE comment sent when nothing else was, so proxies and clients see a live stream. */
export const HEARTBEAT_MS = 15_000;
/** SSE streams end after this; the client reconnects with Last-Event-ID and loses nothing. */
export const MAX_SSE_MS = 30 * 60_000;
/** How often a hub with only (hibernatable) WebSockets checks D1 for a publish that never came. */
const WS_CATCH_UP_MS = 60_000;
/** Rows per D1 read when replaying or filling a gap. */
const PAGE = 200;

/**
 * One per account: the fan-out point of its event log to open streams. Producers commit an event
 * to D1, then `publish` it here (publishEvents); the hub sends it to every matching connection in
 * commit order (`seq`), so a connection never polls D1. D1 stays the source of truth: a joining
 * connection replays from it after its cursor, and the hub reads it to fill any gap between the
 * last seq it delivered and the seqs it is handed (publishes racing each other, or lost in a crash).
 *
 * Ordering and no-duplicates: the hub keeps `head`, the seq up to which it has dispatched every
 * event, and dispatches only head + 1 next. Each connection remembers the seq its replay reached
 * (`lastSeq`) and skips anything at or below it; events dispatched while it is still replaying
 * are buffered and flushed after the replay. Every stream is a hibernatable WebSocket (its
 * subscription rides in the socket's attachment, `head` in storage): a browser's or agent's own
 * socket, or, for SSE, the socket of the Worker request that serves the SSE response, to which the
 * hub sends ready SSE frames. So the hub holds no stream in memory and may hibernate.
 */
export class EventHub extends DurableObject<HubEnv> {
  private accountId: string | null;
  private head: number | null;
  private readonly pending = new Map<number, HubEvent>();
  private catchingUp = false;
  private catchUpAgain = false;
  private readonly sockets = new Map<WebSocket, Attachment>();
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
      if (att) this.sockets.set(ws, att);
    }
  }

  /** Opens one stream (SSE body or WebSocket upgrade), or refuses it at the key's cap. */
  override async fetch(request: Request): Promise<Response> {
    const input = JSON.parse(request.headers.get("x-hub-connect") ?? "null") as HubConnect | null;
    if (!input) return new Response("bad hub request", { status: 400 });
    if (this.accountId !== input.accountId) {
      this.accountId = input.accountId;
      this.ctx.storage.kv.put("account", input.accountId);
    }
    const open = this.openFor(input.sub.keyId);
    if (open >= input.cap) {
      const refusal: HubRefusal = { refused: "connection_limit", open, limit: input.cap };
      return Response.json(refusal, { status: 429 });
    }
    await this.scheduleAlarm(input.transport === "sse" ? HEARTBEAT_MS : WS_CATCH_UP_MS);
    return this.openSocket(input);
  }

  private openFor(keyId: string): number {
    return this.ctx.getWebSockets(keyTag(keyId)).length;
  }

  private openSocket(input: HubConnect): Response {
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server, [keyTag(input.sub.keyId)]);
    const sse = input.transport === "sse";
    const att: Attachment = { sub: input.sub, lastSeq: -1, sse, openedAt: Date.now() };
    server.serializeAttachment(att);
    this.sockets.set(server, att);
    this.joining.set(server, []);
    void this.join(input, server, {
      send: (e) => server.send(sse ? sseFrame(e) : e.json),
      done: (lastSeq) => {
        att.lastSeq = lastSeq;
        server.serializeAttachment(att);
      },
      fail: () => server.close(1011, "replay failed; reconnect with ?after="),
    });
    const headers = input.protocol ? { "Sec-WebSocket-Protocol": input.protocol } : undefined;
    return new Response(null, { status: 101, webSocket: client, headers });
  }

  /**
   * Replays the log after the connection's cursor (or only notes where "now" is), then flushes what
   * was dispatched meanwhile, skipping what the replay already sent: no gap, no duplicate.
   */
  private async join(
    input: HubConnect,
    key: object,
    io: { send: (e: HubEvent) => void; done: (lastSeq: number) => void; fail: () => void },
  ): Promise<void> {
    const db = createDb(this.env.DB);
    let lastSeq = -1;
    try {
      let cursor = input.afterSeq;
      for (;;) {
        if (cursor === null) {
          lastSeq = await headSeq(db, input.accountId);
        } else {
          for (;;) {
            const { rows, head } = await eventsAfterSeq(db, input.accountId, cursor, PAGE, input.sub.inboxIds);
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
      this.joining.delete(key);
      io.fail();
      return;
    }
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
    this.advance();
  }

  /**
   * Takes committed events (any order; duplicates and already-delivered ones are ignored) and
   * dispatches them in seq order. Returns how many connections were open.
   */
  async publish(accountId: string, events: HubEvent[]): Promise<{ connections: number }> {
    const connections = this.sockets.size;
    if (connections === 0) {
      // Nobody listens: forget the position, so the next connection starts from D1's head
      // instead of reading back everything published while the hub was idle.
      if (this.head !== null) this.setHead(null);
      this.pending.clear();
      return { connections };
    }
    if (this.accountId === null) {
      this.accountId = accountId;
      this.ctx.storage.kv.put("account", accountId);
    }
    for (const e of events) if (this.head === null || e.seq > this.head) this.pending.set(e.seq, e);
    this.advance();
    return { connections };
  }

  /** Dispatches head + 1, head + 2, … from the pending set; on a gap, reads the missing ones from D1. */
  private advance(): void {
    if (this.head === null) return; // a joining connection sets it
    let head = this.head;
    for (let e = this.pending.get(head + 1); e; e = this.pending.get(head + 1)) {
      this.pending.delete(e.seq);
      this.dispatch(e);
      head = e.seq;
    }
    for (const seq of this.pending.keys()) if (seq <= head) this.pending.delete(seq);
    if (head !== this.head) this.setHead(head);
    if (this.pending.size > 0) void this.catchUp();
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
          this.pending.delete(e.seq);
          this.dispatch(e);
          this.setHead(e.seq);
        }
        if (rows.length < PAGE && !this.catchUpAgain) break;
      }
    } catch (err) {
      log.error("event hub catch-up failed; retried on the next publish or alarm", { error: String(err) });
    } finally {
      this.catchingUp = false;
    }
    if (this.head !== null) for (const seq of this.pending.keys()) if (seq <= this.head) this.pending.delete(seq);
    if (this.pending.size > 0) this.advance();
  }

  /** Sends one event to every live connection that wants it; joining ones buffer it. */
  private dispatch(e: HubEvent): void {
    let frame: string | null = null;
    for (const [ws, att] of this.sockets) {
      const buffer = this.joining.get(ws);
      if (buffer) buffer.push(e);
      else if (e.seq > att.lastSeq && subscriptionMatches(att.sub, e)) {
        if (att.sse) frame ??= sseFrame(e);
        this.send(ws, att.sse ? (frame as string) : e.json);
      }
    }
  }

  private send(ws: WebSocket, text: string): void {
    try {
      ws.send(text);
    } catch {
      this.sockets.delete(ws); // closed under us; webSocketClose may never come
      this.forgetIfIdle();
    }
  }

  private close(ws: WebSocket, code: number, reason: string): void {
    this.sockets.delete(ws);
    this.joining.delete(ws);
    try {
      ws.close(code, reason);
    } catch {
      // already closed
    }
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
    this.pending.clear();
    if (this.head !== null) this.setHead(null);
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

  /** Heartbeats, the SSE age limit, and a check for events whose publish never arrived. */
  override async alarm(): Promise<void> {
    const now = Date.now();
    let sse = 0;
    for (const [ws, att] of this.sockets) {
      if (!att.sse) continue;
      if (now - att.openedAt >= MAX_SSE_MS) this.close(ws, 1000, "max_duration");
      else {
        this.send(ws, ": heartbeat\n\n");
        sse++;
      }
    }
    this.forgetIfIdle();
    if (this.head !== null && this.accountId !== null && this.sockets.size > 0) {
      try {
        const head = await headSeq(createDb(this.env.DB), this.accountId);
        if (head > this.head) await this.catchUp();
      } catch (err) {
        log.warn("event hub head check failed", { error: String(err) });
      }
    }
    if (sse > 0) await this.ctx.storage.setAlarm(now + HEARTBEAT_MS);
    else if (this.sockets.size > 0) await this.ctx.storage.setAlarm(now + WS_CATCH_UP_MS);
  }

  /** Ends every stream of a key (revoked) or of the account (suspended, keyId null). */
  disconnect(keyId: string | null, reason: string): number {
    let n = 0;
    for (const ws of keyId === null ? this.ctx.getWebSockets() : this.ctx.getWebSockets(keyTag(keyId))) {
      const att = this.sockets.get(ws);
      if (att?.sse) this.send(ws, `event: error\ndata: ${JSON.stringify({ code: reason })}\n\n`);
      this.close(ws, 4001, reason);
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
    this.sockets.delete(ws);
    this.joining.delete(ws);
    this.forgetIfIdle();
    try {
      ws.close(code === 1005 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    this.sockets.delete(ws);
    this.joining.delete(ws);
    this.forgetIfIdle();
  }
}

function keyTag(keyId: string): string {
  return `key:${keyId}`;
}
