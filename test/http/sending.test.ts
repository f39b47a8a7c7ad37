import { env } from "cloudflare:workers";
import PostalMime from "postal-mime";
import { describe, expect, it } from "vitest";
import { SendMessageInput } from "../../src/features/outbound/outbound.schemas";
import { sendMessage } from "../../src/features/outbound/outbound.service";
import { createAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { auditEntries, liftLimit, serviceContext, settledMessage, unique } from "../helpers/db";
import { deliver, mail } from "../helpers/mail";
import { smtpReceived } from "../helpers/outbound";

describe("sending through the SMTP relay", () => {
  it("accepts in 202, the consumer submits the exact stored bytes, and status, audit and events follow", async () => {
    const a = await createAccount("sender");
    const to = unique("bob");
    const pdf = new Uint8Array([0x25, 0x50, 0x44, 0x46, 0x2d, 0x31, 0x2e, 0x34, 0x0a, 0x00, 0xff, 0xfe]);
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: {
        to: [`Bob Bühler <${to}>`],
        cc: [],
        subject: "Grüße aus Zürich — a subject long enough to need more than one encoded word, surely",
        body_text: "Hallo Bob,\n.leading dot line\nthe numbers are attached. Ünïcödé ✓",
        body_html: "<p>Hallo Bob, the numbers are attached.</p>",
        attachments: [
          { filename: "zahlen-März.pdf", content_type: "application/pdf", content: btoa(String.fromCharCode(...pdf)) },
        ],
        headers: { "X-Campaign": "q3 café" },
        labels: ["outreach"],
      },
    });
    expect(res.status, res.text).toBe(202);
    const sent = res.body.data;
    expect(sent).toMatchObject({
      direction: "outbound",
      status: "queued",
      from_address: a.inbox.address,
      to: [to],
      labels: ["outreach"],
      attachments: [{ filename: "zahlen-März.pdf", content_type: "application/pdf", size: pdf.length }],
    });
    expect(sent.rfc_message_id).toMatch(new RegExp(`^<${sent.id}@mailbot\\.test>$`));

    const final = await settledMessage(sent.id);
    expect(final).toMatchObject({ status: "sent", attempts: 1, last_error: null });
    expect(final.sent_at).toEqual(expect.any(Number));

    const [got, ...more] = await smtpReceived(to);
    expect(more).toHaveLength(0);
    if (!got) throw new Error("the SMTP server received nothing");
    const [local, domain] = a.inbox.address.split("@");
    // The recipient's own bounce address: the message id and a token over (message, recipient).
    expect(got.mailFrom).toMatch(new RegExp(`^${local}\\+${sent.id}\\.[0-9a-f]{20}@${domain}$`));
    expect(got.mailFrom).toBe(sent.bounce_addresses[to]);
    expect(got.rcptTo).toEqual([to]);
    expect(got.user).toBe("mailbot");

    // The raw endpoint serves exactly what the relay received.
    const raw = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${sent.id}/raw`, { key: a.key });
    expect(raw.status).toBe(200);
    expect(got.raw).toBe(raw.text);
    expect(got.raw).not.toMatch(/(^|\n)[^\r\n]{999,}/);

    // An independent parser reads it back as sent.
    const parsed = await PostalMime.parse(got.raw);
    expect(parsed.subject).toBe("Grüße aus Zürich — a subject long enough to need more than one encoded word, surely");
    expect(parsed.from).toMatchObject({ address: a.inbox.address });
    expect(parsed.to?.[0]).toMatchObject({ name: "Bob Bühler", address: to });
    expect(parsed.messageId).toBe(sent.rfc_message_id);
    expect(parsed.text?.trim()).toBe("Hallo Bob,\n.leading dot line\nthe numbers are attached. Ünïcödé ✓");
    expect(parsed.html).toContain("the numbers are attached");
    expect(parsed.attachments).toHaveLength(1);
    expect(parsed.attachments[0]?.filename).toBe("zahlen-März.pdf");
    expect(new Uint8Array(parsed.attachments[0]?.content as ArrayBuffer)).toEqual(pdf);
    // Non-ASCII header values go out as RFC 2047 encoded words.
    const campaign = btoa(String.fromCharCode(...new TextEncoder().encode("q3 café")));
    expect(parsed.headers.find((h) => h.key === "x-campaign")?.value).toBe(`=?utf-8?B?${campaign}?=`);
    expect(got.raw).not.toMatch(/^bcc:/im);

    const actions = (await auditEntries({ accountId: a.account.id, targetId: sent.id })).map((e) => e.action);
    expect(actions).toEqual(["message.send_attempted", "message.sent"]);
    const events = await env.DB.prepare("SELECT type, data FROM events WHERE message_id = ?").bind(sent.id).all();
    expect(events.results.map((e) => e.type)).toEqual(["message.sent"]);

    const fetched = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${sent.id}`, { key: a.key });
    expect(fetched.body.data).toMatchObject({ status: "sent", error: null, attempts: 1 });
    const attachment = await call(
      "GET",
      `/v1/inboxes/${a.inbox.id}/messages/${sent.id}/attachments/${sent.attachments[0].id}`,
      { key: a.key },
    );
    expect(attachment.status).toBe(200);
  });

  it("HTML-only mail gets a text alternative; bcc reaches the envelope but never the headers", async () => {
    const a = await createAccount("html");
    const to = unique("html");
    const hidden = unique("hidden");
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: {
        to: [to],
        bcc: [hidden],
        subject: "Only HTML",
        body_html: '<h1>Welcome</h1><p>Read the <a href="https://example.org/guide">guide</a>.</p><script>x()</script>',
      },
    });
    expect(res.status, res.text).toBe(202);
    expect(res.body.data.body_text).toBe("Welcome\n\nRead the guide (https://example.org/guide).");
    expect(res.body.data.bcc).toEqual([hidden]);
    await settledMessage(res.body.data.id);
    // One transaction per recipient (each with its own bounce address): bcc in the envelope only.
    const [got] = await smtpReceived(hidden);
    expect(got?.rcptTo).toEqual([hidden]);
    expect(got?.raw).not.toContain(hidden);
    expect((await smtpReceived(to)).filter((m) => m.raw.includes(res.body.data.id))).toHaveLength(1);
  });

  it("replies thread on both sides: In-Reply-To, References in RFC order, one Re:, reply_all without the inbox", async () => {
    const a = await createAccount("replier");
    const original = mail({
      from: "Carol <carol@example.org>",
      to: `${a.inbox.address}, dave@example.org`,
      subject: "Re: Budget",
      messageId: "<orig-2@example.org>",
      inReplyTo: "<orig-1@example.org>",
      references: "<orig-0@example.org> <orig-1@example.org>",
      headers: { Cc: "erin@example.org" },
    });
    expect((await deliver(original, a.inbox.address, "carol@example.org")).setReject).not.toHaveBeenCalled();
    const inbound = await env.DB.prepare(
      "SELECT id, thread_id FROM messages WHERE inbox_id = ? AND direction = 'inbound'",
    )
      .bind(a.inbox.id)
      .first<{ id: string; thread_id: string }>();
    if (!inbound) throw new Error("no inbound message");

    const res = await call("POST", `/v1/messages/${inbound.id}/reply`, {
      key: a.key,
      body: { body_text: "Sounds good.", reply_all: true },
    });
    expect(res.status, res.text).toBe(202);
    const reply = res.body.data;
    expect(reply).toMatchObject({
      thread_id: inbound.thread_id,
      subject: "Re: Budget",
      to: ["carol@example.org"],
      cc: ["dave@example.org", "erin@example.org"],
      in_reply_to: "<orig-2@example.org>",
      references: ["<orig-0@example.org>", "<orig-1@example.org>", "<orig-2@example.org>"],
    });
    await settledMessage(reply.id);
    const [got] = await smtpReceived("carol@example.org").then((list) => list.filter((m) => m.raw.includes(reply.id)));
    if (!got) throw new Error("the reply did not reach the relay");
    for (const r of ["dave@example.org", "erin@example.org"]) {
      expect((await smtpReceived(r)).filter((m) => m.raw.includes(reply.id))).toHaveLength(1);
    }
    const parsed = await PostalMime.parse(got.raw);
    expect(parsed.inReplyTo).toBe("<orig-2@example.org>");
    expect(parsed.references).toBe("<orig-0@example.org> <orig-1@example.org> <orig-2@example.org>");
    expect(parsed.subject).toBe("Re: Budget");

    // Carol answers the reply: the inbound pipeline threads it with the conversation.
    const answer = mail({
      from: "carol@example.org",
      to: a.inbox.address,
      subject: "Re: Budget",
      inReplyTo: reply.rfc_message_id,
      references: `<orig-1@example.org> <orig-2@example.org> ${reply.rfc_message_id}`,
    });
    await deliver(answer, a.inbox.address, "carol@example.org");
    const thread = await call("GET", `/v1/inboxes/${a.inbox.id}/threads/${inbound.thread_id}`, { key: a.key });
    expect(thread.body.data.message_count).toBe(3);
    expect(thread.body.data.messages.map((m: { direction: string }) => m.direction)).toEqual([
      "inbound",
      "outbound",
      "inbound",
    ]);
  });

  it("forwards with the original's attachments, in the original's thread", async () => {
    const a = await createAccount("forwarder");
    await liftLimit(a.account.id);
    const withFile = mail({
      to: a.inbox.address,
      subject: "Invoice",
      contentType: 'multipart/mixed; boundary="b1"',
      body: [
        "--b1",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Invoice attached.",
        "--b1",
        'Content-Type: application/pdf; name="inv.pdf"',
        'Content-Disposition: attachment; filename="inv.pdf"',
        "Content-Transfer-Encoding: base64",
        "",
        "JVBERi0xLjQK",
        "--b1--",
        "",
      ].join("\r\n"),
    });
    await deliver(withFile, a.inbox.address);
    const inbound = await env.DB.prepare("SELECT id, thread_id FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ id: string; thread_id: string }>();
    const to = unique("accounting");
    const res = await call("POST", `/v1/messages/${inbound?.id}/forward`, {
      key: a.key,
      body: { to: [to], body_text: "FYI" },
    });
    expect(res.status, res.text).toBe(202);
    expect(res.body.data).toMatchObject({ subject: "Fwd: Invoice", thread_id: inbound?.thread_id });
    await settledMessage(res.body.data.id);
    const [got] = await smtpReceived(to);
    const parsed = await PostalMime.parse(got?.raw ?? "");
    expect(parsed.text).toContain("FYI");
    expect(parsed.text).toContain("Invoice attached.");
    expect(parsed.attachments.map((f) => f.filename)).toEqual(["inv.pdf"]);
  });
});

describe("internal delivery", () => {
  it("two inboxes of the deployment talk with no transport, and replies thread on both sides", async () => {
    const a = await createAccount("agent-a");
    const b = await createAccount("agent-b");
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [b.inbox.address], subject: "Handshake", body_text: "Hello B" },
    });
    expect(res.status, res.text).toBe(202);
    const out = await settledMessage(res.body.data.id);
    expect(out.status).toBe("sent");
    expect(await smtpReceived(b.inbox.address)).toHaveLength(0);

    const waited = await call(
      "GET",
      `/v1/inboxes/${b.inbox.id}/messages/wait?subject_contains=Handshake&since=2000-01-01T00:00:00Z&timeout_ms=5000`,
      {
        key: b.key,
      },
    );
    expect(waited.status, waited.text).toBe(200);
    expect(waited.body.data).toMatchObject({ direction: "inbound", from_address: a.inbox.address });
    expect(waited.body.data.body_text.trim()).toBe("Hello B");

    const reply = await call("POST", `/v1/messages/${waited.body.data.id}/reply`, {
      key: b.key,
      body: { body_text: "Hi A" },
    });
    expect(reply.status, reply.text).toBe(202);
    await settledMessage(reply.body.data.id);
    const back = await call(
      "GET",
      `/v1/inboxes/${a.inbox.id}/messages/wait?direction=inbound&since=2000-01-01T00:00:00Z&timeout_ms=5000`,
      {
        key: a.key,
      },
    );
    expect(back.status, back.text).toBe(200);
    expect(back.body.data).toMatchObject({ subject: "Re: Handshake", thread_id: res.body.data.thread_id });

    // An address on our domain that no inbox owns is refused, not sent to the outside.
    const ghost = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["nobody--zzzz@mailbot.test"], subject: "Ghost", body_text: "?" },
    });
    // Refused by the receiving side (here: ourselves) for good: a hard bounce (reputation, suppression).
    const ghostRow = await settledMessage(ghost.body.data.id, ["bounced"]);
    expect(ghostRow.last_error).toMatch(/unknown_recipient/);
  });
});

describe("validation and refusals", () => {
  it("rejects bad input with the error envelope and stores nothing", async () => {
    const a = await createAccount("validator");
    const url = `/v1/inboxes/${a.inbox.id}/messages`;
    const cases: [unknown, string][] = [
      [{ to: ["not an address"], subject: "x", body_text: "x" }, "to.0"],
      [{ to: [], subject: "x", body_text: "x" }, "to"],
      [{ to: ["a@example.org"], subject: "x" }, "body_text"],
      [{ to: ["a@example.org"], subject: "x\r\nBcc: evil@example.org", body_text: "x" }, "subject"],
      [{ to: ["a@example.org"], subject: "x", body_text: "x", headers: { From: "ceo@bank.example" } }, "headers.From"],
      [
        { to: ["a@example.org"], subject: "x", body_text: "x", headers: { "DKIM-Signature": "v=1" } },
        "headers.DKIM-Signature",
      ],
      [{ to: ["a@example.org"], subject: "x", body_text: "x", headers: { "X-Ok": "a\r\nB: c" } }, "headers.X-Ok"],
      [
        { to: ["a@example.org"], subject: "x", body_text: "x", attachments: [{ filename: "a.bin", content: "***" }] },
        "attachments.0.content",
      ],
      [{ to: ["a@example.org"], subject: "x", body_text: "x", surprise: true }, ""],
    ];
    for (const [body, path] of cases) {
      const res = await call("POST", url, { key: a.key, body });
      const error = expectError(res, 422, "validation_error");
      if (path)
        expect(
          error.details.map((d: { path: string }) => d.path),
          JSON.stringify(body),
        ).toContain(path);
    }
    const count = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(0);
  });

  it("refuses a disabled inbox, too many recipients and an oversized message, audits each, sends nothing", async () => {
    const a = await createAccount("refused");
    const url = `/v1/inboxes/${a.inbox.id}/messages`;
    const list = (p: string, n: number) => Array.from({ length: n }, (_, i) => `${p}${i}@example.org`);
    const tooMany = await call("POST", url, {
      key: a.key,
      body: { to: list("t", 20), cc: list("c", 20), bcc: list("b", 11), subject: "x", body_text: "x" },
    });
    expect(expectError(tooMany, 422, "too_many_recipients").details).toMatchObject({ limit: 50, recipients: 51 });

    const big = btoa("x".repeat(2.6 * 1024 * 1024));
    const tooLarge = await call("POST", url, {
      key: a.key,
      body: {
        to: ["a@example.org"],
        subject: "big",
        body_text: "x",
        attachments: [
          { filename: "a.bin", content: big },
          { filename: "b.bin", content: big },
        ],
      },
    });
    expectError(tooLarge, 413, "message_too_large");

    await call("DELETE", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    const disabled = await call("POST", url, {
      key: a.key,
      body: { to: ["a@example.org"], subject: "x", body_text: "x" },
    });
    expectError(disabled, 403, "inbox_disabled");

    const refusals = (await auditEntries({ accountId: a.account.id })).filter(
      (e) => e.action === "message.send_refused",
    );
    expect(refusals.map((e) => e.metadata.reason)).toEqual([
      "too_many_recipients",
      "message_too_large",
      "inbox_disabled",
    ]);
    const count = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(0);
    // The refused sends gave their send-limit slots back: ten sends still fit today.
    const usage = await env.RATE_LIMITER.getByName(`send:account:${a.account.id}`).slotUsage(24 * 3600_000);
    expect(usage.used).toBe(0);
  });

  it("50 concurrent sends from a new account: exactly 10 accepted, 40 refused with 429; the window slides", async () => {
    const a = await createAccount("burst");
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
          key: a.key,
          body: { to: [`burst${i}@example.org`], subject: `n${i}`, body_text: "x" },
        }),
      ),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 202)).toHaveLength(10);
    expect(statuses.filter((s) => s === 429)).toHaveLength(40);
    for (const r of results.filter((x) => x.status === 429)) {
      const error = expectError(r, 429, "send_limit_exceeded");
      expect(Number(r.headers.get("Retry-After"))).toBeGreaterThan(0);
      expect(error.details).toMatchObject({ limit: 10, window_hours: 24, scope: "new_account" });
    }
    const stored = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ n: number }>();
    expect(stored?.n).toBe(10);
    const refusals = (await auditEntries({ accountId: a.account.id })).filter(
      (e) => e.action === "message.send_refused",
    );
    expect(refusals).toHaveLength(40);
    expect(refusals.every((e) => e.metadata.reason === "send_limit_exceeded")).toBe(true);

    // Through the service clock: a day later the window has slid and sending works again.
    const ctx = serviceContext(a.account.id, {
      actor: { type: "api_key", id: null },
      now: () => Date.now() + 24 * 3600_000 + 1000,
    });
    const input = SendMessageInput.parse({ to: ["later@example.org"], subject: "later", body_text: "x" });
    const later = await sendMessage(ctx, a.inbox.id, input);
    expect(later.status).toBe("queued");
    for (let i = 0; i < 9; i++) await sendMessage(ctx, a.inbox.id, input);
    await expect(sendMessage(ctx, a.inbox.id, input)).rejects.toMatchObject({ code: "send_limit_exceeded" });
  });

  it("Idempotency-Key: the same request replays the first response; another body is 409", async () => {
    const a = await createAccount("idem");
    const body = { to: ["idem@example.org"], subject: "once", body_text: "only once" };
    const headers = { "Idempotency-Key": `send-${crypto.randomUUID()}` };
    const first = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key, body, headers });
    const second = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key, body, headers });
    expect(first.status).toBe(202);
    expect(second.status).toBe(202);
    expect(second.headers.get("Idempotent-Replayed")).toBe("true");
    expect(second.body.data.id).toBe(first.body.data.id);
    const other = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { ...body, subject: "twice" },
      headers,
    });
    expectError(other, 409, "idempotency_key_reused");
    const stored = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ n: number }>();
    expect(stored?.n).toBe(1);
  });

  it("reply and forward of another account's message are 404 and write nothing", async () => {
    const a = await createAccount("victim");
    const b = await createAccount("intruder");
    await deliver(mail({ to: a.inbox.address, subject: "Private" }), a.inbox.address);
    const msg = await env.DB.prepare("SELECT id FROM messages WHERE inbox_id = ?")
      .bind(a.inbox.id)
      .first<{ id: string }>();
    expectError(
      await call("POST", `/v1/messages/${msg?.id}/reply`, { key: b.key, body: { body_text: "x" } }),
      404,
      "not_found",
    );
    expectError(
      await call("POST", `/v1/messages/${msg?.id}/forward`, { key: b.key, body: { to: ["x@example.org"] } }),
      404,
      "not_found",
    );
    const count = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE account_id IN (?, ?)")
      .bind(a.account.id, b.account.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(1);
  });
});
