import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { runBatch } from "../../src/db/compiled";
import { webhookDispatches } from "../../src/db/schema";
import type { Bindings } from "../../src/env";
import { eventStatement, publishEvents } from "../../src/features/events/events.service";
import { newDispatch, sweepWebhooks } from "../../src/features/webhooks/dispatch";
import { createAccount } from "../helpers/accounts";
import { jobContext, serviceContext } from "../helpers/db";
import { endpointOnReceiver, eventOf } from "../helpers/webhooks";

/** The bindings with a webhook queue that records what is put on it (and delivers nothing). */
function recordingQueue() {
  const sent: unknown[] = [];
  const queue = {
    send: async (body: unknown) => {
      sent.push(body);
    },
    sendBatch: async (messages: { body: unknown }[]) => {
      for (const m of messages) sent.push(m.body);
    },
  };
  return { sent, env: { ...env, WEBHOOK_QUEUE: queue } as unknown as Bindings };
}

async function dispatchedAt(eventId: string) {
  const row = await env.DB.prepare("SELECT dispatched_at FROM events WHERE id = ?")
    .bind(eventId)
    .first<{ dispatched_at: number | null }>();
  return row?.dispatched_at ?? null;
}

describe("issue 17 item 3: the first webhook attempt starts right after the commit", () => {
  it("is made by the publisher itself, not the queue; the event is marked dispatched after it", async () => {
    const a = await createAccount("first-attempt");
    const { hook } = await endpointOnReceiver(a.key);
    const ctx = serviceContext(a.account.id);
    const ev = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    await runBatch(ctx.db, [ev.statement]);
    const q = recordingQueue();
    await publishEvents(q.env, [ev.id]);
    const got = await hook.waitFor((d) => d.some((x) => eventOf(x).id === ev.id));
    expect(got.filter((x) => eventOf(x).id === ev.id)).toHaveLength(1);
    // Nothing went through the queue: no batch window between the commit and the attempt.
    expect(q.sent).toEqual([]);
    await vi.waitFor(async () => expect(await dispatchedAt(ev.id)).not.toBeNull());
    const rows = await env.DB.prepare(
      "SELECT d.status, d.attempts FROM webhook_dispatches d WHERE d.event_id = ? AND d.kind = 'event'",
    )
      .bind(ev.id)
      .all();
    expect(rows.results).toEqual([{ status: "succeeded", attempts: 1 }]);
  });

  it("a first attempt that fails puts only the retry on the queue, with the schedule's delay", async () => {
    const a = await createAccount("first-attempt-retry");
    const { hook } = await endpointOnReceiver(a.key);
    await hook.configure({ steps: [{ status: 500 }] });
    const ctx = serviceContext(a.account.id);
    const ev = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    await runBatch(ctx.db, [ev.statement]);
    const q = recordingQueue();
    await publishEvents(q.env, [ev.id]);
    await vi.waitFor(() => expect(q.sent).toHaveLength(1), { timeout: 10_000 });
    const row = await env.DB.prepare("SELECT id, status, attempts FROM webhook_dispatches WHERE event_id = ?")
      .bind(ev.id)
      .first<{ id: string; status: string; attempts: number }>();
    expect(row).toMatchObject({ status: "pending", attempts: 1 });
    expect(q.sent).toEqual([{ v: 1, dispatch_id: row?.id }]);
  });

  it("A crash between commit and the first webhook attempt still delivers (the sweep)", async () => {
    const a = await createAccount("first-attempt-crash");
    const { hook, webhook } = await endpointOnReceiver(a.key);
    const ctx = serviceContext(a.account.id);
    const ev = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    await runBatch(ctx.db, [ev.statement]);
    // The fan-out got as far as its dispatch row, then the Worker died before the attempt: the
    // event is not marked dispatched and no queue message exists.
    const row = newDispatch(
      { accountId: a.account.id, endpointId: webhook.id, eventId: ev.id, kind: "event" },
      Date.now(),
    );
    await ctx.db.insert(webhookDispatches).values(row).run();
    await new Promise((r) => setTimeout(r, 300));
    expect((await hook.deliveries()).some((d) => eventOf(d).id === ev.id)).toBe(false);
    expect(await dispatchedAt(ev.id)).toBeNull();

    const swept = await sweepWebhooks(jobContext({ at: Date.now() + 120_000 }));
    expect(swept.events).toBeGreaterThanOrEqual(1);
    const got = await hook.waitFor((d) => d.some((x) => eventOf(x).id === ev.id));
    expect(got.filter((x) => eventOf(x).id === ev.id)).toHaveLength(1);
    await vi.waitFor(async () => expect(await dispatchedAt(ev.id)).not.toBeNull());
    // Once, through the dispatch the crashed fan-out had made (no second row).
    const n = await env.DB.prepare("SELECT COUNT(*) AS n FROM webhook_dispatches WHERE event_id = ?")
      .bind(ev.id)
      .first<{ n: number }>();
    expect(n?.n).toBe(1);
    await sweepWebhooks(jobContext({ at: Date.now() + 120_000 }));
    await new Promise((r) => setTimeout(r, 500));
    expect((await hook.deliveries()).filter((d) => eventOf(d).id === ev.id)).toHaveLength(1);
  });

  it("an account without a live endpoint commits its events already dispatched (nothing to fan out); an endpoint gets the events committed after it", async () => {
    const a = await createAccount("born-dispatched");
    const ctx = serviceContext(a.account.id);
    const before = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    await runBatch(ctx.db, [before.statement]);
    expect(await dispatchedAt(before.id)).not.toBeNull();
    const q = recordingQueue();
    await publishEvents(q.env, [before.id]);
    // The sweep does not pick it up either: no dispatch is ever made for it.
    await sweepWebhooks(jobContext({ at: Date.now() + 120_000 }));

    const { hook } = await endpointOnReceiver(a.key);
    const after = eventStatement(ctx, "inbox.disabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    await runBatch(ctx.db, [after.statement]);
    expect(await dispatchedAt(after.id)).toBeNull();
    await publishEvents(env as unknown as Bindings, [after.id]);
    const got = await hook.waitFor((d) => d.some((x) => eventOf(x).id === after.id));
    expect(got.filter((x) => eventOf(x).id === after.id)).toHaveLength(1);
    await vi.waitFor(async () => expect(await dispatchedAt(after.id)).not.toBeNull());
    const made = await env.DB.prepare("SELECT event_id FROM webhook_dispatches WHERE account_id = ? AND kind = 'event'")
      .bind(a.account.id)
      .all<{ event_id: string }>();
    expect(made.results.map((r) => r.event_id)).toEqual([after.id]);
    expect(q.sent).toEqual([]);
  });

  it("an account whose only endpoint is disabled, then deleted, commits its events already dispatched", async () => {
    const a = await createAccount("born-dispatched-off");
    const { webhook } = await endpointOnReceiver(a.key);
    const ctx = serviceContext(a.account.id);
    const commit = async () => {
      const ev = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
      await runBatch(ctx.db, [ev.statement]);
      return dispatchedAt(ev.id);
    };
    expect(await commit()).toBeNull();
    await env.DB.prepare("UPDATE webhook_endpoints SET enabled = 0 WHERE id = ?").bind(webhook.id).run();
    expect(await commit()).not.toBeNull();
    await env.DB.prepare("UPDATE webhook_endpoints SET enabled = 1, deleted_at = ? WHERE id = ?")
      .bind(Date.now(), webhook.id)
      .run();
    expect(await commit()).not.toBeNull();
  });
});
