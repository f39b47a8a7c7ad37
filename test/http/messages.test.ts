import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { createAccount, createKey, type TestAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { deliver, mail } from "../helpers/mail";

type Account = TestAccount;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function ids(inboxId: string): Promise<string[]> {
  const rows = await env.DB.prepare("SELECT id FROM messages WHERE inbox_id = ? ORDER BY id DESC")
    .bind(inboxId)
    .all<{ id: string }>();
  return rows.results.map((r) => r.id);
}

describe("listing, reading and labelling messages", () => {
  let a: Account;
  let all: string[];
  beforeAll(async () => {
    a = await createAccount("reader");
    for (let i = 0; i < 5; i++) {
      await deliver(mail({ subject: `Batch ${i}`, body: `Body number ${i}\r\n` }), a.inbox.address);
    }
    all = await ids(a.inbox.id);
  });

  it("lists newest first with a working cursor", async () => {
    const first = await call("GET", `/v1/inboxes/${a.inbox.id}/messages?limit=2`, { key: a.key });
    expect(first.status).toBe(200);
    expect(first.body.data.map((m: { id: string }) => m.id)).toEqual(all.slice(0, 2));
    expect(first.body.meta).toEqual({ limit: 2, next_cursor: expect.any(String) });
    const second = await call(
      "GET",
      `/v1/inboxes/${a.inbox.id}/messages?limit=2&cursor=${first.body.meta.next_cursor}`,
      { key: a.key },
    );
    expect(second.body.data.map((m: { id: string }) => m.id)).toEqual(all.slice(2, 4));
    const last = await call(
      "GET",
      `/v1/inboxes/${a.inbox.id}/messages?limit=2&cursor=${second.body.meta.next_cursor}`,
      {
        key: a.key,
      },
    );
    expect(last.body.data.map((m: { id: string }) => m.id)).toEqual(all.slice(4));
    expect(last.body.meta.next_cursor).toBeNull();
    expectError(
      await call("GET", `/v1/inboxes/${a.inbox.id}/messages?cursor=bogus!`, { key: a.key }),
      400,
      "invalid_cursor",
    );
  });

  it("filters by direction, label, thread and time", async () => {
    const base = `/v1/inboxes/${a.inbox.id}/messages`;
    expect((await call("GET", `${base}?direction=inbound`, { key: a.key })).body.data).toHaveLength(5);
    expect((await call("GET", `${base}?direction=outbound`, { key: a.key })).body.data).toHaveLength(0);
    expect((await call("GET", `${base}?label=unread`, { key: a.key })).body.data).toHaveLength(5);
    expect((await call("GET", `${base}?label=nope`, { key: a.key })).body.data).toHaveLength(0);

    const one = await call("GET", `${base}/${all[2]}`, { key: a.key });
    const thread = await call("GET", `${base}?thread_id=${one.body.data.thread_id}`, { key: a.key });
    expect(thread.body.data.map((m: { id: string }) => m.id)).toEqual([all[2]]);

    const created = Date.parse(one.body.data.created_at);
    const since = await call("GET", `${base}?since=${new Date(created).toISOString()}`, { key: a.key });
    expect(since.body.data.map((m: { id: string }) => m.id)).toEqual(expect.arrayContaining(all.slice(0, 3)));
    const until = await call("GET", `${base}?until=${new Date(created).toISOString()}`, { key: a.key });
    expect(until.body.data.map((m: { id: string }) => m.id)).toEqual(expect.arrayContaining(all.slice(2)));
    expect((await call("GET", `${base}?since=2999-01-01T00:00:00Z`, { key: a.key })).body.data).toHaveLength(0);

    const bad = expectError(
      await call("GET", `${base}?direction=sideways&since=yesterday`, { key: a.key }),
      422,
      "validation_error",
    );
    expect(bad.details.map((d: { path: string }) => d.path).sort()).toEqual(["direction", "since"]);
  });

  it("gets one message with every documented field", async () => {
    const res = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${all[0]}`, { key: a.key });
    expect(res.status).toBe(200);
    expect(Object.keys(res.body.data)).toEqual(
      expect.arrayContaining([
        "id",
        "inbox_id",
        "thread_id",
        "direction",
        "status",
        "from_address",
        "from_name",
        "to",
        "cc",
        "reply_to",
        "subject",
        "body_text",
        "body_html",
        "headers",
        "rfc_message_id",
        "in_reply_to",
        "references",
        "labels",
        "attachments",
        "size",
        "authentication",
        "created_at",
        "sent_at",
        "received_at",
      ]),
    );
    expect(res.body.data).toMatchObject({ subject: "Batch 4", body_text: "Body number 4\n", status: "received" });
    expectError(
      await call("GET", `/v1/inboxes/${a.inbox.id}/messages/msg_00000000000000000000000000`, { key: a.key }),
      404,
      "not_found",
    );
    expectError(
      await call("GET", `/v1/inboxes/${a.inbox.id}/messages/not-an-id`, { key: a.key }),
      422,
      "validation_error",
    );
  });

  it("PATCH replaces, adds and removes labels; the thread follows; it is audited", async () => {
    const path = `/v1/inboxes/${a.inbox.id}/messages/${all[1]}`;
    const added = await call("PATCH", path, { key: a.key, body: { add_labels: ["invoices", "urgent"] } });
    expect(added.status, added.text).toBe(200);
    expect(added.body.data.labels).toEqual(["unread", "invoices", "urgent"]);
    const removed = await call("PATCH", path, { key: a.key, body: { remove_labels: ["unread", "urgent"] } });
    expect(removed.body.data.labels).toEqual(["invoices"]);
    const replaced = await call("PATCH", path, { key: a.key, body: { labels: ["done"] } });
    expect(replaced.body.data.labels).toEqual(["done"]);

    const row = await env.DB.prepare("SELECT labels, thread_id FROM messages WHERE id = ?")
      .bind(all[1])
      .first<{ labels: string; thread_id: string }>();
    expect(JSON.parse(row?.labels ?? "[]")).toEqual(["done"]);
    const thread = await call("GET", `/v1/inboxes/${a.inbox.id}/threads/${row?.thread_id}`, { key: a.key });
    expect(thread.body.data.labels).toEqual(["done"]);
    expect((await call("GET", `/v1/inboxes/${a.inbox.id}/messages?label=done`, { key: a.key })).body.data).toHaveLength(
      1,
    );

    const audit = await call("GET", "/v1/audit-log?action=message.labels_updated", { key: a.key });
    expect(audit.body.data).toHaveLength(3);
    expect(audit.body.data[0].metadata).toEqual({ before: ["invoices"], labels: ["done"] });

    // Concurrent additions all land (the labels are computed in SQL at write time).
    const adds = await Promise.all(
      ["a1", "a2", "a3", "a4", "a5"].map((l) =>
        call("PATCH", path, { key: a.key, body: { add_labels: [l, "shared"] } }),
      ),
    );
    expect(adds.every((r) => r.status === 200)).toBe(true);
    const final = await call("GET", path, { key: a.key });
    expect([...final.body.data.labels].sort()).toEqual(["a1", "a2", "a3", "a4", "a5", "done", "shared"]);

    expectError(await call("PATCH", path, { key: a.key, body: {} }), 422, "validation_error");
    expectError(
      await call("PATCH", path, { key: a.key, body: { labels: ["ok"], status: "sent" } }),
      422,
      "validation_error",
    );
  });

  it("respects scopes and inbox restrictions of the key", async () => {
    const second = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "second" } });
    expect(second.status).toBe(201);
    const rkey = (await createKey(a, { name: "only-second", inbox_ids: [second.body.data.id] })).key;
    for (const path of [
      `/v1/inboxes/${a.inbox.id}/messages`,
      `/v1/inboxes/${a.inbox.id}/messages/${all[0]}`,
      `/v1/inboxes/${a.inbox.id}/messages/${all[0]}/raw`,
      `/v1/inboxes/${a.inbox.id}/threads`,
      `/v1/inboxes/${a.inbox.id}/messages/search?q=batch`,
    ]) {
      expectError(await call("GET", path, { key: rkey }), 404, "not_found");
    }
    expect((await call("GET", `/v1/inboxes/${second.body.data.id}/messages`, { key: rkey })).status).toBe(200);

    const sendOnly = await createKey(a, { name: "send", scopes: ["send"] });
    expectError(
      await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: sendOnly.key }),
      403,
      "insufficient_scope",
    );
    const readOnly = await createKey(a, { name: "read", scopes: ["read"] });
    expect((await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: readOnly.key })).status).toBe(200);
    expectError(
      await call("PATCH", `/v1/inboxes/${a.inbox.id}/messages/${all[0]}`, {
        key: readOnly.key,
        body: { labels: ["x"] },
      }),
      403,
      "insufficient_scope",
    );
  });
});

describe("search", () => {
  let a: Account;
  beforeAll(async () => {
    a = await createAccount("search");
    await deliver(mail({ subject: "Invoice for March", body: "Total due: 420 EUR\r\n" }), a.inbox.address);
    await deliver(
      mail({ subject: "Lunch", from: "Jürgen Müller <juergen@firma.example>", body: "Café at noon?\r\n" }),
      a.inbox.address,
    );
    await deliver(
      mail({
        subject: "Newsletter",
        contentType: "text/html; charset=utf-8",
        body: "<p>Our <b>quarterly</b> roadmap</p>\r\n",
      }),
      a.inbox.address,
    );
  });

  const search = (q: string) =>
    call("GET", `/v1/inboxes/${a.inbox.id}/messages/search?q=${encodeURIComponent(q)}`, { key: a.key });
  const subjects = (res: Awaited<ReturnType<typeof search>>) =>
    res.body.data.map((m: { subject: string }) => m.subject);

  it("finds words in subjects, bodies (text or HTML) and addresses, ignoring case and accents", async () => {
    expect(subjects(await search("invoice"))).toEqual(["Invoice for March"]);
    expect(subjects(await search("420 eur"))).toEqual(["Invoice for March"]);
    expect(subjects(await search("cafe"))).toEqual(["Lunch"]);
    expect(subjects(await search("muller"))).toEqual(["Lunch"]);
    expect(subjects(await search("juergen@firma.example"))).toEqual(["Lunch"]);
    expect(subjects(await search("QUARTERLY roadmap"))).toEqual(["Newsletter"]);
    expect(subjects(await search("invoice lunch"))).toEqual([]);
  });

  it("treats FTS syntax as plain words and never errors", async () => {
    for (const q of ['"', "invoice OR lunch", "NEAR(", "*", "subject:lunch", "a' OR 1=1 --", "))"]) {
      const res = await search(q);
      expect(res.status, `${q}: ${res.text}`).toBe(200);
    }
    expectError(await search(""), 422, "validation_error");
    const other = await createAccount("search-other");
    const foreign = await call("GET", `/v1/inboxes/${other.inbox.id}/messages/search?q=invoice`, { key: other.key });
    expect(foreign.body.data).toEqual([]);
  });
});

describe("messages/wait", () => {
  it("answers as soon as a matching message arrives, and 408 after the timeout", async () => {
    const a = await createAccount("waiter");
    const url = (q: string) => `/v1/inboxes/${a.inbox.id}/messages/wait?${q}`;
    const [waited] = await Promise.all([
      call("GET", url("timeout_ms=10000&from_address=bo@example.com&subject_contains=ORDER"), { key: a.key }),
      (async () => {
        await sleep(300);
        await deliver(mail({ from: "someone@example.com", subject: "order shipped" }), a.inbox.address);
        await deliver(mail({ from: "bo@example.com", subject: "Your order #12" }), a.inbox.address);
      })(),
    ]);
    expect(waited.status, waited.text).toBe(200);
    expect(waited.body.data).toMatchObject({ from_address: "bo@example.com", subject: "Your order #12" });

    // With `since` in the past, an existing message matches at once (the oldest first).
    const past = await call("GET", url("since=2000-01-01T00:00:00Z&timeout_ms=0"), { key: a.key });
    expect(past.body.data.subject).toBe("order shipped");

    const timeout = await call("GET", url("timeout_ms=250&from_address=nobody@example.com"), { key: a.key });
    expectError(timeout, 408, "wait_timeout");
    expectError(await call("GET", url("timeout_ms=30001"), { key: a.key }), 422, "validation_error");
  });
});

describe("threads", () => {
  it("lists threads by latest activity with a cursor", async () => {
    const a = await createAccount("thread-list");
    for (const s of ["Alpha", "Beta", "Gamma"]) await deliver(mail({ subject: s }), a.inbox.address);
    await deliver(mail({ subject: "Re: Alpha" }), a.inbox.address);
    const page1 = await call("GET", `/v1/inboxes/${a.inbox.id}/threads?limit=2`, { key: a.key });
    expect(page1.status).toBe(200);
    expect(page1.body.data.map((t: { subject: string }) => t.subject)).toEqual(["Alpha", "Gamma"]);
    expect(page1.body.data[0]).toMatchObject({ message_count: 2, labels: ["unread"] });
    const page2 = await call("GET", `/v1/inboxes/${a.inbox.id}/threads?limit=2&cursor=${page1.body.meta.next_cursor}`, {
      key: a.key,
    });
    expect(page2.body.data.map((t: { subject: string }) => t.subject)).toEqual(["Beta"]);
    expect(page2.body.meta.next_cursor).toBeNull();
    expectError(
      await call("GET", `/v1/inboxes/${a.inbox.id}/threads?cursor=${btoa("1.msg_x")}`, { key: a.key }),
      400,
      "invalid_cursor",
    );
    expectError(
      await call("GET", `/v1/inboxes/${a.inbox.id}/threads/thr_00000000000000000000000000`, { key: a.key }),
      404,
      "not_found",
    );
  });
});

describe("large bodies", () => {
  it("keeps bodies over the row limit in R2 and still serves them whole", async () => {
    const a = await createAccount("large");
    const line = `${"lorem ipsum dolor sit amet ".repeat(3)}\r\n`;
    const body = line.repeat(Math.ceil((600 * 1024) / line.length));
    await deliver(mail({ subject: "Big", body }), a.inbox.address);
    const row = await env.DB.prepare(
      "SELECT id, body_text, body_text_key, length(search_text) AS n FROM messages WHERE inbox_id = ?",
    )
      .bind(a.inbox.id)
      .first<{ id: string; body_text: string | null; body_text_key: string | null; n: number }>();
    expect(row?.body_text).toBeNull();
    expect(row?.body_text_key?.startsWith(`${a.account.id}/`)).toBe(true);
    expect(row?.n).toBeLessThanOrEqual(32 * 1024);
    const res = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${row?.id}`, { key: a.key });
    expect(res.body.data.body_text).toBe(body.replace(/\r\n/g, "\n"));
    expect(res.body.data.body_omitted).toBe(false);
    // Lists never pull large bodies from R2: with ?include=body they say so instead.
    const list = await call("GET", `/v1/inboxes/${a.inbox.id}/messages?include=body`, { key: a.key });
    expect(list.body.data[0]).toMatchObject({ id: row?.id, body_text: null, body_omitted: true });
    const thread = await call("GET", `/v1/inboxes/${a.inbox.id}/threads/${res.body.data.thread_id}?include=body`, {
      key: a.key,
    });
    expect(thread.body.data).toMatchObject({ messages_truncated: false, messages: [{ body_omitted: true }] });
  });
});
