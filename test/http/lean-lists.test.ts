import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { PREVIEW_CHARS, previewOf } from "../../src/features/messages/message-store";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { call } from "../helpers/api";
import { deliver, mail } from "../helpers/mail";
import { connect, tool } from "../helpers/mcp";

// Issue 17 item 5: lists (messages, search, a thread's messages, the MCP list tools) carry a
// stored `preview` instead of the bodies; the single GET and `?include=body` carry the bodies.

const LONG = `Hello   Ana,\r\n\r\n\tthe invoice\u00a0for March is attached.   ${"Zebra words follow here. ".repeat(40)}\r\nBye\r\n`;
const expectedPreview = (text: string) => text.replace(/\s+/g, " ").trim().slice(0, PREVIEW_CHARS);

describe("message lists carry a preview, not bodies", () => {
  let a: TestAccount;
  let id: string;
  let threadId: string;
  beforeAll(async () => {
    a = await createAccount("lean");
    await deliver(mail({ subject: "Invoice zebra", body: LONG }), a.inbox.address);
    const row = await env.DB.prepare("SELECT id, thread_id, body_text, preview FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ id: string; thread_id: string; body_text: string; preview: string }>();
    id = row?.id ?? "";
    threadId = row?.thread_id ?? "";
    // Stored at write time, from the parsed text.
    expect(row?.preview).toBe(expectedPreview(row?.body_text ?? ""));
  });

  it("the stored preview is the text's first 200 characters, whitespace folded", async () => {
    const row = await env.DB.prepare("SELECT preview FROM messages WHERE id = ?").bind(id).first<{ preview: string }>();
    expect(row?.preview.startsWith("Hello Ana, the invoice for March is attached. Zebra words")).toBe(true);
    expect([...(row?.preview ?? "")]).toHaveLength(PREVIEW_CHARS);
    expect(row?.preview).not.toMatch(/\s{2}|[\t\r\n]/);
  });

  it("list, search and thread: preview and no body fields; ?include=body adds them", async () => {
    const paths = [`/v1/inboxes/${a.inbox.id}/messages`, `/v1/inboxes/${a.inbox.id}/messages/search?q=zebra`];
    for (const path of paths) {
      const lean = await call("GET", path, { key: a.key });
      expect(lean.status).toBe(200);
      const [m] = lean.body.data;
      expect(m.id).toBe(id);
      expect(m.preview).toMatch(/^Hello Ana, the invoice/);
      expect(m).not.toHaveProperty("body_text");
      expect(m).not.toHaveProperty("body_html");
      expect(m).not.toHaveProperty("body_omitted");
      // Everything else a message says is still there.
      expect(m).toMatchObject({ subject: "Invoice zebra", direction: "inbound", headers: expect.any(Object) });

      const full = await call("GET", `${path}${path.includes("?") ? "&" : "?"}include=body`, { key: a.key });
      expect(full.body.data[0]).toMatchObject({
        id,
        preview: m.preview,
        body_text: expect.stringContaining("the invoice"),
        body_html: null,
        body_omitted: false,
      });
    }
    const thread = await call("GET", `/v1/inboxes/${a.inbox.id}/threads/${threadId}`, { key: a.key });
    expect(thread.body.data.messages[0].preview).toMatch(/^Hello Ana/);
    expect(thread.body.data.messages[0]).not.toHaveProperty("body_text");
    const threadFull = await call("GET", `/v1/inboxes/${a.inbox.id}/threads/${threadId}?include=body`, { key: a.key });
    expect(threadFull.body.data.messages[0].body_text).toContain("Zebra words");

    const bad = await call("GET", `/v1/inboxes/${a.inbox.id}/messages?include=everything`, { key: a.key });
    expect(bad.status).toBe(422);
  });

  it("the single GET carries the bodies and the preview", async () => {
    const one = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${id}`, { key: a.key });
    expect(one.body.data.body_text).toContain("Bye");
    expect(one.body.data.preview).toMatch(/^Hello Ana/);
  });

  it("an HTML-only mail previews its visible text", async () => {
    const b = await createAccount("lean-html");
    await deliver(
      mail({
        contentType: "text/html; charset=utf-8",
        body: "<html><head><style>p{color:red}</style></head><body><p>Dear   <b>Bo</b>,</p>\r\n<p>see you</p></body></html>\r\n",
      }),
      b.inbox.address,
    );
    const list = await call("GET", `/v1/inboxes/${b.inbox.id}/messages`, { key: b.key });
    expect(list.body.data[0].preview).toBe("Dear Bo , see you");
  });

  it("an accepted send stores its preview too", async () => {
    const b = await createAccount("lean-send");
    const sent = await call("POST", `/v1/inboxes/${b.inbox.id}/messages`, {
      key: b.key,
      body: { to: ["ana@example.com"], subject: "Hi", body_text: "Line one\n\n  line two" },
    });
    expect(sent.status).toBe(202);
    expect(sent.body.data.preview).toBe("Line one line two");
    const row = await env.DB.prepare("SELECT preview FROM messages WHERE id = ?")
      .bind(sent.body.data.id)
      .first<{ preview: string }>();
    expect(row?.preview).toBe("Line one line two");
  });

  it("MCP list_messages, search_messages and get_thread carry previews; include adds bodies", async () => {
    const client = await connect(a.key);
    try {
      const data = async (name: string, args: Record<string, unknown>) => (await tool(client, name, args)).data;
      const list = await data("list_messages", { inbox_id: a.inbox.id });
      expect(list.items[0].preview).toMatch(/^Hello Ana/);
      expect(list.items[0]).not.toHaveProperty("body_text");
      const search = await data("search_messages", { inbox_id: a.inbox.id, query: "zebra" });
      expect(search.items[0]).not.toHaveProperty("body_text");
      const withBody = await data("search_messages", { inbox_id: a.inbox.id, query: "zebra", include: "body" });
      // Over MCP a body asked for comes as safe_text (the agents' view); raw: true gives the original.
      expect(withBody.items[0].body_text).toBeNull();
      expect(withBody.items[0].safe_text).toContain("Bye");
      const raw = await data("search_messages", { inbox_id: a.inbox.id, query: "zebra", include: "body", raw: true });
      expect(raw.items[0].body_text).toContain("Bye");
      const thread = await data("get_thread", { inbox_id: a.inbox.id, thread_id: threadId });
      expect(thread.messages[0]).not.toHaveProperty("body_text");
      const threadFull = await data("get_thread", { inbox_id: a.inbox.id, thread_id: threadId, include: "body" });
      expect(threadFull.messages[0].safe_text).toContain("Bye");
    } finally {
      await client.close();
    }
  });
});

describe("migration 0019 backfills previews of existing rows", () => {
  it("folds whitespace like the Worker does and leaves filled rows alone", async () => {
    const a = await createAccount("lean-backfill");
    await deliver(mail({ subject: "Old", body: LONG }), a.inbox.address);
    await deliver(
      mail({ subject: "Html", contentType: "text/html; charset=utf-8", body: "<p>Only   <i>html</i></p>\r\n" }),
      a.inbox.address,
    );
    const before = await env.DB.prepare("SELECT id, preview FROM messages WHERE inbox_id = ? ORDER BY id")
      .bind(a.inbox.id)
      .all<{ id: string; preview: string }>();
    // Rows as they were before the column existed.
    await env.DB.prepare("UPDATE messages SET preview = '' WHERE inbox_id = ?").bind(a.inbox.id).run();
    const migration = env.TEST_MIGRATIONS.find((m) => m.name.startsWith("0019_"));
    const backfill = migration?.queries.find((q) => q.includes("UPDATE `messages`"));
    expect(backfill).toBeDefined();
    await env.DB.prepare(backfill as string).run();
    const after = await env.DB.prepare("SELECT id, preview FROM messages WHERE inbox_id = ? ORDER BY id")
      .bind(a.inbox.id)
      .all<{ id: string; preview: string }>();
    expect(after.results).toEqual(before.results);
    expect(previewOf("  a \u00a0\n b  ")).toBe("a b");
  });
});
