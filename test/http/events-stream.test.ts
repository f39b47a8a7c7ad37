import { env, exports } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client";
import { runBatch } from "../../src/db/compiled";
import { accounts } from "../../src/db/schema";
import { eventHub } from "../../src/durable-objects/event-hub.client";
import { type EventType, eventStatement, publishEvents } from "../../src/features/events/events.service";
import { forAccount, systemContext } from "../../src/lib/context";
import { createAccount, createKey, type TestAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { deliver, mail } from "../helpers/mail";

/** One parsed SSE frame that carried an event. */
interface Frame {
  id: string;
  event: string;
  // biome-ignore lint/suspicious/noExplicitAny: the event JSON, read field by field
  data: any;
}

/** Reads SSE frames off a stream; comment-only frames (heartbeats, the greeting) are skipped. */
function sseReader(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
  const comments: string[] = [];
  return {
    comments,
    /** The next event frame, or null when the stream ended or nothing came within `waitMs`. */
    async next(waitMs = 5_000): Promise<Frame | null> {
      const deadline = Date.now() + waitMs;
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const raw = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const frame: Partial<Frame> = {};
          for (const line of raw.split("\n")) {
            if (line.startsWith(":")) comments.push(line);
            else if (line.startsWith("id: ")) frame.id = line.slice(4);
            else if (line.startsWith("event: ")) frame.event = line.slice(7);
            else if (line.startsWith("data: ")) frame.data = JSON.parse(line.slice(6));
          }
          if (frame.data !== undefined) return frame as Frame;
          continue;
        }
        const left = deadline - Date.now();
        if (left <= 0) return null;
        pending ??= reader.read();
        const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), left));
        const result = await Promise.race([pending, timer]);
        if (result === "timeout") return null;
        pending = null;
        if (result.done) return null;
        buffer += decoder.decode(result.value, { stream: true });
      }
    },
    async close() {
      await reader.cancel().catch(() => undefined);
    },
  };
}

async function openSse(key: string | null, query = "", headers: Record<string, string> = {}) {
  const h: Record<string, string> = { ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  return exports.default.fetch(new Request(`http://localhost/v1/events/stream${query}`, { headers: h }));
}

async function stream(key: string, query = "", headers: Record<string, string> = {}) {
  const res = await openSse(key, query, headers);
  expect(res.status, res.status === 200 ? "" : await res.clone().text()).toBe(200);
  expect(res.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
  return sseReader(res.body as ReadableStream<Uint8Array>);
}

/** Collects a WebSocket's messages (each an event JSON). */
async function openWs(key: string | null, query = "", headers: Record<string, string> = {}) {
  const h: Record<string, string> = { Upgrade: "websocket", ...headers };
  if (key) h.Authorization = `Bearer ${key}`;
  const res = await exports.default.fetch(new Request(`http://localhost/v1/events/ws${query}`, { headers: h }));
  return res;
}

async function socket(key: string | null, query = "", headers: Record<string, string> = {}) {
  const res = await openWs(key, query, headers);
  expect(res.status, res.status === 101 ? "" : await res.clone().text()).toBe(101);
  const ws = res.webSocket as WebSocket;
  ws.accept();
  // biome-ignore lint/suspicious/noExplicitAny: event JSON
  const received: any[] = [];
  const waiters: (() => void)[] = [];
  let closed: { code: number; reason: string } | null = null;
  ws.addEventListener("message", (m) => {
    received.push(m.data === "pong" ? "pong" : JSON.parse(m.data as string));
    for (const w of waiters.splice(0)) w();
  });
  ws.addEventListener("close", (e) => {
    closed = { code: e.code, reason: e.reason };
    for (const w of waiters.splice(0)) w();
  });
  return {
    res,
    ws,
    received,
    get closed() {
      return closed;
    },
    /** Resolves once `n` messages arrived (or the socket closed, or `waitMs` passed). */
    async until(n: number, waitMs = 5_000) {
      const deadline = Date.now() + waitMs;
      while (received.length < n && !closed && Date.now() < deadline) {
        await Promise.race([
          new Promise<void>((r) => waiters.push(r)),
          new Promise((r) => setTimeout(r, deadline - Date.now())),
        ]);
      }
      return received;
    },
  };
}

/** Commits one event the way producers do (its own batch), then publishes it (or not). */
async function produce(
  owner: TestAccount,
  type: EventType,
  inboxId: string | null,
  opts: { publish?: boolean; data?: Record<string, unknown> } = {},
): Promise<string> {
  const ctx = forAccount(systemContext(env), owner.account.id);
  const event = eventStatement(ctx, type, { inboxId }, opts.data ?? { inbox_id: inboxId });
  await runBatch(ctx.db, [event.statement]);
  if (opts.publish !== false) await publishEvents(env, [event.id]);
  return event.id;
}

async function setTier(accountId: string, tier: string) {
  await createDb(env.DB).update(accounts).set({ tier }).where(eq(accounts.id, accountId)).run();
}

/** Waits until the hub counts `n` open connections (a replay runs after the stream opens). */
async function hubConnections(accountId: string, n: number) {
  for (let i = 0; i < 100; i++) {
    const s = await eventHub(env, accountId).stats();
    if (s.sse + s.ws === n) return s;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`hub never reached ${n} connections`);
}

describe("GET /v1/events/stream (SSE)", () => {
  it("delivers message.received when mail arrives, as id / event / data frames of the /v1/events JSON", async () => {
    const owner = await createAccount("sse");
    const s = await stream(owner.key);
    await hubConnections(owner.account.id, 1);
    await deliver(mail({ subject: "Live one" }), owner.inbox.address);
    const frame = await s.next();
    expect(frame?.event).toBe("message.received");
    expect(frame?.data).toMatchObject({
      id: frame?.id,
      type: "message.received",
      account_id: owner.account.id,
      data: { inbox_id: owner.inbox.id, subject: "Live one" },
    });
    // Exactly what GET /v1/events/:id answers.
    const stored = await call("GET", `/v1/events/${frame?.id}`, { key: owner.key });
    expect(frame?.data).toEqual(stored.body.data);
    expect(s.comments).toContain(": connected");
    await s.close();
  });

  it("resumes with Last-Event-ID: exactly the events committed while away, in order, then live", async () => {
    const owner = await createAccount("resume");
    const first = await stream(owner.key);
    await hubConnections(owner.account.id, 1);
    const a = await produce(owner, "inbox.enabled", owner.inbox.id);
    expect((await first.next())?.id).toBe(a);
    await first.close();

    const missed = [
      await produce(owner, "message.sent", owner.inbox.id),
      await produce(owner, "message.delivered", owner.inbox.id),
      await produce(owner, "message.bounced", owner.inbox.id),
    ];
    const again = await stream(owner.key, "", { "Last-Event-ID": a });
    const got = [await again.next(), await again.next(), await again.next()];
    expect(got.map((f) => f?.id)).toEqual(missed);
    expect(got.map((f) => f?.event)).toEqual(["message.sent", "message.delivered", "message.bounced"]);
    // Then live, with nothing repeated in between.
    await hubConnections(owner.account.id, 1);
    const live = await produce(owner, "inbox.disabled", owner.inbox.id);
    expect((await again.next())?.id).toBe(live);
    await again.close();

    // ?after= is the same cursor (for clients that cannot set headers).
    const viaQuery = await stream(owner.key, `?after=${missed[1]}`);
    expect((await viaQuery.next())?.id).toBe(missed[2]);
    expect((await viaQuery.next())?.id).toBe(live);
    await viaQuery.close();
  });

  it("never loses an event committed during the replay, nor sends it twice", async () => {
    const owner = await createAccount("race");
    const before = await produce(owner, "message.sent", owner.inbox.id);
    const backlog: string[] = [];
    for (let i = 0; i < 5; i++) backlog.push(await produce(owner, "message.delivered", owner.inbox.id));
    const s = await stream(owner.key, `?after=${before}`);
    // Produced while the stream's replay may still be reading D1.
    const during = await Promise.all([1, 2, 3].map(() => produce(owner, "message.sent", owner.inbox.id)));
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await s.next())?.id ?? "none");
    expect(ids.slice(0, 5)).toEqual(backlog);
    expect(new Set(ids).size).toBe(8);
    expect([...ids.slice(5)].sort()).toEqual([...during].sort());
    expect(await s.next(300)).toBeNull();
    await s.close();
  });

  it("a resuming stream skips what its replay sent when the same events are published late", async () => {
    const owner = await createAccount("join");
    const live = await stream(owner.key);
    await hubConnections(owner.account.id, 1);
    const anchor = await produce(owner, "inbox.enabled", owner.inbox.id);
    expect((await live.next())?.id).toBe(anchor);
    // Committed, not yet published: the joining stream's replay reads them from D1, and then
    // their publishes arrive (during the replay or after it): neither stream may see them twice.
    const late = [
      await produce(owner, "message.sent", owner.inbox.id, { publish: false }),
      await produce(owner, "message.delivered", owner.inbox.id, { publish: false }),
    ];
    const joining = await stream(owner.key, `?after=${anchor}`);
    await publishEvents(env, late);
    const next = await produce(owner, "message.bounced", owner.inbox.id);
    for (const s of [joining, live]) {
      expect([(await s.next())?.id, (await s.next())?.id, (await s.next())?.id]).toEqual([...late, next]);
      expect(await s.next(300)).toBeNull();
    }
    await Promise.all([joining.close(), live.close()]);
  });

  it("after everyone left, a new stream starts from now: nothing replayed, nothing read back", async () => {
    const owner = await createAccount("idle");
    const first = await stream(owner.key);
    await hubConnections(owner.account.id, 1);
    await produce(owner, "message.sent", owner.inbox.id);
    expect(await first.next()).not.toBeNull();
    await first.close();
    await hubConnections(owner.account.id, 0);
    // Committed while nobody listens (one publish lost, to leave a gap behind the hub's last position).
    await produce(owner, "message.sent", owner.inbox.id, { publish: false });
    await produce(owner, "message.delivered", owner.inbox.id);
    expect((await eventHub(env, owner.account.id).stats()).head).toBeNull();
    const second = await stream(owner.key);
    await hubConnections(owner.account.id, 1);
    const fresh = await produce(owner, "message.bounced", owner.inbox.id);
    expect((await second.next())?.id).toBe(fresh);
    expect(await second.next(300)).toBeNull();
    await second.close();
  });

  it("delivers in commit order even when publishes arrive out of order or never", async () => {
    const owner = await createAccount("order");
    const s = await stream(owner.key);
    await hubConnections(owner.account.id, 1);
    const e1 = await produce(owner, "message.sent", owner.inbox.id, { publish: false });
    const e2 = await produce(owner, "message.delivered", owner.inbox.id, { publish: false });
    const e3 = await produce(owner, "message.bounced", owner.inbox.id, { publish: false });
    // e1's publish is lost (a crash between commit and publish); e3's overtakes e2's.
    await publishEvents(env, [e3]);
    await publishEvents(env, [e2]);
    expect([(await s.next())?.id, (await s.next())?.id, (await s.next())?.id]).toEqual([e1, e2, e3]);
    expect(await s.next(300)).toBeNull();
    await s.close();
  });

  it("filters by type (repeatable, * wildcards) and inbox_id", async () => {
    const owner = await createAccount("filters");
    const other = await call("POST", "/v1/inboxes", { key: owner.key, body: { username: "other" } });
    expect(other.status).toBe(201);
    const otherId = other.body.data.id;
    const messages = await stream(owner.key, "?type=message.*");
    const two = await stream(owner.key, "?type=inbox.disabled&type=message.bounced");
    const inbox = await stream(owner.key, `?inbox_id=${otherId}`);
    await hubConnections(owner.account.id, 3);
    const m1 = await produce(owner, "message.sent", owner.inbox.id);
    const i1 = await produce(owner, "inbox.disabled", otherId);
    const m2 = await produce(owner, "message.bounced", otherId);
    expect([(await messages.next())?.id, (await messages.next())?.id]).toEqual([m1, m2]);
    expect([(await two.next())?.id, (await two.next())?.id]).toEqual([i1, m2]);
    expect([(await inbox.next())?.id, (await inbox.next())?.id]).toEqual([i1, m2]);
    for (const s of [messages, two, inbox]) expect(await s.next(200)).toBeNull();
    await Promise.all([messages, two, inbox].map((s) => s.close()));

    expectError(
      await call("GET", "/v1/events/stream?type=message.recieved", { key: owner.key }),
      422,
      "validation_error",
    );
    expectError(await call("GET", "/v1/events/stream?type=nothing.*", { key: owner.key }), 422, "validation_error");
  });

  it("a restricted key's stream holds only its inboxes' events, never account-level ones or others' inboxes", async () => {
    const owner = await createAccount("restricted");
    const other = await call("POST", "/v1/inboxes", { key: owner.key, body: { username: "elsewhere" } });
    const restricted = await createKey(owner, { name: "one inbox", scopes: ["read"], inbox_ids: [owner.inbox.id] });
    const full = await stream(owner.key);
    const narrow = await stream(restricted.key);
    await hubConnections(owner.account.id, 2);
    const accountLevel = await produce(owner, "domain.verified", null);
    const elsewhere = await produce(owner, "message.sent", other.body.data.id);
    const mine = await produce(owner, "message.sent", owner.inbox.id);
    expect([(await full.next())?.id, (await full.next())?.id, (await full.next())?.id]).toEqual([
      accountLevel,
      elsewhere,
      mine,
    ]);
    expect((await narrow.next())?.id).toBe(mine);
    expect(await narrow.next(300)).toBeNull();
    await Promise.all([full.close(), narrow.close()]);

    // Resuming replays with the same restriction; a cursor it cannot see is 404, like /v1/events.
    const first = await produce(owner, "message.sent", owner.inbox.id);
    await produce(owner, "domain.verified", null);
    await produce(owner, "message.sent", other.body.data.id);
    const last = await produce(owner, "message.delivered", owner.inbox.id);
    const resumed = await stream(restricted.key, "", { "Last-Event-ID": first });
    expect((await resumed.next())?.id).toBe(last);
    expect(await resumed.next(300)).toBeNull();
    await resumed.close();
    expectError(
      await call("GET", "/v1/events/stream", { key: restricted.key, headers: { "Last-Event-ID": accountLevel } }),
      404,
      "not_found",
    );
  });

  it("refuses bad requests with the error envelope: no key, a key without read, a bad or foreign cursor", async () => {
    const owner = await createAccount("bad");
    const stranger = await createAccount("stranger");
    const sendOnly = await createKey(owner, { name: "send", scopes: ["send"] });
    expectError(await call("GET", "/v1/events/stream"), 401, "missing_api_key");
    expectError(await call("GET", "/v1/events/stream", { key: sendOnly.key }), 403, "insufficient_scope");
    expectError(
      await call("GET", "/v1/events/stream", { key: owner.key, headers: { "Last-Event-ID": "nope" } }),
      422,
      "validation_error",
    );
    expectError(await call("GET", "/v1/events/stream?after=evt_x", { key: owner.key }), 422, "validation_error");
    const foreign = await produce(stranger, "message.sent", stranger.inbox.id);
    expectError(await call("GET", `/v1/events/stream?after=${foreign}`, { key: owner.key }), 404, "not_found");
    expect((await eventHub(env, owner.account.id).stats()).sse).toBe(0);
  });

  it("100 concurrent streams (SSE and WebSocket) on one account all receive one event", async () => {
    const owner = await createAccount("fanout");
    await setTier(owner.account.id, "scale");
    const sse = await Promise.all(Array.from({ length: 60 }, () => stream(owner.key)));
    const sockets = await Promise.all(Array.from({ length: 40 }, () => socket(owner.key)));
    await hubConnections(owner.account.id, 100);
    const id = await produce(owner, "message.sent", owner.inbox.id);
    const frames = await Promise.all(sse.map((s) => s.next()));
    expect(frames.map((f) => f?.id)).toEqual(Array(60).fill(id));
    await Promise.all(sockets.map((s) => s.until(1)));
    expect(sockets.map((s) => s.received[0]?.id)).toEqual(Array(40).fill(id));
    await Promise.all(sse.map((s) => s.close()));
    for (const s of sockets) s.ws.close(1000, "done");
  });

  it("caps open streams per key by tier with a clear 429, and frees the slot when a stream closes", async () => {
    const owner = await createAccount("cap");
    const other = await createKey(owner, { name: "second" });
    const open = await Promise.all(Array.from({ length: 10 }, () => stream(owner.key)));
    const refused = await openSse(owner.key);
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { error: { code: string; details: unknown; message: string } };
    expect(body.error.code).toBe("connection_limit_reached");
    expect(body.error.details).toEqual({ limit: 10, open: 10, scope: "key" });
    expect(refused.headers.get("Retry-After")).toBe("5");
    // WebSockets count toward the same cap; another key of the account has its own.
    expect((await openWs(owner.key)).status).toBe(429);
    const otherStream = await stream(other.key);
    await open[0]?.close();
    let reopened: Response | null = null;
    for (let i = 0; i < 50 && reopened?.status !== 200; i++) {
      if (reopened) await new Promise((r) => setTimeout(r, 20));
      reopened = await openSse(owner.key);
    }
    expect(reopened?.status).toBe(200);
    await reopened?.body?.cancel();
    await Promise.all([...open.slice(1), otherStream].map((s) => s.close()));
  });

  it("ends a revoked key's streams", async () => {
    const owner = await createAccount("revoke");
    const doomed = await createKey(owner, { name: "doomed" });
    const s = await stream(doomed.key);
    const ws = await socket(doomed.key);
    await hubConnections(owner.account.id, 2);
    expect((await call("DELETE", `/v1/api-keys/${doomed.id}`, { key: owner.key })).status).toBe(200);
    // The SSE stream says why, then ends; the socket closes.
    expect(await s.next()).toMatchObject({ event: "error", data: { code: "api_key_revoked" } });
    expect(await s.next(1_000)).toBeNull();
    await ws.until(1, 2_000);
    expect(ws.closed).toMatchObject({ code: 4001, reason: "api_key_revoked" });
    expect(await eventHub(env, owner.account.id).stats()).toMatchObject({ sse: 0, ws: 0 });
  });
});

describe("GET /v1/events/ws (WebSocket)", () => {
  it("delivers message.received as the event JSON", async () => {
    const owner = await createAccount("ws");
    const ws = await socket(owner.key);
    await hubConnections(owner.account.id, 1);
    await deliver(mail({ subject: "Over the socket" }), owner.inbox.address);
    const [event] = await ws.until(1);
    expect(event).toMatchObject({ type: "message.received", data: { subject: "Over the socket" } });
    const stored = await call("GET", `/v1/events/${event.id}`, { key: owner.key });
    expect(event).toEqual(stored.body.data);
    ws.ws.send("ping");
    await ws.until(2);
    expect(ws.received[1]).toBe("pong");
    ws.ws.close(1000, "done");
  });

  it("resumes with ?after=: exactly the three events committed while away, in order, then live", async () => {
    const owner = await createAccount("ws-resume");
    const first = await socket(owner.key);
    await hubConnections(owner.account.id, 1);
    const a = await produce(owner, "inbox.enabled", owner.inbox.id);
    expect((await first.until(1))[0].id).toBe(a);
    first.ws.close(1000, "bye");
    const missed = [
      await produce(owner, "message.sent", owner.inbox.id),
      await produce(owner, "message.delivered", owner.inbox.id),
      await produce(owner, "message.bounced", owner.inbox.id),
    ];
    const again = await socket(owner.key, `?after=${a}`);
    await again.until(3);
    expect(again.received.map((e) => e.id)).toEqual(missed);
    const live = await produce(owner, "inbox.disabled", owner.inbox.id);
    await again.until(4);
    expect(again.received.map((e) => e.id)).toEqual([...missed, live]);
    again.ws.close(1000, "done");
  });

  it("takes the key from Sec-WebSocket-Protocol (browsers) and answers with the mailbot subprotocol", async () => {
    const owner = await createAccount("ws-browser");
    const restricted = await createKey(owner, { name: "inbox", scopes: ["read"], inbox_ids: [owner.inbox.id] });
    const ws = await socket(null, "", { "Sec-WebSocket-Protocol": `mailbot, ${restricted.key}` });
    expect(ws.res.headers.get("Sec-WebSocket-Protocol")).toBe("mailbot");
    await hubConnections(owner.account.id, 1);
    await produce(owner, "domain.verified", null);
    const mine = await produce(owner, "message.sent", owner.inbox.id);
    await ws.until(1);
    expect(ws.received.map((e) => e.id)).toEqual([mine]);
    ws.ws.close(1000, "done");
    // The header is read only on upgrades; a plain request with it is unauthenticated.
    expectError(
      await call("GET", "/v1/events", { headers: { "Sec-WebSocket-Protocol": `mailbot, ${owner.key}` } }),
      401,
      "missing_api_key",
    );
  });

  it("refuses a request that is not an upgrade, and a bad key", async () => {
    const owner = await createAccount("ws-bad");
    expectError(await call("GET", "/v1/events/ws", { key: owner.key }), 400, "websocket_upgrade_required");
    const res = await openWs("mb_notarealkey0000000000000000000000000");
    expect(res.status).toBe(401);
  });
});
