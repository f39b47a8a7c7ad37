import { env } from "cloudflare:workers";
import { and, eq, inArray, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { integer, sqliteTable, text } from "drizzle-orm/sqlite-core";
import { describe, expect, it } from "vitest";
import { createDb, once } from "../../src/db/client";
import { insertRow, runBatch } from "../../src/db/compiled";
import { withD1Stats } from "../../src/db/metering";
import {
  accounts,
  attachments,
  auditChain,
  auditLog,
  events,
  inboxes,
  messages,
  sendFingerprints,
  threads,
} from "../../src/db/schema";
import { newMessageRow } from "../../src/features/messages/message-store";
import { PARTICIPANT_LIMIT, threadStatement, unionCapped } from "../../src/features/threads/threading";
import { forAccount, systemContext } from "../../src/lib/context";
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
        threads,
        {
          id: "thr_1",
          accountId: "acct_x",
          inboxId: "inbox_x",
          subject: null,
          subjectKey: "s",
          participants: ["a@example.org"],
          messageCount: 1,
          lastMessageAt: 2,
          labels: [],
          createdAt: 2,
          updatedAt: 2,
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

  it("onConflict ignore is drizzle's onConflictDoNothing() (the audit chain's links)", () => {
    const link = { accountId: "acct_x", seq: 7, entryId: "aud_7", prevHash: "a".repeat(64), hash: "b".repeat(64) };
    const ours = insertRow(auditChain, link, { onConflict: "ignore" });
    const theirs = builder.insert(auditChain).values(link).onConflictDoNothing().toSQL();
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

describe("once", () => {
  it("builds a select once and runs it on any handle with each call's values", async () => {
    const a = await createAccount("once-one");
    const b = await createAccount("once-two");
    let built = 0;
    const byAddress = once((d) => {
      built++;
      return d
        .select({ inbox: inboxes, status: accounts.status })
        .from(inboxes)
        .innerJoin(accounts, eq(accounts.id, inboxes.accountId))
        .where(eq(inboxes.address, sql.placeholder("address")))
        .prepare();
    });
    const db = createDb(env.DB);
    const one = await byAddress.get(db, { address: a.inbox.address });
    // The row mapped as drizzle maps it: nested, typed (JSON parsed, booleans).
    expect(one).toEqual({
      inbox: await db.select().from(inboxes).where(eq(inboxes.id, a.inbox.id)).get(),
      status: "active",
    });
    // A request's D1 session and development's metering are other handles: same statement.
    const session = createDb(env.DB.withSession("first-primary"));
    expect((await byAddress.get(session, { address: b.inbox.address }))?.inbox.id).toBe(b.inbox.id);
    expect(await byAddress.get(db, { address: "nobody@mailbot.test" })).toBeUndefined();
    expect(await byAddress.all(db, { address: a.inbox.address })).toHaveLength(1);
    expect(built).toBe(1);
    // Development's metering (X-Mailbot-D1-Stats) runs it as `select * from (…)` and rebuilds
    // the rows from objects: the join's columns that share a name (id, status…) must survive.
    const metered = await withD1Stats(() => byAddress.get(createDb(env.DB), { address: a.inbox.address }));
    expect(metered.result).toEqual(one);
    expect(metered.stats).toMatchObject({ queries: 1, unmetered: 0 });
    expect(metered.stats.rowsRead).toBeGreaterThan(0);
    // A missing value is refused, not bound as undefined.
    await expect(byAddress.get(db, {})).rejects.toThrow(/address/);
  });
});

describe("threadStatement's SQL", () => {
  // The thread write as drizzle built it before it was made once (the reference), against the
  // statement threadStatement makes now: applied to twin threads, they must leave equal rows.
  function reference(ctx: { accountId: string; db: ReturnType<typeof createDb> }, t: ThreadInput) {
    if (t.held) {
      return ctx.db
        .update(threads)
        .set({ labels: unionCapped(threads.labels, ["quarantine"], 50), updatedAt: t.now })
        .where(and(eq(threads.id, t.existing), eq(threads.accountId, ctx.accountId)));
    }
    return ctx.db
      .update(threads)
      .set({
        subject: sql`CASE WHEN ${threads.messageCount} = 0 THEN ${t.subject} ELSE ${threads.subject} END`,
        messageCount: sql`${threads.messageCount} + 1`,
        lastMessageAt: sql`max(${threads.lastMessageAt}, ${t.now})`,
        participants: unionCapped(threads.participants, t.participants, PARTICIPANT_LIMIT),
        labels: unionCapped(threads.labels, t.labels, 50),
        updatedAt: t.now,
      })
      .where(and(eq(threads.id, t.existing), eq(threads.accountId, ctx.accountId)));
  }
  interface ThreadInput {
    existing: string;
    subject: string | null;
    participants: string[];
    labels: string[];
    now: number;
    held: boolean;
  }

  const starts = [
    { name: "a thread of visible mail", count: 3, subject: "Old subject", participants: ["a@x.org", "b@x.org"] },
    { name: "a thread started by held mail", count: 0, subject: null, participants: [] },
    {
      name: "a thread at the participant limit",
      count: 60,
      subject: "Busy",
      participants: Array.from({ length: PARTICIPANT_LIMIT }, (_, i) => `p${i}@x.org`),
    },
  ];
  for (const start of starts) {
    for (const held of [false, true]) {
      it(`${held ? "held" : "visible"} mail into ${start.name}`, async () => {
        const a = await createAccount(`thread-sql-${start.count}-${held}`);
        const db = createDb(env.DB);
        const ctx = { ...forAccount(systemContext(env), a.account.id), db };
        const seed = (id: string) =>
          insertRow(threads, {
            id,
            accountId: a.account.id,
            inboxId: a.inbox.id,
            subject: start.subject,
            subjectKey: start.subject?.toLowerCase() ?? null,
            participants: start.participants,
            messageCount: start.count,
            lastMessageAt: 5_000,
            labels: ["unread", "x"],
            createdAt: 1,
            updatedAt: 1,
          });
        const ours = newId("thr");
        const theirs = newId("thr");
        await runBatch(db, [seed(ours), seed(theirs)]);
        const input = {
          subject: "New subject",
          participants: ["z@x.org", "a@x.org"],
          labels: ["unread", "quarantine"],
          now: 4_000,
          held,
        };
        await runBatch(db, [
          threadStatement(ctx, { ...input, existing: ours, id: ours, inboxId: a.inbox.id }),
          reference(ctx, { ...input, existing: theirs }),
        ]);
        const rows = await db
          .select()
          .from(threads)
          .where(inArray(threads.id, [ours, theirs]))
          .all();
        const one = rows.find((r) => r.id === ours);
        const other = rows.find((r) => r.id === theirs);
        expect(one).toBeDefined();
        expect({ ...one, id: "" }).toEqual({ ...other, id: "" });
        // And the update did something: the reference is not a no-op either.
        expect(one?.updatedAt).toBe(4_000);
      });
    }
  }

  it("another account's thread is left alone", async () => {
    const a = await createAccount("thread-sql-owner");
    const b = await createAccount("thread-sql-other");
    const db = createDb(env.DB);
    const id = newId("thr");
    await runBatch(db, [
      insertRow(threads, {
        id,
        accountId: a.account.id,
        inboxId: a.inbox.id,
        subject: "s",
        subjectKey: "s",
        participants: [],
        messageCount: 1,
        lastMessageAt: 1,
        labels: [],
        createdAt: 1,
        updatedAt: 1,
      }),
    ]);
    const ctx = { ...forAccount(systemContext(env), b.account.id), db };
    await runBatch(db, [
      threadStatement(ctx, {
        existing: id,
        id,
        inboxId: a.inbox.id,
        subject: "hijack",
        participants: ["evil@x.org"],
        labels: [],
        now: 9,
      }),
    ]);
    const row = await db.select().from(threads).where(eq(threads.id, id)).get();
    expect(row).toMatchObject({ subject: "s", messageCount: 1, participants: [], updatedAt: 1 });
  });
});
