/**
 * Issue 16, items 9–12 on the send path: linear HTML-to-text, the recipient cap before any query
 * (one JSON parameter per list), forward refused from the stored attachment sizes, and header
 * values from inbound mail re-validated (control characters refused or removed).
 */
import { env } from "cloudflare:workers";
import PostalMime from "postal-mime";
import { describe, expect, it } from "vitest";
import { createDb } from "../../src/db/client";
import { KNOWN_SENDERS } from "../../src/features/sender-auth/send-policy";
import { CONTROL_CHARS } from "../../src/mail/address";
import { HTML_TEXT_LIMIT, htmlToPlain, htmlToText } from "../../src/mail/html-text";
import { createAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { auditEntries, countMessages, liftLimit, settledMessage, unique } from "../helpers/db";
import { deliver, mail } from "../helpers/mail";
import { smtpReceived } from "../helpers/outbound";

const MiB = 1024 * 1024;

describe("HTML-to-text (item 9)", () => {
  // Correctness on the 2 MiB worst cases; their time is printed by bench/html-text.mjs (a test
  // asserts no wall-clock figure). Before the fix, the first two took seconds each.
  it("reads 2 MiB of hostile HTML in one pass and gives the right text", () => {
    expect(htmlToText("<a ".repeat((2 * MiB) / 3))).toBe("");
    expect(htmlToText(`${"<head></head>".repeat(Math.floor((2 * MiB - 20) / 13))}<p>after</p>`)).toBe("after");
    expect(htmlToText(`<head>${"x".repeat(2 * MiB)}`)).toBe("");
    expect(htmlToPlain("<p>hi</p>".repeat(300_000), 2 * MiB).length).toBeGreaterThan(0);
    // Input beyond the cap is not read.
    expect(htmlToText(`${"a".repeat(HTML_TEXT_LIMIT)}<p>tail</p>`)).not.toContain("tail");
  });

  it("keeps its output: blocks, lists, links, entities, scripts", () => {
    expect(
      htmlToText(
        '<html><head><title>t</title></head><body><p>Hello <b>you</b></p><ul><li>one</li><li>two</li></ul><a href="https://e.example/a?x=1&amp;y=2">link</a><br>end &amp; more &#65;<script>evil()</script><style>p{}</style></body>',
      ),
    ).toBe("Hello you\n\n- one\n\n- two\n\nlink (https://e.example/a?x=1&y=2)\nend & more A");
    expect(htmlToText('<a href="javascript:alert(1)">x</a> <a href="mailto:a@b.example">mail</a>')).toBe(
      "x mail (a@b.example)",
    );
    expect(htmlToPlain("<p>Hi</p><style>p{}</style>there &lt;3")).toBe("Hi there <3");
  });
});

describe("recipient cap and list queries (item 10)", () => {
  it("150 recipients are a 422 too_many_recipients, audited, before any recipient query", async () => {
    const a = await createAccount("cap");
    const list = (p: string) => Array.from({ length: 50 }, (_, i) => `${p}${i}@example.org`);
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: list("t"), cc: list("c"), bcc: list("b"), subject: "x", body_text: "x" },
    });
    expect(expectError(res, 422, "too_many_recipients").details).toMatchObject({ limit: 50, recipients: 150 });
    expect(await countMessages(a.inbox.id)).toBe(0);
    const refused = await auditEntries({ accountId: a.account.id, action: "message.send_refused" });
    expect(refused.map((e) => e.metadata.reason)).toEqual(["too_many_recipients"]);
  });

  it("the known-sender query binds a list of any length as one JSON parameter", async () => {
    const a = await createAccount("json-param");
    const many = Array.from({ length: 500 }, (_, i) => `r${i}@example.net`);
    const values = { accountId: a.account.id, addresses: JSON.stringify(many) };
    expect(KNOWN_SENDERS.statement(values).params.length).toBeLessThanOrEqual(3);
    expect(await KNOWN_SENDERS.all(createDb(env.DB), values)).toEqual([]);
  });
});

describe("forward (item 11)", () => {
  it("refuses from the stored sizes, without loading the original's attachments", async () => {
    const a = await createAccount("fwd-big");
    await deliver(mail({ to: a.inbox.address, subject: "Big" }), a.inbox.address);
    const row = await env.DB.prepare("SELECT id FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ id: string }>();
    // Six MiB of attachments on record and not one byte in R2: loading them would fail (500);
    // the refusal must come from the sizes alone.
    const meta = [1, 2].map((n) => ({
      id: `att_fake${n}`,
      filename: `f${n}.bin`,
      content_type: "application/octet-stream",
      size: 3 * MiB,
      content_id: null,
      disposition: "attachment",
    }));
    await env.DB.prepare("UPDATE messages SET attachments = ? WHERE id = ?").bind(JSON.stringify(meta), row?.id).run();
    const res = await call("POST", `/v1/messages/${row?.id}/forward`, {
      key: a.key,
      body: { to: ["x@example.org"] },
    });
    expect(expectError(res, 413, "message_too_large").details).toMatchObject({ size: 6 * MiB });
    expect(await countMessages(a.inbox.id)).toBe(1);
    const refused = await auditEntries({ accountId: a.account.id, action: "message.send_refused" });
    expect(refused.map((e) => e.metadata.kind)).toEqual(["forward"]);
  });
});

describe("header values (item 12)", () => {
  it("re-validates reply recipients taken from inbound headers and strips controls from the subject", async () => {
    const a = await createAccount("reply-hdr");
    await liftLimit(a.account.id);
    const sender = unique("sender");
    await deliver(mail({ to: a.inbox.address, from: sender, subject: "Hello" }), a.inbox.address, sender);
    const row = await env.DB.prepare("SELECT id FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ id: string }>();
    // What a parser bug or an old row could hold: a Reply-To with a header injection, a subject
    // with control characters.
    await env.DB.prepare("UPDATE messages SET reply_to = ?, subject = ? WHERE id = ?")
      .bind("eve@example.org\r\nBcc: victim@example.net", "Hello\u001b[2J\r\nBcc: victim@example.net", row?.id)
      .run();
    const refused = await call("POST", `/v1/messages/${row?.id}/reply`, { key: a.key, body: { body_text: "hi" } });
    expectError(refused, 422, "validation_error");

    await env.DB.prepare("UPDATE messages SET reply_to = NULL WHERE id = ?").bind(row?.id).run();
    const res = await call("POST", `/v1/messages/${row?.id}/reply`, { key: a.key, body: { body_text: "hi" } });
    expect(res.status, res.text).toBe(202);
    expect(CONTROL_CHARS.test(res.body.data.subject)).toBe(false);
    await settledMessage(res.body.data.id);
    const [got] = await smtpReceived(sender);
    expect(got?.rcptTo).toEqual([sender]);
    const parsed = await PostalMime.parse(got?.raw ?? "");
    expect(parsed.bcc ?? []).toEqual([]);
    expect(parsed.headers.filter((h) => h.key === "bcc")).toEqual([]);
    expect(parsed.subject).toMatch(/^Re: Hello/);
  });

  it("refuses control characters in an inbox's display name", async () => {
    const a = await createAccount("dn");
    const res = await call("PATCH", `/v1/inboxes/${a.inbox.id}`, {
      key: a.key,
      body: { display_name: "Support\r\nBcc: x@example.net" },
    });
    expectError(res, 422, "validation_error");
  });
});
