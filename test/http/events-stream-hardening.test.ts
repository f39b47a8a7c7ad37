import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { runBatch } from "../../src/db/compiled";
import { type EventHub, JOIN_BUFFER_MAX, REPLAY_MAX } from "../../src/durable-objects/event-hub";
import { eventHub, type HubConnect } from "../../src/durable-objects/event-hub.client";
import { type EventType, eventStatement, publishEvents } from "../../src/features/events/events.service";
import { forAccount, systemContext } from "../../src/lib/context";
import type { HubEvent } from "../../src/lib/event-stream";
import { createAccount, createKey, type TestAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";

// The review's findings on the realtime streams (issue 18 part 1): each test is the attack.

function sseReader(body: ReadableStream<Uint8Array>) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
  return {
    // biome-ignore lint/suspicious/noExplicitAny: the event JSON
    async next(waitMs = 5_000): Promise<{ id?: string; event?: string; data?: any } | null> {
      const deadline = Date.now() + waitMs;
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const raw = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          // biome-ignore lint/suspicious/noExplicitAny: as above
          const frame: { id?: string; event?: string; data?: any } = {};
          for (const line of raw.split("\n")) {
            if (line.startsWith("id: ")) frame.id = line.slice(4);
            else if (line.startsWith("event: ")) frame.event = line.slice(7);
            else if (line.startsWith("data: ")) frame.data = JSON.parse(line.slice(6));
          }
          if (frame.data !== undefined) return frame;
          continue;
        }
        const left = deadline - Date.now();
        if (left <= 0) return null;
        pending ??= reader.read();
        const result = await Promise.race([pending, new Promise<"t">((r) => setTimeout(() => r("t"), left))]);
        if (result === "t") return null;
        pending = null;
        if (result.done) return null;
        buffer += decoder.decode(result.value, { stream: true });
      }
    },
    close: () => reader.cancel().catch(() => undefined),
  };
}

function openSse(key: string, query = "") {
  return exports.default.fetch(
    new Request(`http://localhost/v1/events/stream${query}`, { headers: { Authorization: `Bearer ${key}` } }),
  );
}

async function stream(key: string, query = "") {
  const res = await openSse(key, query);
  expect(res.status, res.status === 200 ? "" : await res.clone().text()).toBe(200);
  return sseReader(res.body as ReadableStream<Uint8Array>);
}

function openWs(key: string, query = "") {
  return exports.default.fetch(
    new Request(`http://localhost/v1/events/ws${query}`, {
      headers: { Upgrade: "websocket", Authorization: `Bearer ${key}` },
    }),
  );
}

/** A client end of a stream socket that records its messages and its close. */
function watch(ws: WebSocket) {
  ws.accept();
  const received: string[] = [];
  let closed: { code: number; reason: string } | null = null;
  const waiters: (() => void)[] = [];
  ws.addEventListener("message", (m) => {
    received.push(String(m.data));
    for (const w of waiters.splice(0)) w();
  });
  ws.addEventListener("close", (e) => {
    closed = { code: e.code, reason: e.reason };
    for (const w of waiters.splice(0)) w();
  });
  return {
    ws,
    received,
    get closed() {
      return closed;
    },
    /** Resolves once the socket closed (or `waitMs` passed). */
    async closing(waitMs = 5_000) {
      const deadline = Date.now() + waitMs;
      while (!closed && Date.now() < deadline) {
        await Promise.race([
          new Promise<void>((r) => waiters.push(r)),
          new Promise((r) => setTimeout(r, deadline - Date.now())),
        ]);
      }
      return closed;
    },
  };
}

async function socket(key: string, query = "") {
  const res = await openWs(key, query);
  expect(res.status, res.status === 101 ? "" : await res.clone().text()).toBe(101);
  return watch(res.webSocket as WebSocket);
}

async function produce(owner: TestAccount, type: EventType, inboxId: string | null): Promise<string> {
  const ctx = forAccount(systemContext(env), owner.account.id);
  const event = eventStatement(ctx, type, { inboxId }, { inbox_id: inboxId });
  await runBatch(ctx.db, [event.statement]);
  await publishEvents(env, [event.id]);
  return event.id;
}

async function hubConnections(accountId: string, n: number) {
  for (let i = 0; i < 200; i++) {
    const s = await eventHub(env, accountId).stats();
    if (s.sse + s.ws === n) return s;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`hub never reached ${n} connections`);
}

/** The hub's private state, for the tests that reach into it. */
interface HubInside {
  sockets: Map<WebSocket, { openedAt: number; id: string }>;
  joining: Map<WebSocket, HubEvent[]>;
  head: number | null;
  committed: EventHub["committed"];
}

function inside<T>(accountId: string, fn: (hub: HubInside, state: DurableObjectState) => T | Promise<T>) {
  return runInDurableObject(eventHub(env, accountId), (hub, state) => fn(hub as unknown as HubInside, state));
}

describe("event-type wildcards (CPU DoS of the hub)", () => {
  it("a 60-star pattern is validated and matched in linear time, for streams and for the schema", async () => {
    const owner = await createAccount("stars");
    const stars = "*".repeat(60);
    // The schema's "matches some type" check used the same backtracking regex.
    expectError(await call("GET", `/v1/events/stream?type=${stars}z`, { key: owner.key }), 422, "validation_error");
    const s = await stream(owner.key, `?type=${stars}t&type=m${"*".repeat(30)}.${"*".repeat(30)}t`);
    await hubConnections(owner.account.id, 1);
    // message.bounced matches neither pattern: the worst case for a backtracking matcher.
    await produce(owner, "message.bounced", owner.inbox.id);
    const sent = await produce(owner, "message.sent", owner.inbox.id);
    const frame = await s.next();
    expect(frame?.id).toBe(sent);
    // The hub still serves everyone else: a second stream opens and gets the next event.
    const other = await stream(owner.key);
    await hubConnections(owner.account.id, 2);
    const next = await produce(owner, "message.sent", owner.inbox.id);
    expect((await other.next())?.id).toBe(next);
    await Promise.all([s.close(), other.close()]);
  });
});

describe("revocation and suspension reach every stream", () => {
  it("a stream that passed auth before its key was revoked is closed by the hub when it connects", async () => {
    const owner = await createAccount("race");
    const doomed = await createKey(owner, { name: "doomed" });
    expect((await call("DELETE", `/v1/api-keys/${doomed.id}`, { key: owner.key })).status).toBe(200);
    // The request authenticated before the revocation; it reaches the hub only now, after the
    // revocation's disconnect found nothing to close.
    const connect: HubConnect = {
      accountId: owner.account.id,
      transport: "ws",
      sub: { keyId: doomed.id, types: [], inboxId: null, inboxIds: null },
      afterSeq: null,
      cap: 10,
      accountCap: 25,
    };
    const res = await eventHub(env, owner.account.id).fetch("https://event-hub/connect", {
      headers: { "x-hub-connect": JSON.stringify(connect), Upgrade: "websocket" },
    });
    expect(res.status).toBe(101);
    const ws = watch(res.webSocket as WebSocket);
    expect(await ws.closing()).toMatchObject({ code: 4001, reason: "api_key_revoked" });
    await hubConnections(owner.account.id, 0);
    // Events committed afterwards never reach it.
    await produce(owner, "message.sent", owner.inbox.id);
    expect(ws.received).toEqual([]);
  });

  it("a suspended account's and a revoked key's open WebSockets close even when the disconnect push was lost", async () => {
    const owner = await createAccount("suspend");
    const second = await createKey(owner, { name: "second" });
    const a = await socket(owner.key);
    const b = await socket(second.key);
    await hubConnections(owner.account.id, 2);
    // Revoked in D1 only (as if the push to the hub failed): the hub's periodic check ends it.
    await env.DB.prepare("UPDATE api_keys SET revoked_at = ? WHERE id = ?").bind(Date.now(), second.id).run();
    expect(await b.closing(8_000)).toMatchObject({ code: 4001, reason: "api_key_revoked" });
    expect(a.closed).toBeNull();
    // Suspended, again without the push: the open socket of the account's other key ends too.
    await env.DB.prepare("UPDATE accounts SET status = 'suspended' WHERE id = ?").bind(owner.account.id).run();
    expect(await a.closing(8_000)).toMatchObject({ code: 4001, reason: "account_suspended" });
    await hubConnections(owner.account.id, 0);
  });

  it("suspension through the operator API closes the account's streams", async () => {
    const owner = await createAccount("suspend-api");
    const ws = await socket(owner.key);
    const s = await stream(owner.key);
    await hubConnections(owner.account.id, 2);
    const res = await call("PATCH", `/v1/admin/accounts/${owner.account.id}`, {
      key: "test-admin-token-0123456789",
      body: { status: "suspended" },
    });
    expect(res.status, res.text).toBe(200);
    expect(await ws.closing()).toMatchObject({ code: 4001, reason: "account_suspended" });
    expect(await s.next()).toMatchObject({ event: "error", data: { code: "account_suspended" } });
  });

  it("a WebSocket ends after the maximum stream lifetime, like an SSE stream", async () => {
    const owner = await createAccount("lifetime");
    const ws = await socket(owner.key);
    await hubConnections(owner.account.id, 1);
    // 31 minutes later, as far as the hub can tell.
    await inside(owner.account.id, async (hub, state) => {
      for (const conn of hub.sockets.values()) conn.openedAt -= 31 * 60_000;
      await state.storage.setAlarm(Date.now());
    });
    expect(await ws.closing()).toMatchObject({ code: 1000, reason: "max_duration" });
    await hubConnections(owner.account.id, 0);
  });
});

describe("connection caps", () => {
  it("caps open streams per account across all its keys (sandbox 25) with 429 connection_limit_reached", async () => {
    const owner = await createAccount("account-cap");
    const k2 = await createKey(owner, { name: "two" });
    const k3 = await createKey(owner, { name: "three" });
    const open = [
      ...(await Promise.all(Array.from({ length: 10 }, () => socket(owner.key)))),
      ...(await Promise.all(Array.from({ length: 10 }, () => socket(k2.key)))),
      ...(await Promise.all(Array.from({ length: 5 }, () => socket(k3.key)))),
    ];
    await hubConnections(owner.account.id, 25);
    // k3 has 5 of its 10, but the account is full.
    const refused = await openWs(k3.key);
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as { error: { code: string; details: unknown } };
    expect(body.error.code).toBe("connection_limit_reached");
    expect(body.error.details).toEqual({ limit: 25, open: 25, scope: "account" });
    expect((await openSse(k3.key)).status).toBe(429);
    expect((await eventHub(env, owner.account.id).stats()).ws).toBe(25);
    // Another account's hub is its own.
    const stranger = await createAccount("stranger");
    const theirs = await socket(stranger.key);
    for (const s of [...open, theirs]) s.ws.close(1000, "done");
    await hubConnections(owner.account.id, 0);
  });

  it("a key restricted to 100 inboxes streams (its subscription no longer rides in the 2 KiB attachment)", async () => {
    const owner = await createAccount("many-inboxes");
    const tag = crypto.randomUUID().replace(/-/g, "").slice(0, 10);
    await env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 99)
       INSERT INTO inboxes (id, account_id, username, domain, address, labels, created_at, updated_at)
       SELECT 'inb_' || ?1 || printf('%016d', i), ?2, 'u' || ?1 || i, 'mailbot.test',
              'u' || ?1 || i || '@mailbot.test', '[]', ?3, ?3 FROM n`,
    )
      .bind(tag, owner.account.id, Date.now())
      .run();
    const ids = (
      await env.DB.prepare("SELECT id FROM inboxes WHERE account_id = ? ORDER BY id").bind(owner.account.id).all<{
        id: string;
      }>()
    ).results.map((r) => r.id);
    expect(ids).toHaveLength(100);
    const restricted = await createKey(owner, { name: "wide", scopes: ["read"], inbox_ids: ids });
    const s = await stream(restricted.key, `?type=${"message.*"}`);
    const ws = await socket(restricted.key);
    await hubConnections(owner.account.id, 2);
    const last = ids[99] as string;
    const id = await produce(owner, "message.sent", last);
    expect((await s.next())?.id).toBe(id);
    await s.close();
    ws.ws.close(1000, "done");
    await hubConnections(owner.account.id, 0);
    // Nothing is left behind: no socket counted under the key, no stored subscription.
    const left = await inside(owner.account.id, (_hub, state) => ({
      sockets: state.getWebSockets().length,
      subs: [...state.storage.kv.list({ prefix: "sub:" })].length,
    }));
    expect(left).toEqual({ sockets: 0, subs: 0 });
  });
});

describe("replay depth and hub memory", () => {
  it("a cursor more than 10,000 events behind is 410 cursor_too_old, before the hub reads the log", async () => {
    const owner = await createAccount("deep");
    const anchor = await produce(owner, "message.sent", owner.inbox.id);
    const base = (await env.DB.prepare("SELECT seq FROM events WHERE id = ?").bind(anchor).first<{ seq: number }>())
      ?.seq as number;
    const tag = Array.from({ length: 8 }, () => "abcdefghijklmnopqrstuvwxyz"[Math.floor(Math.random() * 26)]).join("");
    await env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?3)
       INSERT INTO events (id, account_id, type, inbox_id, data, created_at, seq, dispatched_at)
       SELECT 'evt_' || ?1 || printf('%018d', i), ?2, 'message.delivered', NULL, '{}', ?4, ?5 + i, ?4 FROM n`,
    )
      .bind(tag, owner.account.id, REPLAY_MAX + 1, Date.now(), base)
      .run();
    const res = await call("GET", `/v1/events/stream?after=${anchor}`, { key: owner.key });
    expectError(res, 410, "cursor_too_old");
    expect(res.body.error.details).toEqual({ behind: REPLAY_MAX + 1, limit: REPLAY_MAX });
    expect((await openWs(owner.key, `?after=${anchor}`)).status).toBe(410);
    expect(await eventHub(env, owner.account.id).stats()).toMatchObject({ sse: 0, ws: 0 });
    // A cursor within reach still replays.
    const recent = `evt_${tag}${String(REPLAY_MAX).padStart(18, "0")}`;
    const s = await stream(owner.key, `?after=${recent}`);
    expect((await s.next())?.id).toBe(`evt_${tag}${String(REPLAY_MAX + 1).padStart(18, "0")}`);
    await s.close();
  });

  it("a replay that falls too far behind the live events is closed with 1013 instead of buffering without bound", async () => {
    const owner = await createAccount("buffer");
    const ws = await socket(owner.key);
    await hubConnections(owner.account.id, 1);
    // As if its replay were still running with a full buffer of events dispatched meanwhile.
    await inside(owner.account.id, (hub) => {
      const [sock] = [...hub.sockets.keys()];
      const filler: HubEvent = { id: "evt_x", seq: 0, type: "message.sent", inboxId: null, json: "{}" };
      hub.joining.set(sock as WebSocket, Array(JOIN_BUFFER_MAX).fill(filler));
    });
    await produce(owner, "message.sent", owner.inbox.id);
    expect(await ws.closing()).toMatchObject({ code: 1013 });
    await hubConnections(owner.account.id, 0);
  });

  it("a commit notice ahead of the log (racing or stale) dispatches what D1 holds, once and in order", async () => {
    const owner = await createAccount("notice");
    const ws = await socket(owner.key);
    await hubConnections(owner.account.id, 1);
    const first = await produce(owner, "message.sent", owner.inbox.id);
    for (let i = 0; i < 50 && ws.received.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(JSON.parse(ws.received[0] as string).id).toBe(first);
    // A notice for seqs D1 does not have (yet): the hub reads, finds nothing new, sends nothing.
    const head = await inside(owner.account.id, async (hub) => {
      await hub.committed(owner.account.id, (hub.head as number) + 10_000);
      return hub.head;
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(ws.received).toHaveLength(1);
    // The log moves on: exactly the next event, once.
    const next = await produce(owner, "message.delivered", owner.inbox.id);
    for (let i = 0; i < 100 && ws.received.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    expect(ws.received.map((m) => JSON.parse(m as string).id)).toEqual([first, next]);
    expect(await inside(owner.account.id, (hub) => hub.head)).toBe((head as number) + 1);
    ws.ws.close(1000, "done");
  });
});
