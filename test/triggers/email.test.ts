import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it, vi } from "vitest";
import arfComplaint from "../fixtures/emails/arf-complaint.eml?raw";
import dsnBounce from "../fixtures/emails/dsn-bounce.eml?raw";
import dsnDeliveryStatus from "../fixtures/emails/dsn-delivery-status.eml?raw";
import mixedAttachmentsEml from "../fixtures/emails/mixed-attachments.eml?raw";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call } from "../helpers/api";
import { countMessages, countRows, messageRow, worker } from "../helpers/db";
import { deliver, fakeInbound, mail } from "../helpers/mail";
import { insertSentMessage } from "../helpers/outbound";
import { bounceAddressOf, fromFeedbackLoop } from "../helpers/reports";

/** The newest message of an inbox, from D1. */
async function newest(inboxId: string) {
  const row = await env.DB.prepare("SELECT * FROM messages WHERE inbox_id = ? ORDER BY id DESC LIMIT 1")
    .bind(inboxId)
    .first<Record<string, unknown> & { id: string; thread_id: string }>();
  if (!row) throw new Error("no message stored");
  return row;
}

/** An outbound message as the sending feature stores it, so reports have something to link to. */
function insertOutbound(a: TestAccount, rfcMessageId: string, to = "someone@example.net") {
  return insertSentMessage(a, { to: [to], rfcMessageId });
}

describe("recipient resolution", () => {
  let a: TestAccount;
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
  let a: TestAccount;
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
    const to = await bounceAddressOf(out.id, "htfgvhyufthdgcvhgjyfthgc@ethereal.email");
    const msg = await deliver(dsnBounce, to, "");
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
    await deliver(dsnBounce.replace("<20221010053722.37BD05C00A2@mailout.nyi.internal>", "<copy-2@x>"), to, "");
    const again = await call("GET", "/v1/audit-log?action=message.bounced", { key: a.key });
    expect(again.body.data).toHaveLength(1);

    // The report is also ordinary mail in the inbox.
    const listed = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${report.id}`, { key: a.key });
    expect(listed.body.data).toMatchObject({ report_type: "delivery_status", auto_submitted: true });
  });

  it("reads a DSN without a Status field (old sendmail style) as a hard bounce by its 500 reply", async () => {
    const a = await createAccount("dsn-old");
    const out = await insertOutbound(a, "<31FC7EB4.41C6@netscape.com>", "newsletter-request@imusic.com");
    await deliver(dsnDeliveryStatus, await bounceAddressOf(out.id, "newsletter-request@imusic.com"), "");
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

  it("links only by the recipient's bounce address (not the Message-ID), and keeps unlinked reports", async () => {
    const a = await createAccount("dsn-verp");
    const out = await insertOutbound(a, "<not-the-one@example.org>", "htfgvhyufthdgcvhgjyfthgc@ethereal.email");
    const [user, domain] = a.inbox.address.split("@");
    // The bare `+msg_…` tag of old (no token) is anyone's to write: kept, unverified, no change.
    await deliver(dsnBounce, `${user}+${out.id}@${domain}`, "");
    expect((await messageRow(out.id))?.status).toBe("sent");
    await deliver(
      dsnBounce.replace("<20221010053722.37BD05C00A2@mailout.nyi.internal>", "<tokened@x>"),
      await bounceAddressOf(out.id, "htfgvhyufthdgcvhgjyfthgc@ethereal.email"),
      "",
    );
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
    // From the configured feedback loop (DKIM per the trusted receiver): linked by its Message-ID.
    await deliver(fromFeedbackLoop(arfComplaint), a.inbox.address, "abusedesk@example.com");
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

describe("the email trigger without a recipient", () => {
  it("email(): refuses an unknown recipient with a reason and stores nothing", async () => {
    const setReject = vi.fn();
    const message = {
      from: "a@example.com",
      to: "nobody--zzzz@mailbot.test",
      rawSize: 10,
      setReject,
    } as unknown as ForwardableEmailMessage;
    // Other tests of this file store mail too: nothing may be added by this one.
    const before = await countRows("SELECT COUNT(*) AS n FROM messages");
    await worker.email(message, env, createExecutionContext());
    expect(setReject).toHaveBeenCalledWith(expect.stringContaining("nobody--zzzz@mailbot.test"));
    expect(await countRows("SELECT COUNT(*) AS n FROM messages")).toBe(before);
  });
});

/**
 * MIME coverage of the inbound pipeline, driven through the Worker's email() handler: what is
 * decoded, what is kept (raw bytes, attachments) and that malformed mail never crashes the
 * handler nor loses the raw message. Every case checks D1 and R2, not just the API answer.
 */

/** A `messages` row as D1 returns it (snake_case, JSON columns as text). */
interface MessageDbRow {
  id: string;
  account_id: string;
  inbox_id: string;
  from_address: string | null;
  from_name: string | null;
  subject: string | null;
  body_text: string | null;
  body_html: string | null;
  headers: string;
  headers_truncated: number;
  rfc_message_id: string | null;
  attachments: string;
  size: number;
  parse_error: string | null;
  raw_key: string;
  dedupe_key: string;
  envelope_from: string | null;
  envelope_to: string | null;
}

interface AttachmentDbRow {
  id: string;
  account_id: string;
  inbox_id: string;
  message_id: string;
  filename: string | null;
  content_type: string;
  size: number;
  content_id: string | null;
  disposition: "attachment" | "inline";
  r2_key: string;
  sha256: string;
}

const MIB = 1024 * 1024;
const LIMIT = 25 * MIB;
const utf8 = new TextEncoder();

const crlf = (lines: string[]) => lines.join("\r\n");

/** Concatenates strings (UTF-8) and byte arrays. */
function bytes(...parts: (string | Uint8Array | number[])[]): Uint8Array {
  const chunks = parts.map((p) => (typeof p === "string" ? utf8.encode(p) : Uint8Array.from(p)));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

const asBytes = (raw: string | Uint8Array) => (typeof raw === "string" ? utf8.encode(raw) : raw);

async function sha256(data: Uint8Array | ArrayBuffer): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Byte-for-byte equality; large buffers are compared by length and SHA-256 to stay fast. */
async function expectSameBytes(actual: Uint8Array, expected: Uint8Array) {
  expect(actual.byteLength).toBe(expected.byteLength);
  if (expected.byteLength <= 64 * 1024) expect(actual).toEqual(expected);
  else expect(await sha256(actual)).toBe(await sha256(expected));
}

/** Base64 with 76-character CRLF lines, as mailers write it. */
function base64Lines(data: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < data.length; i += 8192) bin += String.fromCharCode(...data.subarray(i, i + 8192));
  return (btoa(bin).match(/.{1,76}/g) ?? []).join("\r\n");
}

/** Deterministic, incompressible-looking bytes (xorshift32). */
function noise(length: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

async function messageIds(inboxId: string): Promise<Set<string>> {
  const { results } = await env.DB.prepare("SELECT id FROM messages WHERE inbox_id = ?")
    .bind(inboxId)
    .all<{ id: string }>();
  return new Set(results.map((r) => r.id));
}

async function r2Keys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.MAIL_BUCKET.list({ prefix, cursor });
    keys.push(...page.objects.map((o) => o.key));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return keys;
}

const inboxPrefix = (a: TestAccount) => `${a.account.id}/inboxes/${a.inbox.id}/messages/`;

/**
 * Delivers through worker.email and returns the one new row, after checking the side effects
 * every accepted message must have: no refusal, one message row, the raw bytes in R2 (and at
 * the raw route) exactly as received, one message.received event and audit entry.
 */
async function receive(a: TestAccount, raw: string | Uint8Array): Promise<MessageDbRow> {
  const input = asBytes(raw);
  const before = await messageIds(a.inbox.id);
  const msg = await deliver(input, a.inbox.address);
  expect(msg.setReject).not.toHaveBeenCalled();
  const added = [...(await messageIds(a.inbox.id))].filter((id) => !before.has(id));
  expect(added).toHaveLength(1);
  const row = await env.DB.prepare("SELECT * FROM messages WHERE id = ?").bind(added[0]).first<MessageDbRow>();
  if (!row) throw new Error("message row vanished");
  expect(row).toMatchObject({
    account_id: a.account.id,
    inbox_id: a.inbox.id,
    size: input.byteLength,
    envelope_from: "sender@example.org",
    envelope_to: a.inbox.address,
  });
  expect(row.raw_key.startsWith(`${a.account.id}/`)).toBe(true);
  const obj = await env.MAIL_BUCKET.get(row.raw_key);
  if (!obj) throw new Error(`raw object ${row.raw_key} missing`);
  expect(obj.size).toBe(input.byteLength);
  expect(obj.httpMetadata?.contentType).toBe("message/rfc822");
  await expectSameBytes(new Uint8Array(await obj.arrayBuffer()), input);
  await expectRawRoute(a, row.id, input);

  const events = await env.DB.prepare("SELECT type FROM events WHERE message_id = ?").bind(row.id).all();
  expect(events.results).toEqual([{ type: "message.received" }]);
  const audit = await env.DB.prepare("SELECT action FROM audit_log WHERE account_id = ? AND target_id = ? ORDER BY seq")
    .bind(a.account.id, row.id)
    .all<{ action: string }>();
  const actions = audit.results.map((r) => r.action);
  expect(actions[0]).toBe("message.received");
  // A message.parse_failed entry exists exactly when parse_error is set.
  expect(actions.includes("message.parse_failed")).toBe(row.parse_error !== null);
  return row;
}

async function download(a: TestAccount, path: string) {
  const res = await exports.default.fetch(
    new Request(`http://localhost${path}`, { headers: { Authorization: `Bearer ${a.key}` } }),
  );
  return { res, body: new Uint8Array(await res.arrayBuffer()) };
}

async function expectRawRoute(a: TestAccount, messageId: string, input: Uint8Array) {
  const { res, body } = await download(a, `/v1/inboxes/${a.inbox.id}/messages/${messageId}/raw`);
  expect(res.status).toBe(200);
  expect(res.headers.get("Content-Type")).toBe("message/rfc822");
  expect(res.headers.get("Content-Length")).toBe(String(input.byteLength));
  expect(res.headers.get("Content-Disposition")).toMatch(/^attachment;/);
  expect(res.headers.get("X-Content-Type-Options")).toBe("nosniff");
  await expectSameBytes(body, input);
}

/** The message as the API shows it. */
async function apiMessage(a: TestAccount, id: string) {
  const res = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${id}`, { key: a.key });
  expect(res.status, res.text).toBe(200);
  return res.body.data;
}

async function attachmentRows(messageId: string): Promise<AttachmentDbRow[]> {
  const { results } = await env.DB.prepare("SELECT * FROM attachments WHERE message_id = ? ORDER BY id")
    .bind(messageId)
    .all<AttachmentDbRow>();
  return results;
}

/** The attachment's R2 object and download route both hold exactly `expected`. */
async function expectAttachment(
  a: TestAccount,
  att: AttachmentDbRow,
  expected: Uint8Array,
  contentType: string,
  disposition = /^attachment;/,
) {
  expect(att).toMatchObject({
    account_id: a.account.id,
    inbox_id: a.inbox.id,
    content_type: contentType,
    size: expected.byteLength,
  });
  expect(att.r2_key.startsWith(`${a.account.id}/`)).toBe(true);
  expect(att.sha256).toBe(await sha256(expected));
  const obj = await env.MAIL_BUCKET.get(att.r2_key);
  if (!obj) throw new Error(`attachment object ${att.r2_key} missing`);
  await expectSameBytes(new Uint8Array(await obj.arrayBuffer()), expected);

  const { res, body } = await download(a, `/v1/inboxes/${a.inbox.id}/messages/${att.message_id}/attachments/${att.id}`);
  expect(res.status).toBe(200);
  expect(res.headers.get("Content-Type")).toBe(contentType);
  expect(res.headers.get("Content-Length")).toBe(String(expected.byteLength));
  expect(res.headers.get("Content-Disposition")).toMatch(disposition);
  expect(res.headers.get("X-Content-Type-Options")).toBe("nosniff");
  await expectSameBytes(body, expected);
}

/** What must hold for mail the MIME parser refused: listed, raw intact, audited. */
async function expectParseFailure(a: TestAccount, row: MessageDbRow, pattern: RegExp) {
  expect(row.parse_error).toMatch(pattern);
  const list = await call("GET", `/v1/inboxes/${a.inbox.id}/messages?limit=100`, { key: a.key });
  expect(list.status, list.text).toBe(200);
  const listed = list.body.data.find((m: { id: string }) => m.id === row.id);
  expect(listed).toMatchObject({ id: row.id, parse_error: row.parse_error });
  const audit = await call("GET", "/v1/audit-log?action=message.parse_failed&limit=100", { key: a.key });
  expect(audit.status, audit.text).toBe(200);
  const entry = audit.body.data.find((e: { target: { id: string } | null }) => e.target?.id === row.id);
  expect(entry).toMatchObject({
    action: "message.parse_failed",
    actor: { type: "system", id: null },
    target: { type: "message", id: row.id },
    inbox_id: a.inbox.id,
    metadata: { parse_error: row.parse_error, raw_key: row.raw_key },
  });
}

describe("well-formed MIME through worker.email", () => {
  let a: TestAccount;
  beforeAll(async () => {
    a = await createAccount("mime");
  });

  it("plain text", async () => {
    const raw = mail({
      from: "Ana Sender <Ana@Example.org>",
      subject: "Plain hello",
      messageId: "<plain-1@example.org>",
      body: "Hello plain world.\r\nSecond line.\r\n",
    });
    const row = await receive(a, raw);
    expect(row).toMatchObject({
      from_address: "ana@example.org",
      from_name: "Ana Sender",
      subject: "Plain hello",
      body_text: "Hello plain world.\nSecond line.\n",
      body_html: null,
      rfc_message_id: "<plain-1@example.org>",
      dedupe_key: "<plain-1@example.org>",
      parse_error: null,
      attachments: "[]",
    });
    expect(await attachmentRows(row.id)).toEqual([]);
    expect(await r2Keys(`${a.account.id}/inboxes/${a.inbox.id}/messages/${row.id}/`)).toEqual([row.raw_key]);
    const api = await apiMessage(a, row.id);
    expect(api).toMatchObject({ subject: "Plain hello", body_text: "Hello plain world.\nSecond line.\n" });
  });

  it("HTML only: no text body is invented, search still reads the HTML's words", async () => {
    const raw = mail({
      subject: "Html only",
      contentType: "text/html; charset=utf-8",
      body: "<html><body><p>Only <b>zebrafish</b> markup &amp; more</p></body></html>\r\n",
    });
    const row = await receive(a, raw);
    expect(row.body_html).toContain("<p>Only <b>zebrafish</b> markup &amp; more</p>");
    expect(row.body_text).toBeNull();
    const found = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/search?q=zebrafish`, { key: a.key });
    expect(found.body.data.map((m: { id: string }) => m.id)).toEqual([row.id]);
  });

  it("multipart/alternative keeps both bodies and no attachment", async () => {
    const raw = mail({
      subject: "Alternative",
      contentType: 'multipart/alternative; boundary="alt-1"',
      body: crlf([
        "--alt-1",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Plain version",
        "--alt-1",
        "Content-Type: text/html; charset=utf-8",
        "",
        "<p>HTML version</p>",
        "--alt-1--",
        "",
      ]),
    });
    const row = await receive(a, raw);
    expect(row.body_text).toBe("Plain version\n");
    expect(row.body_html).toBe("<p>HTML version</p>\n");
    expect(JSON.parse(row.attachments)).toEqual([]);
  });

  it("attachments: binary with exact bytes, cid: inline image, forwarded message/rfc822", async () => {
    const binary = bytes([...Array(256).keys()], noise(3000, 7), [0, 0, 0x0d, 0x0a, 0x0a, 0x0d, 0xff]);
    const png = bytes([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], noise(200, 11));
    const forwarded = crlf([
      "From: Original Author <orig@example.com>",
      "To: someone@example.net",
      "Subject: The original",
      "Message-ID: <orig-1@example.com>",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Text of the forwarded message.",
      "",
    ]);
    const raw = mail({
      subject: "With attachments",
      messageId: "<attachments-1@example.org>",
      contentType: 'multipart/mixed; boundary="mix-1"',
      body: crlf([
        "This is a multi-part message in MIME format.",
        "--mix-1",
        'Content-Type: multipart/related; boundary="rel-1"; type="multipart/alternative"',
        "",
        "--rel-1",
        'Content-Type: multipart/alternative; boundary="alt-2"',
        "",
        "--alt-2",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "See the logo.",
        "--alt-2",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<p>See the logo: <img src="cid:logo-1@mailbot.test"></p>',
        "--alt-2--",
        "--rel-1",
        'Content-Type: image/png; name="logo.png"',
        "Content-Transfer-Encoding: base64",
        "Content-ID: <logo-1@mailbot.test>",
        'Content-Disposition: inline; filename="logo.png"',
        "",
        base64Lines(png),
        "--rel-1--",
        "--mix-1",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.bin",
        "",
        base64Lines(binary),
        "--mix-1",
        "Content-Type: message/rfc822",
        'Content-Disposition: attachment; filename="original.eml"',
        "",
        forwarded,
        "--mix-1--",
        "",
      ]),
    });
    const row = await receive(a, raw);
    expect(row.body_text).toBe("See the logo.\n");
    expect(row.body_html).toContain('<img src="cid:logo-1@mailbot.test">');
    // The forwarded message is an attachment, not folded into the body.
    expect(row.body_text).not.toContain("forwarded");

    const meta = JSON.parse(row.attachments) as { filename: string }[];
    const atts = await attachmentRows(row.id);
    expect(atts).toHaveLength(3);
    expect(meta.map((m) => m.filename).sort()).toEqual(["logo.png", "original.eml", "résumé.bin"]);
    const byName = (name: string) => {
      const att = atts.find((x) => x.filename === name);
      if (!att) throw new Error(`no attachment ${name}`);
      return att;
    };

    const logo = byName("logo.png");
    expect(logo).toMatchObject({ disposition: "inline", content_id: "<logo-1@mailbot.test>" });
    await expectAttachment(a, logo, png, "image/png", /^attachment; filename="logo\.png"/);

    const bin = byName("résumé.bin");
    expect(bin).toMatchObject({ disposition: "attachment", content_id: null });
    await expectAttachment(
      a,
      bin,
      binary,
      "application/octet-stream",
      /^attachment; filename="r_sum_\.bin"; filename\*=UTF-8''r%C3%A9sum%C3%A9\.bin$/,
    );

    const fwd = byName("original.eml");
    expect(fwd).toMatchObject({ disposition: "attachment", content_id: null });
    // Exactly the part's bytes (issue 16: postal-mime rebuilds a non-encoded part with LF line
    // ends and a newline added; the attachment is taken from the raw part instead).
    const fwdBytes = utf8.encode(forwarded);
    await expectAttachment(a, fwd, fwdBytes, "message/rfc822");

    // The wire metadata matches the attachments table.
    const api = await apiMessage(a, row.id);
    expect(api.attachments).toHaveLength(3);
    for (const att of atts) {
      expect(api.attachments).toContainEqual({
        id: att.id,
        filename: att.filename,
        content_type: att.content_type,
        size: att.size,
        content_id: att.content_id,
        disposition: att.disposition,
      });
    }
    // Every R2 object of the message sits under the account's prefix: raw + 3 attachments.
    const keys = await r2Keys(`${a.account.id}/inboxes/${a.inbox.id}/messages/${row.id}/`);
    expect(keys.sort()).toEqual([row.raw_key, ...atts.map((x) => x.r2_key)].sort());
  });

  it("ISO-8859-1 quoted-printable body is decoded", async () => {
    const raw = mail({
      subject: "latin1 qp",
      contentType: "text/plain; charset=ISO-8859-1",
      headers: { "Content-Transfer-Encoding": "quoted-printable" },
      body: "Caf=E9 cr=E8me br=FBl=E9e =A3 10 =\r\nna=EFve.\r\n",
    });
    const row = await receive(a, raw);
    expect(row.body_text).toBe("Café crème brûlée £ 10 naïve.\n");
  });

  it("windows-1252 8-bit body is decoded (including the 0x80-0x9f range)", async () => {
    const raw = bytes(
      mail({
        subject: "cp1252",
        contentType: "text/plain; charset=windows-1252",
        headers: { "Content-Transfer-Encoding": "8bit" },
        body: "",
      }),
      [0x80, 0x20, 0x93, 0x71, 0x75, 0x6f, 0x74, 0x65, 0x64, 0x94, 0x20, 0x96, 0x20, 0x6e, 0x61, 0xef, 0x76, 0x65],
      "\r\n",
    );
    const row = await receive(a, raw);
    expect(row.body_text).toBe("€ “quoted” – naïve\n");
  });

  it("KOI8-R body (8-bit and base64) is decoded", async () => {
    const koi = [0xf0, 0xd2, 0xc9, 0xd7, 0xc5, 0xd4, 0x2c, 0x20, 0xcd, 0xc9, 0xd2];
    const eightBit = bytes(
      mail({
        subject: "koi8 8bit",
        contentType: "text/plain; charset=koi8-r",
        headers: { "Content-Transfer-Encoding": "8bit" },
        body: "",
      }),
      koi,
      "\r\n",
    );
    expect((await receive(a, eightBit)).body_text).toBe("Привет, мир\n");
    const b64 = mail({
      subject: "koi8 base64",
      contentType: 'text/plain; charset="KOI8-R"',
      headers: { "Content-Transfer-Encoding": "base64" },
      body: `${base64Lines(Uint8Array.from(koi))}\r\n`,
    });
    expect((await receive(a, b64)).body_text).toBe("Привет, мир");
  });

  it.each([
    ["UTF-8 B", `=?UTF-8?B?${btoa(String.fromCharCode(...utf8.encode("Grüße aus Köln ✓")))}?=`, "Grüße aus Köln ✓"],
    ["UTF-8 Q", "=?utf-8?Q?Caf=C3=A9_=E2=82=AC_price?=", "Café € price"],
    ["ISO-8859-1 Q", "=?ISO-8859-1?Q?Andr=E9?= Pirard", "André Pirard"],
    [
      "ISO-8859-1 B, split words",
      "=?iso-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= =?iso-8859-1?Q?u_understand?=",
      "If you can read this you understand",
    ],
  ])("RFC 2047 encoded-word subject (%s)", async (_name, encoded, decoded) => {
    const raw = mail({
      from: "=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@example.org>",
      subject: encoded,
    });
    const row = await receive(a, raw);
    expect(row.subject).toBe(decoded);
    expect(row).toMatchObject({ from_name: "Keld Jørn Simonsen", from_address: "keld@example.org" });
    expect((await apiMessage(a, row.id)).subject).toBe(decoded);
  });

  it("fixture mixed-attachments.eml (no From, no Message-ID, no Subject)", async () => {
    const row = await receive(a, mixedAttachmentsEml);
    expect(row).toMatchObject({
      from_address: null,
      from_name: null,
      subject: null,
      rfc_message_id: null,
      parse_error: null,
      dedupe_key: `sha256:${await sha256(utf8.encode(mixedAttachmentsEml))}`,
    });
    expect(row.body_text).toContain("This e-mail message has been scanned for Viruses and Content and cleared");
    expect(row.body_text).toContain("Good Morning;");
    expect(row.body_html).toContain("<HR>");
    expect(await attachmentRows(row.id)).toEqual([]);
    const api = await apiMessage(a, row.id);
    expect(api).toMatchObject({ from_address: null, subject: null, parse_error: null });
  });

  it("a text body over 384 KiB goes to R2 under the account prefix; the API returns it whole", async () => {
    const line = "The quick brown fox jumps over the lazy dog, again and again.\r\n";
    const body = line.repeat(Math.ceil((400 * 1024) / line.length));
    const row = await receive(a, mail({ subject: "Long body", body }));
    expect(row.body_text).toBeNull();
    const bodyRow = await env.DB.prepare("SELECT body_text_key FROM messages WHERE id = ?")
      .bind(row.id)
      .first<{ body_text_key: string | null }>();
    const key = bodyRow?.body_text_key ?? "";
    expect(key.startsWith(`${a.account.id}/`)).toBe(true);
    const expected = body.replace(/\r\n/g, "\n");
    expect(await (await env.MAIL_BUCKET.get(key))?.text()).toBe(expected);
    expect((await apiMessage(a, row.id)).body_text).toBe(expected);
  });
});

/** multipart/mixed nested `levels` deep (the top-level message is level 1), text at the bottom. */
function nestedMessage(levels: number, messageId: string): string {
  const b = (i: number) => `nest-${String(i).padStart(3, "0")}-x`;
  const lines = [
    "From: nest@example.org",
    "To: someone@example.net",
    `Subject: Nested ${levels}`,
    `Message-ID: ${messageId}`,
    "MIME-Version: 1.0",
    `Content-Type: multipart/mixed; boundary="${b(1)}"`,
    "",
  ];
  for (let i = 1; i < levels; i++) {
    lines.push(`--${b(i)}`, `Content-Type: multipart/mixed; boundary="${b(i + 1)}"`, "");
  }
  lines.push(`--${b(levels)}`, "Content-Type: text/plain; charset=utf-8", "", `leaf at ${levels}`);
  for (let i = levels; i >= 1; i--) lines.push(`--${b(i)}--`);
  lines.push("");
  return crlf(lines);
}

describe("malformed MIME never crashes and never loses the raw message", () => {
  let a: TestAccount;
  beforeAll(async () => {
    a = await createAccount("malformed");
  });

  const withAttachment = (subject: string, base64: string, close = true) =>
    mail({
      subject,
      contentType: 'multipart/mixed; boundary="mal-1"',
      body: crlf([
        "--mal-1",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Body before the attachment.",
        "--mal-1",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="blob.bin"',
        "",
        base64,
        ...(close ? ["--mal-1--"] : []),
        "",
      ]),
    });

  it("truncated MIME (cut in the middle of a base64 part)", async () => {
    const data = noise(4000, 3);
    const full = withAttachment("Truncated", base64Lines(data));
    const cut = full.slice(0, full.indexOf("--mal-1--") - 1500);
    const row = await receive(a, cut);
    expect(row.subject).toBe("Truncated");
    expect(row.body_text).toBe("Body before the attachment.\n");
    // Whatever was received of the attachment is kept, as the prefix of the original bytes.
    const [att] = await attachmentRows(row.id);
    if (!att) throw new Error("truncated attachment not kept");
    const got = new Uint8Array(await (await env.MAIL_BUCKET.get(att.r2_key))!.arrayBuffer());
    expect(got.byteLength).toBeGreaterThan(0);
    expect(got.byteLength).toBeLessThan(data.byteLength);
    expect(got).toEqual(data.subarray(0, got.byteLength));
    await expectAttachment(a, att, got, "application/octet-stream");
  });

  it("missing closing boundary", async () => {
    const data = noise(500, 5);
    const row = await receive(a, withAttachment("No close", base64Lines(data), false));
    expect(row.parse_error).toBeNull();
    expect(row.body_text).toBe("Body before the attachment.\n");
    const [att] = await attachmentRows(row.id);
    if (!att) throw new Error("attachment lost");
    await expectAttachment(a, att, data, "application/octet-stream");
  });

  it("invalid base64 in an attachment", async () => {
    const row = await receive(
      a,
      withAttachment("Bad base64", "Zm9v!!!YmFy@@@ not*base64 ###\r\n====QUJD=\r\n\u00e9\u00e9"),
    );
    expect(row.parse_error).toBeNull();
    const [att] = await attachmentRows(row.id);
    if (!att) throw new Error("attachment lost");
    const stored = new Uint8Array(await (await env.MAIL_BUCKET.get(att.r2_key))!.arrayBuffer());
    // Non-alphabet characters are skipped; the attachment holds what could be decoded.
    expect(new TextDecoder().decode(stored.subarray(0, 6))).toBe("foobar");
    await expectAttachment(a, att, stored, "application/octet-stream");
  });

  it("8-bit raw bytes in headers (latin-1 and raw UTF-8)", async () => {
    const raw = bytes(
      "From: ",
      [0x4a, 0xf6, 0x72, 0x67], // "Jörg" in latin-1
      " <jorg@example.org>\r\nTo: someone@example.net\r\nSubject: Caf",
      [0xe9],
      " and ",
      utf8.encode("日本語"),
      "\r\nMessage-ID: <eightbit-1@example.org>\r\nX-Binary: ",
      [0x00, 0x01, 0xff, 0xfe, 0x80],
      "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBody.\r\n",
    );
    const row = await receive(a, raw);
    expect(row.parse_error).toBeNull();
    expect(row.from_address).toBe("jorg@example.org");
    expect(row.rfc_message_id).toBe("<eightbit-1@example.org>");
    // Raw UTF-8 (RFC 6532) survives; a stray latin-1 byte becomes U+FFFD, it never throws.
    expect(row.subject).toBe("Caf\ufffd and 日本語");
    expect(row.body_text).toBe("Body.\n");
  });

  it("a part nested 100 multipart levels deep is parsed", async () => {
    const row = await receive(a, nestedMessage(100, "<nest-100@example.org>"));
    expect(row.parse_error).toBeNull();
    expect(row.body_text).toBe("leaf at 100\n");
  });

  it("nesting deeper than the parser allows is stored with parse_error (header fallback)", async () => {
    const row = await receive(a, nestedMessage(200, "<nest-200@example.org>"));
    await expectParseFailure(a, row, /nesting depth/i);
    // What the header block says is still read.
    expect(row).toMatchObject({
      subject: "Nested 200",
      from_address: "nest@example.org",
      rfc_message_id: "<nest-200@example.org>",
      dedupe_key: "<nest-200@example.org>",
      body_text: null,
    });
    expect(await attachmentRows(row.id)).toEqual([]);
  });

  it("5,000 header lines: stored, headers JSON capped and flagged", async () => {
    const filler = Array.from(
      { length: 5000 },
      (_, i) => `X-Filler-${String(i).padStart(4, "0")}: ${"relay.example.net ".repeat(3)}hop ${i}`,
    );
    const raw = crlf([
      "From: many@example.org",
      "To: someone@example.net",
      "Subject: Many headers",
      "Message-ID: <many-headers-1@example.org>",
      ...filler,
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Still a body.",
      "",
    ]);
    const row = await receive(a, raw);
    expect(row.parse_error).toBeNull();
    expect(row).toMatchObject({
      subject: "Many headers",
      rfc_message_id: "<many-headers-1@example.org>",
      dedupe_key: "<many-headers-1@example.org>",
      headers_truncated: 1,
      body_text: "Still a body.\n",
    });
    const headers = JSON.parse(row.headers) as Record<string, string>;
    expect(headers.subject).toBe("Many headers");
    expect(JSON.stringify(headers).length).toBeLessThanOrEqual(256 * 1024);
    expect((await apiMessage(a, row.id)).headers_truncated).toBe(true);
  });

  it("a header block over the parser's 2 MiB limit is stored with parse_error", async () => {
    const long = "x".repeat(990);
    const filler = Array.from({ length: 2200 }, (_, i) => `X-Big-${i}: ${long}`);
    const raw = crlf([
      "From: Big Headers <big@example.org>",
      "Subject: Huge header block",
      "Message-ID: <huge-headers-1@example.org>",
      ...filler,
      "",
      "Body.",
      "",
    ]);
    const row = await receive(a, raw);
    await expectParseFailure(a, row, /header size/i);
    expect(row).toMatchObject({
      subject: "Huge header block",
      from_address: "big@example.org",
      rfc_message_id: "<huge-headers-1@example.org>",
      headers_truncated: 1,
    });
  });

  it("multipart without a boundary parameter, and a boundary that never occurs", async () => {
    for (const contentType of ["multipart/mixed", 'multipart/mixed; boundary="never-used"']) {
      const row = await receive(a, mail({ subject: `No parts ${contentType}`, contentType, body: "Orphan text.\r\n" }));
      // No crash and the raw is kept; postal-mime ignores a multipart's own content, so the
      // text is only in the raw message, and parse_error says so.
      await expectParseFailure(a, row, /boundary/);
      expect(row.body_text).toBeNull();
      expect(await attachmentRows(row.id)).toEqual([]);
    }
  });

  // Header names that are Object.prototype members are data, not properties to inherit.
  it("header names like constructor, __proto__ and length are kept as plain strings", async () => {
    const raw = crlf([
      "From: a@example.org",
      "Subject: proto",
      "Message-ID: <proto-1@example.org>",
      "__proto__: proto-value",
      "Length: 7",
      "Constructor: c",
      "",
      "Body.",
      "",
    ]);
    const row = await receive(a, raw);
    // Object.fromEntries makes `__proto__` an own key (an object literal would set the prototype).
    const expected = Object.fromEntries([
      ["__proto__", "proto-value"],
      ["length", "7"],
      ["constructor", "c"],
    ]);
    expect(JSON.parse(row.headers)).toMatchObject(expected);
    const api = await apiMessage(a, row.id);
    expect(Object.entries(api.headers).filter(([, v]) => typeof v !== "string" && !Array.isArray(v))).toEqual([]);
    expect(api.headers.constructor).toBe("c");
  });

  // The dedupe key is found however large the header block above it (up to the parser's limit).
  it("a Message-ID after 256 KiB of headers is still the dedupe key", async () => {
    const filler = Array.from({ length: 5000 }, (_, i) => `X-Filler-${i}: ${"relay.example.net ".repeat(3)}hop ${i}`);
    const raw = crlf([
      "From: a@example.org",
      "Subject: late id",
      ...filler,
      "Message-ID: <late-1@example.org>",
      "",
      "b",
      "",
    ]);
    const row = await receive(a, raw);
    expect(row.dedupe_key).toBe("<late-1@example.org>");
    await deliver(`Received: from mx2.example.org by mx.example.net\r\n${raw}`, a.inbox.address);
    const n = await env.DB.prepare("SELECT count(*) AS n FROM messages WHERE inbox_id = ? AND rfc_message_id = ?")
      .bind(a.inbox.id, "<late-1@example.org>")
      .first<{ n: number }>();
    expect(n?.n).toBe(1);
  });

  it("headers only, no blank line and no body", async () => {
    const raw = crlf(["From: nobody@example.org", "Subject: Headers only", "Message-ID: <headers-only@example.org>"]);
    const row = await receive(a, raw);
    expect(row).toMatchObject({
      parse_error: null,
      subject: "Headers only",
      from_address: "nobody@example.org",
      body_text: null,
      body_html: null,
    });
  });

  it("a 0-byte message is accepted and stored (an empty raw object), not refused", async () => {
    const row = await receive(a, new Uint8Array(0));
    expect(row).toMatchObject({
      size: 0,
      parse_error: null,
      subject: null,
      from_address: null,
      rfc_message_id: null,
      body_text: null,
      dedupe_key: `sha256:${await sha256(new Uint8Array(0))}`,
    });
    const api = await apiMessage(a, row.id);
    expect(api).toMatchObject({ size: 0, subject: null, attachments: [] });
  });
});

/**
 * A message of exactly `total` bytes: a text part of filler (sized to make the total exact)
 * and a base64 attachment filling the rest.
 */
function sizedMessage(total: number, messageId: string): { raw: Uint8Array; data: Uint8Array } {
  const head = crlf([
    "From: big@example.org",
    "To: someone@example.net",
    "Subject: Big one",
    `Message-ID: ${messageId}`,
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="big-1"',
    "",
    "--big-1",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    "",
  ]);
  const attHead = crlf([
    "",
    "--big-1",
    "Content-Type: application/octet-stream",
    "Content-Transfer-Encoding: base64",
    'Content-Disposition: attachment; filename="big.bin"',
    "",
    "",
  ]);
  const tail = "\r\n--big-1--\r\n";
  const lines = Math.floor((total - head.length - attHead.length - tail.length - 4096) / 78);
  const data = noise(lines * 57, 0x1234567);
  const b64Length = lines * 78 - 2; // the last line's CRLF is the tail's
  const fillerLength = total - head.length - attHead.length - b64Length - tail.length;
  const filler = `${"filler text ".repeat(Math.ceil(fillerLength / 12))}`.slice(0, fillerLength);

  const raw = new Uint8Array(total);
  let at = 0;
  for (const part of [head, filler, attHead]) {
    raw.set(utf8.encode(part), at);
    at += part.length;
  }
  const alphabet = utf8.encode("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
  for (let i = 0; i < data.length; i += 3) {
    const n = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
    raw[at++] = alphabet[(n >> 18) & 63]!;
    raw[at++] = alphabet[(n >> 12) & 63]!;
    raw[at++] = alphabet[(n >> 6) & 63]!;
    raw[at++] = alphabet[n & 63]!;
    if ((i + 3) % 57 === 0 && i + 3 < data.length) {
      raw[at++] = 0x0d;
      raw[at++] = 0x0a;
    }
  }
  raw.set(utf8.encode(tail), at);
  at += tail.length;
  if (at !== total) throw new Error(`built ${at} bytes, wanted ${total}`);
  return { raw, data };
}

describe("the 25 MiB limit", () => {
  let a: TestAccount;
  let big: { raw: Uint8Array; data: Uint8Array };
  beforeAll(async () => {
    a = await createAccount("big");
    big = sizedMessage(LIMIT, "<big-exact@example.org>");
  });

  it("a message of exactly 25 MiB is accepted, raw and attachment kept byte for byte", async () => {
    expect(big.raw.byteLength).toBe(25 * 1024 * 1024);
    const row = await receive(a, big.raw);
    expect(row).toMatchObject({ size: LIMIT, parse_error: null, rfc_message_id: "<big-exact@example.org>" });
    const head = await env.MAIL_BUCKET.head(row.raw_key);
    expect(head?.size).toBe(LIMIT);
    const [att] = await attachmentRows(row.id);
    if (!att) throw new Error("big attachment lost");
    expect(att.filename).toBe("big.bin");
    await expectAttachment(a, att, big.data, "application/octet-stream");
  });

  /** The big message with one more byte and its own Message-ID (so a stored copy could not be a duplicate). */
  function oversized(): Uint8Array {
    const over = new Uint8Array(LIMIT + 1);
    over.set(big.raw);
    over[LIMIT] = 0x0a;
    const text = new TextDecoder().decode(big.raw.subarray(0, 512));
    over.set(utf8.encode("<big-over1@example.org>"), text.indexOf("<big-exact@example.org>"));
    return over;
  }

  async function storedState() {
    return { rows: await messageIds(a.inbox.id), keys: await r2Keys(`${a.account.id}/`) };
  }

  it("25 MiB + 1 byte is refused with setReject naming the limit; nothing is stored", async () => {
    const before = await storedState();
    const msg = await deliver(oversized(), a.inbox.address);
    expect(msg.setReject).toHaveBeenCalledTimes(1);
    expect(msg.setReject.mock.calls[0]?.[0]).toMatch(/limit/i);
    expect(msg.setReject.mock.calls[0]?.[0]).toMatch(/26214400|25 MiB/);
    expect(await storedState()).toEqual(before);
    const over = await env.DB.prepare("SELECT count(*) AS n FROM messages WHERE rfc_message_id = ?")
      .bind("<big-over1@example.org>")
      .first<{ n: number }>();
    expect(over?.n).toBe(0);
  });

  it("an understated rawSize is caught when the bytes are read: refused, nothing stored", async () => {
    const before = await storedState();
    const msg = fakeInbound(oversized(), { from: "sender@example.org", to: a.inbox.address });
    msg.rawSize = LIMIT;
    const ctx = createExecutionContext();
    await worker.email(msg, env, ctx);
    await waitOnExecutionContext(ctx);
    expect(msg.setReject).toHaveBeenCalledTimes(1);
    expect(msg.setReject.mock.calls[0]?.[0]).toMatch(/26214401 bytes; the limit is 26214400 bytes/);
    expect(await storedState()).toEqual(before);
  });
});

describe("redelivery", () => {
  let a: TestAccount;
  beforeAll(async () => {
    a = await createAccount("redeliver");
  });

  const rawObjects = async () => (await r2Keys(inboxPrefix(a))).filter((k) => k.endsWith("/raw.eml"));

  it("the same Message-ID twice stores one row and one raw object", async () => {
    const raw = mail({ subject: "Twice", messageId: "<twice-1@example.org>" });
    const row = await receive(a, raw);
    const rawBefore = await rawObjects();
    const again = await deliver(raw, a.inbox.address);
    expect(again.setReject).not.toHaveBeenCalled();
    // A redelivery that gained a trace header is still the same message.
    const traced = await deliver(`Received: from mx2.example.org by mx.example.net\r\n${raw}`, a.inbox.address);
    expect(traced.setReject).not.toHaveBeenCalled();
    const rows = await env.DB.prepare("SELECT id FROM messages WHERE inbox_id = ? AND rfc_message_id = ?")
      .bind(a.inbox.id, "<twice-1@example.org>")
      .all();
    expect(rows.results).toEqual([{ id: row.id }]);
    expect(await rawObjects()).toEqual(rawBefore);
    expect(rawBefore.filter((k) => k.includes(row.id))).toEqual([row.raw_key]);
    const events = await env.DB.prepare("SELECT count(*) AS n FROM events WHERE message_id = ?")
      .bind(row.id)
      .first<{ n: number }>();
    expect(events?.n).toBe(1);
  });

  it("a message without Message-ID redelivered with identical bytes is stored once", async () => {
    const row = await receive(a, mixedAttachmentsEml);
    const rawBefore = await rawObjects();
    const before = await messageIds(a.inbox.id);
    const again = await deliver(mixedAttachmentsEml, a.inbox.address);
    expect(again.setReject).not.toHaveBeenCalled();
    expect(await messageIds(a.inbox.id)).toEqual(before);
    expect(await rawObjects()).toEqual(rawBefore);
    expect(row.dedupe_key).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("without Message-ID, different bytes are different messages", async () => {
    const one = await receive(a, mail({ subject: "No id", messageId: null, body: "one\r\n" }));
    const two = await receive(a, mail({ subject: "No id", messageId: null, body: "two\r\n" }));
    expect(one.id).not.toBe(two.id);
    expect(one.dedupe_key).not.toBe(two.dedupe_key);
  });
});
