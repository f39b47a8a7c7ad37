import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client";
import { events } from "../../src/db/schema";
import { commitWithAudit } from "../../src/features/audit/audit.service";
import { eventStatement, headsOf, publishEvents } from "../../src/features/events/events.service";
import { receiveMail } from "../../src/features/inbound/inbound.service";
import { forAccount, systemContext } from "../../src/lib/context";
import { createAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { mail } from "../helpers/mail";
import { endpointOnReceiver } from "../helpers/webhooks";

// Issue 17 item 4: the send policy writes nothing of its own. Its spray fingerprint joins the
// batch that stores the accepted message, so a send refused after the policy (size, recipients,
// reputation) leaves no fingerprint behind, and an accepted one leaves exactly one.

const fingerprints = async (accountId: string) =>
  (
    await env.DB.prepare("SELECT new_recipients FROM send_fingerprints WHERE account_id = ?")
      .bind(accountId)
      .all<{ new_recipients: string }>()
  ).results.map((r) => JSON.parse(r.new_recipients) as string[]);

describe("send acceptance writes the policy's fingerprint with the message", () => {
  it("an accepted send stores one fingerprint, in the same batch as the message", async () => {
    const a = await createAccount("cheap-ok");
    const sent = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["New.Person@example.org"], subject: "Hello", body_text: "First contact." },
    });
    expect(sent.status).toBe(202);
    expect(await fingerprints(a.account.id)).toEqual([["new.person@example.org"]]);
    const stored = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE id = ?")
      .bind(sent.body.data.id)
      .first<{ n: number }>();
    expect(stored?.n).toBe(1);
  });

  it("a send refused after the policy leaves no fingerprint", async () => {
    const a = await createAccount("cheap-refused");
    const list = (p: string, n: number) => Array.from({ length: n }, (_, i) => `${p}${i}@example.org`);
    const tooMany = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: list("t", 20), cc: list("c", 20), bcc: list("b", 11), subject: "x", body_text: "x" },
    });
    expectError(tooMany, 422, "too_many_recipients");
    expect(await fingerprints(a.account.id)).toEqual([]);
  });
});

describe("a commit hands its events' heads to publishing", () => {
  // eventStatement's insert returns the event's head (seq, dispatched_at…), so a producer that
  // passes headsOf(its commit's results) to publishEvents saves the read of those heads.
  const headsReads = (sqls: string[]) => sqls.filter((s) => /from "events" where "events"\."id" IN/i.test(s)).length;
  const headRead = (id: string) =>
    createDb(env.DB)
      .select({
        id: events.id,
        accountId: events.accountId,
        type: events.type,
        inboxId: events.inboxId,
        seq: events.seq,
        dispatchedAt: events.dispatchedAt,
      })
      .from(events)
      .where(eq(events.id, id))
      .get();
  function recordingEnv() {
    const sqls: string[] = [];
    const db = env.DB;
    const DB = {
      prepare: (sql: string) => {
        sqls.push(sql);
        return db.prepare(sql);
      },
      batch: (statements: D1PreparedStatement[]) => db.batch(statements),
      withSession: (c?: string) => db.withSession(c),
      exec: (q: string) => db.exec(q),
      dump: () => db.dump(),
    } as unknown as D1Database;
    return { env: { ...env, DB }, sqls };
  }

  it("publishes from the commit's heads without reading them, and still fans out", async () => {
    const a = await createAccount("heads-commit");
    const { webhook } = await endpointOnReceiver(a.key);
    const ctx = forAccount(systemContext(env), a.account.id);
    const event = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    const results = await commitWithAudit(ctx, [event.statement], []);
    const heads = headsOf(results);
    // Exactly what a read after the commit gives; a live endpoint: the event waits for its fan-out.
    expect(heads).toEqual([await headRead(event.id)]);
    expect(heads[0]).toMatchObject({ id: event.id, type: "inbox.enabled", dispatchedAt: null });
    expect(heads[0]?.seq).toBeGreaterThan(0);
    const recorded = recordingEnv();
    await publishEvents(recorded.env as typeof env, [event.id], heads);
    expect(headsReads(recorded.sqls)).toBe(0);
    const dispatch = await env.DB.prepare("SELECT endpoint_id FROM webhook_dispatches WHERE event_id = ?")
      .bind(event.id)
      .first<{ endpoint_id: string }>();
    expect(dispatch?.endpoint_id).toBe(webhook.id);
  });

  it("an account without a live endpoint gets heads born dispatched, equal to a read", async () => {
    const a = await createAccount("heads-born");
    const ctx = forAccount(systemContext(env), a.account.id);
    const one = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    const two = eventStatement(ctx, "inbox.disabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    const results = await commitWithAudit(ctx, [one.statement, two.statement], [{ action: "test.heads" }]);
    const heads = headsOf(results);
    expect(heads).toEqual([await headRead(one.id), await headRead(two.id)]);
    expect(heads.map((h) => typeof h.dispatchedAt)).toEqual(["number", "number"]);
    expect((heads[1]?.seq ?? 0) - (heads[0]?.seq ?? 0)).toBe(1);
  });

  it("a received mail is published from its commit: no heads read, the event reaches the webhook", async () => {
    const a = await createAccount("heads-inbound");
    const { webhook } = await endpointOnReceiver(a.key);
    const recorded = recordingEnv();
    const raw = new TextEncoder().encode(mail({ to: a.inbox.address, subject: "heads" }));
    const result = await receiveMail(systemContext(recorded.env as typeof env), {
      readRaw: async () => raw,
      envelopeFrom: "sender@example.org",
      envelopeTo: a.inbox.address,
      via: "internal",
      requestId: null,
    });
    expect(result.outcome).toBe("stored");
    expect(headsReads(recorded.sqls)).toBe(0);
    const event = await env.DB.prepare("SELECT id FROM events WHERE message_id = ? AND type = 'message.received'")
      .bind(result.messageId)
      .first<{ id: string }>();
    expect(event).not.toBeNull();
    const dispatch = await env.DB.prepare("SELECT endpoint_id FROM webhook_dispatches WHERE event_id = ?")
      .bind(event?.id)
      .first<{ endpoint_id: string }>();
    expect(dispatch?.endpoint_id).toBe(webhook.id);
  });

  it("reads the heads when the caller has none (or not all of them)", async () => {
    const a = await createAccount("heads-read");
    const ctx = forAccount(systemContext(env), a.account.id);
    const one = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    const two = eventStatement(ctx, "inbox.disabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    const results = await commitWithAudit(ctx, [one.statement, two.statement], []);
    const recorded = recordingEnv();
    await publishEvents(recorded.env as typeof env, [one.id, two.id], headsOf(results).slice(0, 1));
    expect(headsReads(recorded.sqls)).toBe(1);
    const again = recordingEnv();
    await publishEvents(again.env as typeof env, [one.id]);
    expect(headsReads(again.sqls)).toBe(1);
  });
});
