import {
  createExecutionContext,
  createMessageBatch,
  createScheduledController,
  getQueueResult,
  waitOnExecutionContext,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client";
import { runBatch } from "../../src/db/compiled";
import { webhookDispatches } from "../../src/db/schema";
import { eventStatement } from "../../src/features/events/events.service";
import { backoffSeconds, deliverOutbound } from "../../src/features/outbound/delivery.service";
import { SendMessageInput } from "../../src/features/outbound/outbound.schemas";
import { sendMessage } from "../../src/features/outbound/outbound.service";
import { newDispatch, sweepWebhooks } from "../../src/features/webhooks/dispatch";
import { handleQueue } from "../../src/triggers/queue";
import { createAccount } from "../helpers/accounts";
import { call } from "../helpers/api";
import { auditEntries, jobContext, messageRow, serviceContext, settledMessage, unique, worker } from "../helpers/db";
import { deliver, mail } from "../helpers/mail";
import { smtpReceived } from "../helpers/outbound";
import { endpointOnReceiver, receiver } from "../helpers/webhooks";

describe("queue consumer", () => {
  it("a transient failure is retried with a delay, a permanent one fails with the reason", async () => {
    const a = await createAccount("consumer");
    const temp = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [unique("datatemp-")], subject: "later", body_text: "x" },
    });
    const perm = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [unique("perm-")], subject: "never", body_text: "x" },
    });
    // The permanent failure ends the message at once; a 550 at RCPT is a hard bounce, so the
    // message ends `bounced` (the reason stays in last_error).
    const failed = await settledMessage(perm.body.data.id);
    await vi.waitFor(async () => expect((await messageRow(perm.body.data.id))?.status).toBe("bounced"));
    expect(failed.last_error).toMatch(/550/);
    const permAudit = (await auditEntries({ accountId: a.account.id, targetId: perm.body.data.id })).map(
      (e) => e.action,
    );
    expect(permAudit).toEqual(["message.send_attempted", "message.failed", "message.bounced"]);

    // The transient one goes back to queued with its error, and the queue message is retried.
    await vi.waitFor(
      async () => {
        const r = await messageRow(temp.body.data.id);
        expect(r?.attempts).toBeGreaterThanOrEqual(1);
        expect(r?.status).toBe("queued");
      },
      { timeout: 10_000, interval: 50 },
    );
    expect((await messageRow(temp.body.data.id))?.last_error).toMatch(/451/);
    const deferred = (await auditEntries({ accountId: a.account.id, targetId: temp.body.data.id })).find(
      (e) => e.action === "message.send_deferred",
    );
    expect(deferred?.metadata).toMatchObject({ attempt: 1, retry_in_seconds: expect.any(Number) });

    // Driven by hand: the consumer retries the message with a delay, and acknowledges nothing.
    const batch = createMessageBatch("mailbot-outbound", [
      {
        id: "q1",
        timestamp: new Date(),
        attempts: 2,
        body: { v: 1, message_id: temp.body.data.id, account_id: a.account.id },
      },
    ]);
    const retry = vi.spyOn(batch.messages[0] as Message<unknown>, "retry");
    const ctx = createExecutionContext();
    await worker.queue(batch, env, ctx);
    await waitOnExecutionContext(ctx);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryMessages.map((m) => m.msgId)).toEqual(["q1"]);
    expect(retry).toHaveBeenCalledWith({ delaySeconds: expect.any(Number) });
    expect((retry.mock.calls[0]?.[0] as { delaySeconds: number } | undefined)?.delaySeconds).toBeGreaterThan(0);
    expect(backoffSeconds(1)).toBeLessThanOrEqual(36);
    expect(backoffSeconds(8)).toBeGreaterThanOrEqual(2880);
  });

  it("a redelivered queue message never sends twice; a bad body does not fail the batch", async () => {
    const a = await createAccount("redelivery");
    const to = unique("once");
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [to], subject: "only once", body_text: "x" },
    });
    await settledMessage(res.body.data.id);
    expect(await smtpReceived(to)).toHaveLength(1);

    const job = { v: 1, message_id: res.body.data.id, account_id: a.account.id };
    const batch = createMessageBatch<unknown>("mailbot-outbound", [
      { id: "r1", timestamp: new Date(), attempts: 1, body: job },
      { id: "r2", timestamp: new Date(), attempts: 1, body: { nonsense: true } },
      { id: "r3", timestamp: new Date(), attempts: 2, body: job },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env, ctx);
    await waitOnExecutionContext(ctx);
    const result = await getQueueResult(batch, ctx);
    expect(result.outcome).toBe("ok");
    expect(result.explicitAcks.sort()).toEqual(["r1", "r2", "r3"]);
    expect(await smtpReceived(to)).toHaveLength(1);
    expect((await messageRow(res.body.data.id))?.attempts).toBe(1);

    // Two consumers racing on one queued message: the lease lets exactly one send.
    const to2 = unique("race");
    const ctxA = serviceContext(a.account.id, { actor: { type: "api_key", id: null }, unqueued: true });
    const queued = await sendMessage(
      ctxA,
      a.inbox.id,
      SendMessageInput.parse({ to: [to2], subject: "race", body_text: "x" }),
    );
    const outcomes = await Promise.all([
      deliverOutbound(jobContext(), { v: 1, message_id: queued.id, account_id: a.account.id }),
      deliverOutbound(jobContext(), { v: 1, message_id: queued.id, account_id: a.account.id }),
    ]);
    expect(outcomes.map((o) => o.kind).sort()).toEqual(["done", "retry"]);
    expect(await smtpReceived(to2)).toHaveLength(1);
  });

  it("a job whose message is not a claimable send says why, and changes nothing", async () => {
    const a = await createAccount("claim");
    const b = await createAccount("claim-other");
    const ctxA = serviceContext(a.account.id, { actor: { type: "api_key", id: null }, unqueued: true });
    const queued = await sendMessage(
      ctxA,
      a.inbox.id,
      SendMessageInput.parse({ to: [unique("claim")], subject: "claim", body_text: "x" }),
    );
    // Another account's job naming this message: it is not there for that account.
    expect(await deliverOutbound(jobContext(), { v: 1, message_id: queued.id, account_id: b.account.id })).toEqual({
      kind: "done",
      status: "missing",
    });
    expect(await messageRow(queued.id)).toMatchObject({ status: "queued", attempts: 0 });
    // An inbound message is never sent.
    await deliver(mail({ to: a.inbox.address, subject: "in" }), a.inbox.address);
    const inbound = await env.DB.prepare("SELECT id FROM messages WHERE inbox_id = ? AND direction = 'inbound'")
      .bind(a.inbox.id)
      .first<{ id: string }>();
    expect(inbound).not.toBeNull();
    expect(
      await deliverOutbound(jobContext(), { v: 1, message_id: inbound?.id ?? "", account_id: a.account.id }),
    ).toEqual({
      kind: "done",
      status: "missing",
    });
    // Sent once; a redelivered job finds it terminal and sends nothing more.
    const job = { v: 1 as const, message_id: queued.id, account_id: a.account.id };
    expect(await deliverOutbound(jobContext(), job)).toEqual({ kind: "done", status: "sent" });
    expect(await deliverOutbound(jobContext(), job)).toEqual({ kind: "done", status: "sent" });
    expect(await messageRow(queued.id)).toMatchObject({ status: "sent", attempts: 1 });
  });

  it("a message another consumer holds waits for its lease; an expired lease (a consumer that died) is taken over", async () => {
    const a = await createAccount("lease");
    const ctxA = serviceContext(a.account.id, { actor: { type: "api_key", id: null }, unqueued: true });
    const to = unique("lease");
    const queued = await sendMessage(
      ctxA,
      a.inbox.id,
      SendMessageInput.parse({ to: [to], subject: "lease", body_text: "x" }),
    );
    const job = { v: 1 as const, message_id: queued.id, account_id: a.account.id };
    const now = Date.now();
    // A first attempt claimed it a moment ago and is still sending.
    await env.DB.prepare("UPDATE messages SET status = 'sending', attempts = 1, lease_until = ? WHERE id = ?")
      .bind(now + 60_000, queued.id)
      .run();
    const held = await deliverOutbound(jobContext({ at: now }), job);
    expect(held).toMatchObject({ kind: "retry", reason: "leased" });
    expect(held.kind === "retry" && held.delaySeconds).toBeGreaterThanOrEqual(60);
    expect(await messageRow(queued.id)).toMatchObject({ status: "sending", attempts: 1 });
    expect(await smtpReceived(to)).toHaveLength(0);
    // That consumer died: once its lease has run out the next attempt takes the message over.
    expect(await deliverOutbound(jobContext({ at: now + 61_000 }), job)).toEqual({ kind: "done", status: "sent" });
    expect(await messageRow(queued.id)).toMatchObject({ status: "sent", attempts: 2 });
    expect(await smtpReceived(to)).toHaveLength(1);
  });

  it("the dead-letter consumer marks what the queue gave up on as failed", async () => {
    const a = await createAccount("dlq");
    const ctxA = serviceContext(a.account.id, { actor: { type: "api_key", id: null }, unqueued: true });
    const queued = await sendMessage(
      ctxA,
      a.inbox.id,
      SendMessageInput.parse({ to: ["dlq@example.org"], subject: "lost", body_text: "x" }),
    );
    const batch = createMessageBatch("mailbot-outbound-dlq", [
      { id: "d1", timestamp: new Date(), attempts: 1, body: { v: 1, message_id: queued.id, account_id: a.account.id } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env, ctx);
    await waitOnExecutionContext(ctx);
    expect((await getQueueResult(batch, ctx)).explicitAcks).toEqual(["d1"]);
    const r = await messageRow(queued.id);
    expect(r).toMatchObject({ status: "failed" });
    expect(r?.last_error).toMatch(/dead_lettered/);
  });
});

describe("the webhook queue consumer", () => {
  /** A dispatch row that no queue message carries yet (the test drives the consumer itself). */
  async function pendingDispatch(key: string, accountId: string, url: string) {
    const hook = await call("POST", "/v1/webhooks", { key, body: { url } });
    expect(hook.status, hook.text).toBe(201);
    const event = await call("GET", "/v1/events?type=webhook.test&limit=1", { key });
    const row = newDispatch(
      { accountId, endpointId: hook.body.data.id, eventId: event.body.data[0].id, kind: "replay" },
      Date.now(),
    );
    await createDb(env.DB).insert(webhookDispatches).values(row).run();
    return { dispatchId: row.id, webhookId: hook.body.data.id as string, secret: hook.body.data.secret as string };
  }

  it("retries a failed attempt with the schedule's delay, acks bad bodies, never re-sends a finished dispatch", async () => {
    const a = await createAccount("consumer");
    const hook = receiver();
    const { dispatchId } = await pendingDispatch(a.key, a.account.id, hook.url);
    await hook.waitFor((d) => d.length === 1); // the creation's own webhook.test
    await hook.configure({ steps: [{ status: 500 }, { status: 429, retryAfter: "120" }] });

    const run = async (bindings: Cloudflare.Env, bodies: unknown[]) => {
      const batch = createMessageBatch(
        "mailbot-webhooks",
        bodies.map((body, i) => ({ id: `m${i}-${crypto.randomUUID()}`, timestamp: new Date(), attempts: 1, body })),
      );
      const spies = batch.messages.map((m) => ({ ack: vi.spyOn(m, "ack"), retry: vi.spyOn(m, "retry") }));
      await handleQueue(batch, bindings);
      return spies;
    };
    // The production schedule (no test override): the second attempt comes 30 s after the first.
    const production = { ...env, WEBHOOK_RETRY_SCHEDULE: undefined } as Cloudflare.Env;
    const [first, junk] = await run(production, [
      { v: 1, dispatch_id: dispatchId },
      { v: 99, what: "ever" },
    ]);
    expect(first?.retry).toHaveBeenCalledWith({ delaySeconds: 30 });
    expect(junk?.ack).toHaveBeenCalled();
    expect(junk?.retry).not.toHaveBeenCalled();

    // An early copy of the message (not due for 30 s) waits instead of sending.
    const [early] = await run(production, [{ v: 1, dispatch_id: dispatchId }]);
    expect(early?.retry).toHaveBeenCalledWith({ delaySeconds: expect.any(Number) });
    expect((await hook.deliveries()).length).toBe(2);

    // Due now: 429 with Retry-After: 120 is honoured.
    await env.DB.prepare("UPDATE webhook_dispatches SET next_attempt_at = 0 WHERE id = ?").bind(dispatchId).run();
    const [limited] = await run(production, [{ v: 1, dispatch_id: dispatchId }]);
    expect(limited?.retry).toHaveBeenCalledWith({ delaySeconds: 120 });

    await env.DB.prepare("UPDATE webhook_dispatches SET next_attempt_at = 0 WHERE id = ?").bind(dispatchId).run();
    const [ok] = await run(env, [{ v: 1, dispatch_id: dispatchId }]);
    expect(ok?.ack).toHaveBeenCalled();
    expect((await hook.deliveries()).length).toBe(4);

    // Redelivered after success: acked, nothing sent.
    const [redelivered] = await run(env, [{ v: 1, dispatch_id: dispatchId }]);
    expect(redelivered?.ack).toHaveBeenCalled();
    expect((await hook.deliveries()).length).toBe(4);
    const rows = await env.DB.prepare(
      "SELECT attempt, status_code, outcome FROM webhook_deliveries WHERE dispatch_id = ? ORDER BY attempt",
    )
      .bind(dispatchId)
      .all();
    expect(rows.results).toEqual([
      { attempt: 1, status_code: 500, outcome: "retrying" },
      { attempt: 2, status_code: 429, outcome: "retrying" },
      { attempt: 3, status_code: 200, outcome: "succeeded" },
    ]);
  });

  it("the cron sweep delivers events whose producer crashed before publishing, and dispatches whose message was lost", async () => {
    const a = await createAccount("sweep");
    const { hook, webhook } = await endpointOnReceiver(a.key);
    // An event committed with no publishEvents call after it (the producer died right there).
    const ctx = serviceContext(a.account.id);
    const orphan = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    await runBatch(ctx.db, [orphan.statement]);
    await new Promise((r) => setTimeout(r, 300));
    expect((await hook.deliveries()).some((d) => d.headers["webhook-id"] === orphan.id)).toBe(false);

    // A pending dispatch whose queue message vanished long ago.
    const lost = newDispatch(
      { accountId: a.account.id, endpointId: webhook.id, eventId: orphan.id, kind: "replay" },
      0,
    );
    await ctx.db.insert(webhookDispatches).values(lost).run();

    const swept = await sweepWebhooks(jobContext({ at: Date.now() + 120_000 }));
    expect(swept.events).toBeGreaterThanOrEqual(1);
    expect(swept.dispatches).toBeGreaterThanOrEqual(1);
    const got = await hook.waitFor((d) => d.filter((x) => x.headers["webhook-id"] === orphan.id).length === 2);
    expect(got.filter((x) => x.headers["webhook-id"] === orphan.id).every((x) => x.standardwebhooks)).toBe(true);
    const marked = await env.DB.prepare("SELECT dispatched_at FROM events WHERE id = ?")
      .bind(orphan.id)
      .first<{ dispatched_at: number | null }>();
    expect(marked?.dispatched_at).not.toBeNull();
    // A second sweep finds nothing left to do for this event.
    await sweepWebhooks(jobContext({ at: Date.now() + 120_000 }));
    await new Promise((r) => setTimeout(r, 500));
    expect((await hook.deliveries()).filter((x) => x.headers["webhook-id"] === orphan.id)).toHaveLength(2);
  });
});

describe("queue() routing", () => {
  it("queue(): keeps messages it has no consumer for (retry, never a silent ack)", async () => {
    const batch = createMessageBatch("mailbot-unknown", [
      { id: "m1", timestamp: new Date(), attempts: 1, body: { v: 1 } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env, ctx);
    const result = await getQueueResult(batch, ctx);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryBatch.retry).toBe(true);
  });
});

describe("scheduled()", () => {
  it("scheduled(): purges expired idempotency records and relay signatures only", async () => {
    const a = await createAccount();
    await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "keep" },
      headers: { "Idempotency-Key": "fresh" },
    });
    await env.DB.prepare(
      "INSERT INTO idempotency_keys (id, lookup, method, path, request_hash, state, created_at, expires_at) VALUES ('idem_old', 'old', 'POST', '/x', 'h', 'done', 0, 1)",
    ).run();
    const later = Date.now() + 3_600_000;
    await env.DB.prepare(
      "INSERT INTO relay_signatures (signature_hash, envelope_to, expires_at) VALUES ('old', 'a@x', 1), ('fresh', 'a@x', ?)",
    )
      .bind(later)
      .run();
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ scheduledTime: Date.now(), cron: "17 * * * *" }), env, ctx);
    await waitOnExecutionContext(ctx);
    const left = await env.DB.prepare("SELECT id FROM idempotency_keys").all<{ id: string }>();
    expect(left.results.map((r) => r.id)).not.toContain("idem_old");
    expect(left.results).toHaveLength(1);
    const relay = await env.DB.prepare("SELECT signature_hash FROM relay_signatures").all<{ signature_hash: string }>();
    expect(relay.results.map((r) => r.signature_hash)).toEqual(["fresh"]);
  });
});
