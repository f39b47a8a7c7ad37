import { env } from "cloudflare:workers";
import { eq, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { integer, sqliteTable, text } from "drizzle-orm/sqlite-core";
import { describe, expect, it } from "vitest";
import { createDb, prepared } from "../../src/db/client";
import { insertRow, runBatch } from "../../src/db/compiled";
import { attachments, auditLog, events, inboxes, messages, sendFingerprints } from "../../src/db/schema";
import { newMessageRow } from "../../src/features/messages/message-store";
import { newId } from "../../src/lib/ids";
import { createAccount } from "../helpers/accounts";

// db/compiled.ts makes the inserts of the write paths without drizzle's per-call builder. It
// must write exactly what drizzle's insert writes: same statement, same bound values.

const builder = drizzle(env.DB);

function messageRow(accountId: string, inboxId: string, extra: Partial<Parameters<typeof newMessageRow>[0]> = {}) {
  const now = Date.now();
  return newMessageRow({
    id: newId("msg"),
    accountId,
    inboxId,
    threadId: newId("thr"),
    direction: "inbound",
    status: "received",
    fromAddress: "ada@example.org",
    subject: "Quarterly numbers",
    bodyText: "Hello\u0000 there \u{1F600}",
    headers: { subject: "Quarterly numbers", received: ["a", "b"] },
    labels: ["unread"],
    attachments: [],
    size: 1234,
    screening: null,
    authentication: null,
    rawKey: "raw/key",
    dedupeKey: `<${crypto.randomUUID()}@example.org>`,
    createdAt: now,
    receivedAt: now,
    ...extra,
  });
}

describe("insertRow makes drizzle's own insert", () => {
  it("the same SQL and values as db.insert().values() for a message, an attachment, an event and an audit row", () => {
    const row = messageRow("acct_x", "inbox_x", {
      screening: { verdict: "clean", score: 0, signals: [], screened_at: "2026-12-05T00:00:00.000Z", version: "1" },
      headersTruncated: true,
    });
    const cases = [
      [messages, row],
      // Nulls in JSON columns must be SQL NULL, not the text "null".
      [messages, { ...row, screening: null, authentication: null, replyTo: null }],
      [
        attachments,
        {
          id: "att_1",
          accountId: "acct_x",
          inboxId: "inbox_x",
          messageId: row.id,
          filename: null,
          contentType: "application/pdf",
          size: 3,
          contentId: null,
          disposition: "attachment" as const,
          r2Key: "k",
          sha256: "00",
          createdAt: 1,
        },
      ],
      [
        events,
        { id: "evt_1", accountId: "acct_x", type: "message.received", data: { a: [1, "b", null] }, createdAt: 5 },
      ],
      [
        auditLog,
        {
          id: "aud_1",
          accountId: "acct_x",
          seq: 7,
          action: "message.received",
          actorType: "system",
          metadata: { nested: { ok: true } },
          createdAt: 9,
          prevHash: "",
          hash: "",
          mac: "m",
        },
      ],
      [
        sendFingerprints,
        { id: "sfp_1", accountId: "acct_x", bodyHash: "h", newRecipients: ["a@example.org"], createdAt: 3 },
      ],
    ] as const;
    for (const [table, values] of cases) {
      // Each case pairs a table with its own row type; seen as one table type for the call.
      const t = table as typeof messages;
      const v = values as typeof messages.$inferInsert;
      const ours = insertRow(t, v);
      const theirs = builder.insert(t).values(v).toSQL();
      expect(ours.sql).toBe(theirs.sql);
      expect(ours.params).toEqual(theirs.params);
    }
    const nulls = insertRow(messages, { ...row, screening: null });
    expect(nulls.params).toContain(null);
    expect(nulls.params).not.toContain("null");
  });

  it("an omitted column gets its drizzle default, as drizzle's insert does", () => {
    const row = {
      id: "aud_2",
      accountId: "acct_x",
      seq: 1,
      action: "a",
      actorType: "system",
      metadata: {},
      createdAt: 1,
      prevHash: "",
      hash: "",
    };
    const ours = insertRow(auditLog, row);
    const theirs = builder.insert(auditLog).values(row).toSQL();
    expect(ours).toEqual({ sql: theirs.sql, params: theirs.params });
  });

  it("refuses a table whose default is SQL (it would have to be inlined)", () => {
    const odd = sqliteTable("odd_table", {
      id: text("id").primaryKey(),
      at: integer("at").default(sql`(unixepoch())`),
    });
    expect(() => insertRow(odd, { id: "x" })).toThrow(/SQL or function default/);
  });
});

describe("runBatch", () => {
  it("writes compiled and drizzle statements in one batch, with computed columns and RETURNING rows", async () => {
    const a = await createAccount("compiled-batch");
    const db = createDb(env.DB);
    const next = `(SELECT coalesce(max("seq"), 0) + 1 FROM "events" WHERE "account_id" = ?)`;
    const ev = (id: string) =>
      insertRow(
        events,
        { id, accountId: a.account.id, type: "inbox.enabled", data: { n: id }, createdAt: 1 },
        { computed: { seq: { sql: next, params: [a.account.id] } }, returning: ["id", "seq"] },
      );
    const before =
      (
        await env.DB.prepare("SELECT max(seq) AS s FROM events WHERE account_id = ?")
          .bind(a.account.id)
          .first<{ s: number | null }>()
      )?.s ?? 0;
    const results = await runBatch(db, [
      ev("evt_c1"),
      db.update(inboxes).set({ displayName: "Renamed in the batch" }).where(eq(inboxes.id, a.inbox.id)),
      ev("evt_c2"),
    ]);
    expect(results[0]).toEqual([{ id: "evt_c1", seq: before + 1 }]);
    expect(results[2]).toEqual([{ id: "evt_c2", seq: before + 2 }]);
    const stored = await db.select().from(events).where(eq(events.id, "evt_c2")).get();
    expect(stored?.data).toEqual({ n: "evt_c2" });
    const inbox = await db.select().from(inboxes).where(eq(inboxes.id, a.inbox.id)).get();
    expect(inbox?.displayName).toBe("Renamed in the batch");
  });

  it("is one transaction: a failing statement leaves nothing of the batch", async () => {
    const a = await createAccount("compiled-atomic");
    const db = createDb(env.DB);
    const row = messageRow(a.account.id, a.inbox.id);
    await expect(
      runBatch(db, [
        insertRow(messages, row),
        insertRow(events, { id: "evt_atomic", accountId: a.account.id, type: "x", data: {}, createdAt: 1 }),
        // The same primary key again: the batch fails as a whole.
        insertRow(messages, row),
      ]),
    ).rejects.toThrow(/UNIQUE/);
    expect(await db.select().from(messages).where(eq(messages.id, row.id)).get()).toBeUndefined();
    expect(await db.select().from(events).where(eq(events.id, "evt_atomic")).get()).toBeUndefined();
  });

  it("a row written by insertRow reads back through drizzle as it was given", async () => {
    const a = await createAccount("compiled-roundtrip");
    const db = createDb(env.DB);
    const row = messageRow(a.account.id, a.inbox.id, {
      to: ["b@example.org"],
      references: ["<r1@x>", "<r2@x>"],
      screening: {
        verdict: "suspicious",
        score: 40,
        signals: [{ id: "s", weight: 40, evidence: "e" }],
        screened_at: "2026-12-05T00:00:00.000Z",
        version: "1",
      },
    });
    await runBatch(db, [insertRow(messages, row)]);
    const back = await db.select().from(messages).where(eq(messages.id, row.id)).get();
    expect(back).toEqual(row);
    const raw = await env.DB.prepare("SELECT authentication FROM messages WHERE id = ?")
      .bind(row.id)
      .first<{ authentication: unknown }>();
    expect(raw?.authentication).toBeNull();
  });
});

describe("prepared", () => {
  it("builds a query once per handle and runs it with each call's values", async () => {
    const a = await createAccount("prepared-one");
    const b = await createAccount("prepared-two");
    const db = createDb(env.DB);
    let built = 0;
    const byAddress = (address: string) =>
      prepared(db, "test.inboxByAddress", (d) => {
        built++;
        return d
          .select({ id: inboxes.id })
          .from(inboxes)
          .where(eq(inboxes.address, sql.placeholder("address")))
          .prepare();
      }).get({ address });
    expect(await byAddress(a.inbox.address)).toEqual({ id: a.inbox.id });
    expect(await byAddress(b.inbox.address)).toEqual({ id: b.inbox.id });
    expect(await byAddress("nobody@mailbot.test")).toBeUndefined();
    expect(built).toBe(1);
    // Another handle (a request's D1 session) builds its own: a prepared statement belongs to its client.
    const session = createDb(env.DB.withSession("first-primary"));
    await prepared(session, "test.inboxByAddress", (d) => {
      built++;
      return d
        .select({ id: inboxes.id })
        .from(inboxes)
        .where(eq(inboxes.address, sql.placeholder("address")))
        .prepare();
    }).get({ address: a.inbox.address });
    expect(built).toBe(2);
  });
});
