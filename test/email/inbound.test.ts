import { createExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import main from "../../src/index";
import arfComplaint from "../fixtures/emails/arf-complaint.eml?raw";
import dsnBounce from "../fixtures/emails/dsn-bounce.eml?raw";
import dsnDeliveryStatus from "../fixtures/emails/dsn-delivery-status.eml?raw";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";
import { deliver, fakeInbound, mail } from "../helpers/mail";
import { insertSentMessage } from "../helpers/outbound";

const worker = main as unknown as Required<ExportedHandler<Cloudflare.Env>>;

type Account = TestAccount;

async function messageRow(id: string) {
  return env.DB.prepare("SELECT * FROM messages WHERE id = ?").bind(id).first<Record<string, unknown>>();
}

/** The newest message of an inbox, from D1. */
async function newest(inboxId: string) {
  const row = await env.DB.prepare("SELECT * FROM messages WHERE inbox_id = ? ORDER BY id DESC LIMIT 1")
    .bind(inboxId)
    .first<Record<string, unknown> & { id: string; thread_id: string }>();
  if (!row) throw new Error("no message stored");
  return row;
}

async function countMessages(inboxId: string) {
  const r = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?")
    .bind(inboxId)
    .first<{ n: number }>();
  return r?.n ?? 0;
}

/** An outbound message as the sending feature stores it, so reports have something to link to. */
function insertOutbound(a: Account, rfcMessageId: string, to = "someone@example.net") {
  return insertSentMessage(a, { to: [to], rfcMessageId });
}

describe("recipient resolution", () => {
  let a: Account;
  beforeAll(async () => {
    a = await createAccount("recipients");
  });

  it("is case-insensitive and accepts +tag sub-addresses in both places", async () => {
    const [user, domain] = a.inbox.address.split("@");
    const [name, short] = user.split("--");
    const forms = [
      a.inbox.address.toUpperCase(),
      `<${a.inbox.address}>`,
      `${user}+orders@${domain}`,
      `${name}+Invoices--${short}@${domain}`,
    ];
    const before = await countMessages(a.inbox.id);
    for (const to of forms) {
      const msg = await deliver(mail({ to }), to);
      expect(msg.setReject, to).not.toHaveBeenCalled();
    }
    expect(await countMessages(a.inbox.id)).toBe(before + forms.length);
    const tagged = await newest(a.inbox.id);
    expect(tagged.envelope_to).toBe(`${name}+invoices--${short}@${domain}`.toLowerCase());
  });

  it("refuses unknown, deactivated, disabled and suspended recipients and stores nothing", async () => {
    const other = await createAccount("refused");
    const [, domain] = other.inbox.address.split("@");
    const unknown = await deliver(mail({}), `nobody--zzzzzzzz@${domain}`);
    expect(unknown.setReject).toHaveBeenCalledWith(expect.stringContaining("nobody--zzzzzzzz@"));
    const wrongDomain = await deliver(mail({}), other.inbox.address.replace(domain, "elsewhere.example"));
    expect(wrongDomain.setReject).toHaveBeenCalledOnce();

    expect((await call("DELETE", `/v1/inboxes/${other.inbox.id}`, { key: other.key })).status).toBe(200);
    const deactivated = await deliver(mail({}), other.inbox.address);
    expect(deactivated.setReject).toHaveBeenCalledWith(expect.stringContaining("disabled"));

    await env.DB.prepare("UPDATE inboxes SET status = 'disabled', disabled_reason = 'bounce_rate' WHERE id = ?")
      .bind(other.inbox.id)
      .run();
    expect((await deliver(mail({}), other.inbox.address)).setReject).toHaveBeenCalledOnce();

    await env.DB.prepare("UPDATE inboxes SET status = 'active', disabled_reason = NULL WHERE id = ?")
      .bind(other.inbox.id)
      .run();
    const suspend = await call("PATCH", `/v1/admin/accounts/${other.account.id}`, {
      headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
      body: { status: "suspended" },
    });
    expect(suspend.status, suspend.text).toBe(200);
    expect((await deliver(mail({}), other.inbox.address)).setReject).toHaveBeenCalledOnce();

    expect(await countMessages(other.inbox.id)).toBe(0);
    const objects = await env.MAIL_BUCKET.list({ prefix: `${other.account.id}/` });
    expect(objects.objects).toHaveLength(0);
  });

  it("refuses mail over 25 MiB from its declared size before reading it", async () => {
    const huge = {
      ...fakeInbound(mail({}), { from: "x@example.org", to: a.inbox.address }),
      rawSize: 25 * 1024 * 1024 + 1,
    };
    const before = await countMessages(a.inbox.id);
    await worker.email(huge, env, createExecutionContext());
    expect(huge.setReject).toHaveBeenCalledWith(expect.stringContaining("25 MiB"));
    expect(await countMessages(a.inbox.id)).toBe(before);
  });
});

describe("side effects of one received message", () => {
  it("writes the row, the raw object, an event and an audit entry", async () => {
    const a = await createAccount("effects");
    const raw = mail({ to: a.inbox.address, subject: "Invoice 42", body: "Please find the invoice.\r\n" });
    await deliver(raw, a.inbox.address, "billing@example.org");
    const row = await newest(a.inbox.id);
    expect(row).toMatchObject({
      direction: "inbound",
      status: "received",
      subject: "Invoice 42",
      envelope_from: "billing@example.org",
    });
    expect(String(row.raw_key).startsWith(`${a.account.id}/`)).toBe(true);
    const obj = await env.MAIL_BUCKET.get(String(row.raw_key));
    expect(await obj?.text()).toBe(raw);

    const event = await env.DB.prepare("SELECT * FROM events WHERE message_id = ?")
      .bind(row.id)
      .first<{ type: string; account_id: string; data: string }>();
    expect(event).toMatchObject({ type: "message.received", account_id: a.account.id });
    expect(JSON.parse(event?.data ?? "{}")).toMatchObject({
      message_id: row.id,
      inbox_id: a.inbox.id,
      thread_id: row.thread_id,
      from_address: "ana@example.org",
      subject: "Invoice 42",
      body_text: "Please find the invoice.\n",
      attachments: [],
    });

    const audit = await call("GET", "/v1/audit-log?action=message.received", { key: a.key });
    expect(audit.body.data).toHaveLength(1);
    expect(audit.body.data[0]).toMatchObject({
      actor: { type: "system" },
      target: { type: "message", id: row.id },
      inbox_id: a.inbox.id,
      metadata: { via: "email_routing", envelope_from: "billing@example.org" },
    });
    expect((await call("GET", "/v1/audit-log/verify", { key: a.key })).body.data.ok).toBe(true);
  });

  it("reports authentication verdicts only from a trusted receiver, and marks automatic mail", async () => {
    const a = await createAccount("auth");
    const forged = "Authentication-Results: evil.example; spf=pass; dkim=pass; dmarc=pass";
    const real =
      "Authentication-Results: mx.cloudflare.net; dkim=pass header.d=example.org header.s=s1 (comment; with semicolon); spf=softfail (mx.cloudflare.net: domain does not designate) smtp.mailfrom=ana@example.org; dmarc=fail header.from=example.org";
    const raw = `${real}\r\n${forged}\r\n${mail({ to: a.inbox.address, headers: { "Auto-Submitted": "auto-replied" } })}`;
    await deliver(raw, a.inbox.address);
    const res = await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key });
    expect(res.body.data[0]).toMatchObject({
      authentication: { spf: "softfail", dkim: "pass", dmarc: "fail", authserv_id: "mx.cloudflare.net" },
      auto_submitted: true,
      auto_submitted_reason: "auto-replied",
    });
    expect(res.body.data[0].headers["authentication-results"]).toHaveLength(2);

    await deliver(`${forged}\r\n${mail({ to: a.inbox.address, headers: { Precedence: "bulk" } })}`, a.inbox.address);
    const second = await call("GET", `/v1/inboxes/${a.inbox.id}/messages?limit=1`, { key: a.key });
    expect(second.body.data[0]).toMatchObject({
      authentication: null,
      auto_submitted: true,
      auto_submitted_reason: "precedence-bulk",
    });

    await deliver(mail({ to: a.inbox.address, headers: { "Auto-Submitted": "no" } }), a.inbox.address);
    const human = await call("GET", `/v1/inboxes/${a.inbox.id}/messages?limit=1`, { key: a.key });
    expect(human.body.data[0]).toMatchObject({ auto_submitted: false, auto_submitted_reason: null });
  });
});

describe("limits on stored fields", () => {
  it("cuts a huge subject and keeps the full header; the header-only fallback still reads addresses", async () => {
    const a = await createAccount("limits");
    const subject = "S".repeat(100_000);
    await deliver(mail({ subject }), a.inbox.address);
    const row = await newest(a.inbox.id);
    expect(String(row.subject)).toHaveLength(2000);
    expect(JSON.parse(String(row.headers)).subject).toHaveLength(100_000);

    // Nested too deep for the MIME parser: the header-block fallback still fills the fields.
    const deep = 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'.repeat(200);
    const raw = mail({
      from: '"Ana Q." <Ana@Example.org>',
      to: "x@example.net, Y <y@example.net>",
      headers: { Cc: "z@example.net" },
      contentType: 'multipart/mixed; boundary="b"',
      body: `--b\r\n${deep}`,
    });
    await deliver(raw, a.inbox.address);
    const broken = await newest(a.inbox.id);
    expect(broken.parse_error).toEqual(expect.stringContaining("nesting"));
    expect(broken).toMatchObject({ from_address: "ana@example.org", from_name: "Ana Q." });
    expect(JSON.parse(String(broken.to))).toEqual(["x@example.net", "y@example.net"]);
    expect(JSON.parse(String(broken.cc))).toEqual(["z@example.net"]);
  });
});

describe("hostile mail", () => {
  it("bounded work and rows: unclosed HTML tags, oversized ids, hundreds of attachments", async () => {
    const a = await createAccount("hostile");
    // An HTML-only body of unclosed <head> tags (a backtracking regex would take minutes).
    await deliver(
      mail({ subject: "tags", contentType: "text/html", body: `${"<head>x ".repeat(40_000)}\r\n` }),
      a.inbox.address,
    );
    const tags = await newest(a.inbox.id);
    expect(String(tags.search_text).length).toBeLessThanOrEqual(32 * 1024);

    // A Message-ID longer than RFC 5322 allows is ignored, not stored (nor used to dedupe).
    const longId = `<${"x".repeat(5000)}@example.org>`;
    await deliver(
      mail({ messageId: longId, inReplyTo: longId, references: `${longId} <ok@example.org>` }),
      a.inbox.address,
    );
    const ids = await newest(a.inbox.id);
    expect(ids.rfc_message_id).toBeNull();
    expect(String(ids.dedupe_key)).toMatch(/^sha256:/);
    expect(JSON.parse(String(ids.references))).toEqual(["<ok@example.org>"]);

    // 150 tiny attachments: 100 become objects, the rest stay in the raw message (and are counted).
    const parts = Array.from({ length: 150 }, (_, i) =>
      [
        "--b",
        `Content-Type: text/plain; name="f${i}.txt"`,
        `Content-Disposition: attachment; filename="f${i}.txt"`,
        "",
        `file ${i}`,
      ].join("\r\n"),
    );
    await deliver(
      mail({
        subject: "many parts",
        contentType: 'multipart/mixed; boundary="b"',
        body: `${parts.join("\r\n")}\r\n--b--\r\n`,
      }),
      a.inbox.address,
    );
    const many = await newest(a.inbox.id);
    const stored = await env.DB.prepare("SELECT COUNT(*) AS n FROM attachments WHERE message_id = ?")
      .bind(many.id)
      .first<{ n: number }>();
    expect(stored?.n).toBe(100);
    const audit = await call("GET", "/v1/audit-log?action=message.received&limit=1", { key: a.key });
    expect(audit.body.data[0].metadata).toMatchObject({ attachments: 100, attachments_omitted: 50 });
  });
});

describe("threading", () => {
  let a: Account;
  beforeAll(async () => {
    a = await createAccount("threads");
  });

  it("threads a reply chain by In-Reply-To and References, with participants and counters", async () => {
    const root = "<root-1@example.org>";
    await deliver(mail({ messageId: root, subject: "Project kickoff", from: "ana@example.org" }), a.inbox.address);
    const first = await newest(a.inbox.id);

    await deliver(
      mail({
        messageId: "<reply-1@example.com>",
        subject: "Re: Project kickoff",
        from: "Bo <bo@example.com>",
        inReplyTo: root,
        references: root,
      }),
      a.inbox.address,
    );
    const second = await newest(a.inbox.id);
    expect(second.thread_id).toBe(first.thread_id);

    // In-Reply-To unknown: References is read right to left and the known id wins.
    await deliver(
      mail({
        messageId: "<reply-2@example.net>",
        subject: "completely different subject",
        from: "cy@example.net",
        inReplyTo: "<never-seen@example.net>",
        references: `<older-unknown@x> ${root} <reply-1@example.com> <also-unknown@y>`,
      }),
      a.inbox.address,
    );
    const third = await newest(a.inbox.id);
    expect(third.thread_id).toBe(first.thread_id);

    const thread = await call("GET", `/v1/inboxes/${a.inbox.id}/threads/${first.thread_id}`, { key: a.key });
    expect(thread.status).toBe(200);
    expect(thread.body.data).toMatchObject({ subject: "Project kickoff", message_count: 3 });
    expect(thread.body.data.participants).toEqual(
      expect.arrayContaining(["ana@example.org", "bo@example.com", "cy@example.net"]),
    );
    expect(thread.body.data.messages.map((m: { id: string }) => m.id)).toEqual([first.id, second.id, third.id]);
  });

  it("falls back to the normalised subject within 7 days, else starts a new thread", async () => {
    await deliver(mail({ subject: "Weekly report" }), a.inbox.address);
    const first = await newest(a.inbox.id);
    await deliver(mail({ subject: "RE: Fwd:  weekly   REPORT" }), a.inbox.address);
    expect((await newest(a.inbox.id)).thread_id).toBe(first.thread_id);

    // Age the thread past the window: the same subject now starts a new one.
    await env.DB.prepare("UPDATE threads SET last_message_at = last_message_at - ? WHERE id = ?")
      .bind(8 * 24 * 3600 * 1000, first.thread_id)
      .run();
    await deliver(mail({ subject: "Re: Weekly report" }), a.inbox.address);
    expect((await newest(a.inbox.id)).thread_id).not.toBe(first.thread_id);

    // A subject that matches nothing, and no headers: a new thread.
    await deliver(mail({ subject: "Something else entirely" }), a.inbox.address);
    const lone = await newest(a.inbox.id);
    const t = await env.DB.prepare("SELECT message_count FROM threads WHERE id = ?")
      .bind(lone.thread_id)
      .first<{ message_count: number }>();
    expect(t?.message_count).toBe(1);
  });

  it("never threads across inboxes", async () => {
    const root = "<cross-inbox-root@example.org>";
    await deliver(mail({ messageId: root, subject: "Shared subject" }), a.inbox.address);
    const b = await createAccount("threads-b");
    await deliver(mail({ subject: "Re: Shared subject", inReplyTo: root, references: root }), b.inbox.address);
    const inA = await newest(a.inbox.id);
    const inB = await newest(b.inbox.id);
    expect(inB.thread_id).not.toBe(inA.thread_id);
  });
});

describe("delivery reports", () => {
  it("links a DSN bounce to the outbound message by its Message-ID and records it", async () => {
    const a = await createAccount("dsn");
    const out = await insertOutbound(
      a,
      "<e85f1c9b-9b51-4028-8ec0-0a657155028e@app.fastmail.com>",
      "htfgvhyufthdgcvhgjyfthgc@ethereal.email",
    );
    const msg = await deliver(dsnBounce, a.inbox.address, "");
    expect(msg.setReject).not.toHaveBeenCalled();

    const report = await newest(a.inbox.id);
    expect(report).toMatchObject({ report_type: "delivery_status", auto_submitted: "delivery-status" });
    const dlv = await env.DB.prepare("SELECT * FROM delivery_reports WHERE report_message_id = ?")
      .bind(report.id)
      .all();
    expect(dlv.results).toEqual([
      expect.objectContaining({
        kind: "bounce",
        bounce_type: "hard",
        recipient: "htfgvhyufthdgcvhgjyfthgc@ethereal.email",
        status_code: "5.0.0",
        diagnostic: "550 No such user here",
        original_message_id: out.id,
      }),
    ]);
    expect((await messageRow(out.id))?.status).toBe("bounced");
    const event = await env.DB.prepare("SELECT * FROM events WHERE type = 'message.bounced' AND message_id = ?")
      .bind(out.id)
      .first<{ data: string }>();
    expect(JSON.parse(event?.data ?? "{}")).toMatchObject({ bounce_type: "hard", status_code: "5.0.0" });
    const audit = await call("GET", "/v1/audit-log?action=message.bounced", { key: a.key });
    expect(audit.body.data).toHaveLength(1);
    expect(audit.body.data[0].target).toEqual({ type: "message", id: out.id });

    // The same report again (another copy, another Message-ID) is recorded but counts once.
    await deliver(
      dsnBounce.replace("<20221010053722.37BD05C00A2@mailout.nyi.internal>", "<copy-2@x>"),
      a.inbox.address,
      "",
    );
    const again = await call("GET", "/v1/audit-log?action=message.bounced", { key: a.key });
    expect(again.body.data).toHaveLength(1);

    // The report is also ordinary mail in the inbox.
    const listed = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${report.id}`, { key: a.key });
    expect(listed.body.data).toMatchObject({ report_type: "delivery_status", auto_submitted: true });
  });

  it("reads a DSN without a Status field (old sendmail style) as a hard bounce by its 500 reply", async () => {
    const a = await createAccount("dsn-old");
    const out = await insertOutbound(a, "<31FC7EB4.41C6@netscape.com>", "newsletter-request@imusic.com");
    await deliver(dsnDeliveryStatus, a.inbox.address, "");
    const dlv = await env.DB.prepare("SELECT * FROM delivery_reports WHERE original_message_id = ?")
      .bind(out.id)
      .first();
    expect(dlv).toMatchObject({
      kind: "bounce",
      bounce_type: "hard",
      recipient: "newsletter-request@imusic.com",
      diagnostic: "500 (err.nosuchuser)",
    });
  });

  it("links by the +msg_ tag of the bounce address when the Message-ID is unknown, and keeps unlinked reports", async () => {
    const a = await createAccount("dsn-verp");
    const out = await insertOutbound(a, "<not-the-one@example.org>", "htfgvhyufthdgcvhgjyfthgc@ethereal.email");
    const [user, domain] = a.inbox.address.split("@");
    await deliver(dsnBounce, `${user}+${out.id}@${domain}`, "");
    expect((await messageRow(out.id))?.status).toBe("bounced");

    // Knowing a Message-ID is not enough: a report for an address the message never went to
    // is recorded, unlinked, and changes nothing.
    const forged = await insertOutbound(
      a,
      "<e85f1c9b-9b51-4028-8ec0-0a657155028e@app.fastmail.com>",
      "someone-else@example.net",
    );
    await deliver(
      dsnBounce.replace("<20221010053722.37BD05C00A2@mailout.nyi.internal>", "<forged@x>"),
      a.inbox.address,
      "",
    );
    expect((await messageRow(forged.id))?.status).toBe("sent");

    const b = await createAccount("dsn-unlinked");
    await deliver(dsnBounce, b.inbox.address, "");
    const report = await newest(b.inbox.id);
    const dlv = await env.DB.prepare("SELECT * FROM delivery_reports WHERE report_message_id = ?")
      .bind(report.id)
      .first();
    expect(dlv).toMatchObject({ kind: "bounce", original_message_id: null });
  });

  it("links an ARF complaint and marks the message complained", async () => {
    const a = await createAccount("arf");
    const out = await insertOutbound(a, "<8787KJKJ3K4J3K4J3K4J3.mail@example.net>", "user@example.com");
    // The fixture has no Message-ID (wrangler's local endpoint would refuse it; Email Routing may not).
    await deliver(arfComplaint, a.inbox.address, "abusedesk@example.com");
    const report = await newest(a.inbox.id);
    expect(report.report_type).toBe("feedback");
    const dlv = await env.DB.prepare("SELECT * FROM delivery_reports WHERE report_message_id = ?")
      .bind(report.id)
      .first();
    expect(dlv).toMatchObject({
      kind: "complaint",
      feedback_type: "abuse",
      recipient: "user@example.com",
      original_message_id: out.id,
    });
    const row = await messageRow(out.id);
    expect(row?.status).toBe("sent");
    expect(row?.complained_at).toEqual(expect.any(Number));
    const audit = await call("GET", "/v1/audit-log?action=message.complained", { key: a.key });
    expect(audit.body.data).toHaveLength(1);
    const event = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM events WHERE type = 'message.complained' AND message_id = ?",
    )
      .bind(out.id)
      .first<{ n: number }>();
    expect(event?.n).toBe(1);
  });
});

describe("POST /webhooks/inbound/raw", () => {
  let a: Account;
  beforeAll(async () => {
    a = await createAccount("relay");
  });

  async function sign(body: Uint8Array | string, ts = Math.floor(Date.now() / 1000), secret = "test-inbound-secret") {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    const key = await crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const signed = new Uint8Array([...new TextEncoder().encode(`${ts}.`), ...bytes]);
    const hex = [...new Uint8Array(await crypto.subtle.sign("HMAC", key, signed))]
      .map((b) => b.toString(16).padStart(2, "0"))
      .join("");
    return { "X-Mailbot-Timestamp": String(ts), "X-Mailbot-Signature": `sha256=${hex}` };
  }

  async function relay(body: Uint8Array | string, to: string, headers: Record<string, string>) {
    const res = await exports.default.fetch(
      new Request(`http://localhost/webhooks/inbound/raw?to=${encodeURIComponent(to)}&from=relay%40example.org`, {
        method: "POST",
        headers: { "Content-Type": "message/rfc822", ...headers },
        body,
      }),
    );
    const text = await res.text();
    return { status: res.status, headers: res.headers, text, body: text ? JSON.parse(text) : null };
  }

  it("stores a correctly signed message through the same pipeline, once", async () => {
    // Bytes that are not valid UTF-8 must arrive byte for byte.
    const raw = new Uint8Array([
      ...new TextEncoder().encode(
        mail({ subject: "Relayed", contentType: "text/plain; charset=iso-8859-1", body: "" }),
      ),
      0x63,
      0x61,
      0x66,
      0xe9,
      0x0d,
      0x0a,
    ]);
    const res = await relay(raw, a.inbox.address, await sign(raw));
    expect(res.status, res.text).toBe(202);
    expect(res.body.data).toMatchObject({
      message_id: expect.stringMatching(/^msg_/),
      inbox_id: a.inbox.id,
      duplicate: false,
    });
    const row = await messageRow(res.body.data.message_id);
    expect(row).toMatchObject({ subject: "Relayed", envelope_from: "relay@example.org", body_text: "café\n" });
    const stored = await env.MAIL_BUCKET.get(String(row?.raw_key));
    expect(new Uint8Array((await stored?.arrayBuffer()) ?? new ArrayBuffer(0))).toEqual(raw);
    const audit = await call("GET", "/v1/audit-log?action=message.received", { key: a.key });
    expect(audit.body.data[0].metadata.via).toBe("inbound_webhook");

    const again = await relay(raw, a.inbox.address, await sign(raw));
    expect(again.status).toBe(202);
    expect(again.body.data).toMatchObject({ message_id: res.body.data.message_id, duplicate: true });
    expect(await countMessages(a.inbox.id)).toBe(1);
  });

  it("refuses bad signatures, stale timestamps, unknown recipients and oversize bodies with the envelope", async () => {
    const raw = mail({ subject: "Nope" });
    const good = await sign(raw);
    const none = await relay(raw, a.inbox.address, {});
    expectError(none as never, 401, "invalid_signature");
    const wrong = await relay(raw, a.inbox.address, await sign(raw, undefined, "another-secret"));
    expectError(wrong as never, 401, "invalid_signature");
    const tampered = await relay(`${raw}x`, a.inbox.address, good);
    expectError(tampered as never, 401, "invalid_signature");
    const stale = Math.floor(Date.now() / 1000) - 301;
    expectError((await relay(raw, a.inbox.address, await sign(raw, stale))) as never, 401, "timestamp_out_of_range");
    expectError((await relay(raw, "nobody--zzzz@mailbot.test", good)) as never, 404, "unknown_recipient");

    // A captured signed request cannot be pointed at another inbox; the same request may be retried.
    const victim = await createAccount("relay-victim");
    const replayed = mail({ subject: "Replay me" });
    const signed = await sign(replayed);
    expect((await relay(replayed, a.inbox.address, signed)).status).toBe(202);
    expect((await relay(replayed, a.inbox.address.toUpperCase(), signed)).status).toBe(202);
    expectError((await relay(replayed, victim.inbox.address, signed)) as never, 401, "invalid_signature");
    expect(await countMessages(victim.inbox.id)).toBe(0);
    const claims = await env.DB.prepare("SELECT COUNT(*) AS n FROM relay_signatures").first<{ n: number }>();
    expect(claims?.n).toBeGreaterThanOrEqual(2);

    const over = new Uint8Array(25 * 1024 * 1024 + 1).fill(0x61);
    expectError((await relay(over, a.inbox.address, await sign(over))) as never, 413, "message_too_large");
    expect(await countMessages(a.inbox.id)).toBe(2);
  });
});
