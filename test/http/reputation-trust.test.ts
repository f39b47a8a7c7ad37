import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { recordSent } from "../../src/features/reputation/reputation.service";
import arfComplaint from "../fixtures/emails/arf-complaint.eml?raw";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";
import { countRows, liftLimit, messageRow, serviceContext, settledMessage } from "../helpers/db";
import { deliver } from "../helpers/mail";
import { insertSentMessage, smtpReceived } from "../helpers/outbound";
import { bounce, complaint, relayEvents } from "../helpers/relay";
import { bounceAddressOf, fromFeedbackLoop, reportRows } from "../helpers/reports";

/**
 * Issue 15: reputation that can't be forged or dodged. Each test is the attack, then the honest
 * path, with the side effects (report rows, counters, suppressions, inbox status, audit) asserted.
 */

const snapshot = async (id: string) =>
  (await env.INBOX_COUNTER.getByName(id).snapshot()) ?? { sent: 0, bounced: 0, complained: 0 };
const accountSnapshot = async (accountId: string) =>
  (await env.INBOX_COUNTER.getByName(`account:${accountId}`).snapshot()) ?? { sent: 0, bounced: 0, complained: 0 };
const suppressed = (accountId: string) =>
  countRows("SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ?", accountId);
const inboxStatus = async (id: string) =>
  env.DB.prepare("SELECT status, disabled_reason FROM inboxes WHERE id = ?")
    .bind(id)
    .first<{ status: string; disabled_reason: string | null }>();
const addresses = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `${tag}-${i}@example.net`);

/** A minimal RFC 3464 report: the listed recipients failed with `status`, about `rfcMessageId`. */
function dsn(rfcMessageId: string, recipients: string[], status = "5.1.1"): string {
  const blocks = recipients
    .map(
      (r) =>
        `Final-Recipient: rfc822; ${r}\r\nAction: failed\r\nStatus: ${status}\r\nDiagnostic-Code: smtp; 550 ${status} No such user\r\n`,
    )
    .join("\r\n");
  return [
    "From: MAILER-DAEMON@mx.example.net",
    "To: someone@example.org",
    "Subject: Undelivered Mail Returned to Sender",
    `Message-ID: <dsn-${crypto.randomUUID()}@mx.example.net>`,
    "Auto-Submitted: auto-replied",
    "MIME-Version: 1.0",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="B"',
    "",
    "--B",
    "Content-Type: text/plain",
    "",
    "Your message could not be delivered.",
    "--B",
    "Content-Type: message/delivery-status",
    "",
    "Reporting-MTA: dns; mx.example.net",
    "",
    blocks,
    "--B",
    "Content-Type: text/rfc822-headers",
    "",
    `Message-ID: ${rfcMessageId}`,
    "Subject: Newsletter",
    "",
    "--B--",
    "",
  ].join("\r\n");
}

/** The ARF fixture about our message `rfcMessageId` and `recipient`. */
function arf(rfcMessageId: string, recipient: string): string {
  return arfComplaint
    .replace("8787KJKJ3K4J3K4J3K4J3.mail@example.net", rfcMessageId)
    .replace("<user@example.com>", `<${recipient}>`)
    .replace(/^Message-ID: .*$/m, (line) => line)
    .replace(
      "From: <abusedesk@example.com>",
      `From: <abusedesk@example.com>\nMessage-ID: <arf-${crypto.randomUUID()}@x>`,
    );
}

async function rfcIdOf(messageId: string): Promise<string> {
  return (await messageRow(messageId))?.rfc_message_id as string;
}

async function sendAndSettle(a: TestAccount, to: string[], inboxId = a.inbox.id) {
  const res = await call("POST", `/v1/inboxes/${inboxId}/messages`, {
    key: a.key,
    body: { to, subject: "Newsletter", body_text: "hello" },
  });
  expect(res.status, res.text).toBe(202);
  await settledMessage(res.body.data.id);
  return res.body.data as { id: string; bounce_addresses: Record<string, string> };
}

describe("forged reports move nothing", () => {
  it("a forged ARF at the inbox address is kept unverified; the same complaint through the signed relay counts", async () => {
    const a = await createAccount("forged-arf");
    await recordSent(serviceContext(a.account.id), a.inbox.id, "bulk", addresses(100, "fa"));
    const victim = "reader@example.net";
    const out = await insertSentMessage(a, { to: [victim] });
    const rfcId = await rfcIdOf(out.id);

    // Anyone who received the message knows its Message-ID; a "trusted" header written by the
    // sender itself (not our receiver's, not a configured feedback loop) proves nothing either.
    const forgedHeader = `Authentication-Results: evil.example; dkim=pass header.d=fbl.example-isp.net\n`;
    for (const raw of [
      arf(rfcId, victim),
      forgedHeader + arf(rfcId, victim),
      fromFeedbackLoop(arf(rfcId, victim), "evil.example"),
    ]) {
      const msg = await deliver(raw, a.inbox.address, "abusedesk@example.com");
      expect(msg.setReject).not.toHaveBeenCalled();
    }
    const rows = await reportRows("inbox_id = ? AND kind = 'complaint'", a.inbox.id);
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      expect(row).toMatchObject({
        verified: 0,
        unverified_reason: "not_feedback_loop_source",
        original_message_id: null,
        recipient: victim,
      });
    }
    // Shown through the API, with why they were not believed.
    const listed = await call("GET", `/v1/inboxes/${a.inbox.id}/reports?verified=false`, { key: a.key });
    expect(listed.status, listed.text).toBe(200);
    expect(listed.body.data).toHaveLength(3);
    expect(listed.body.data[0]).toMatchObject({
      kind: "complaint",
      verified: false,
      unverified_reason: "not_feedback_loop_source",
      message_id: null,
      recipient: victim,
    });
    const foreign = await createAccount("forged-arf-other");
    expectError(await call("GET", `/v1/inboxes/${a.inbox.id}/reports`, { key: foreign.key }), 404, "not_found");
    expect((await messageRow(out.id))?.complained_at).toBeNull();
    expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 100, complained: 0 });
    expect(await suppressed(a.account.id)).toBe(0);
    expect(await inboxStatus(a.inbox.id)).toEqual({ status: "active", disabled_reason: null });
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'report.unverified' AND inbox_id = ?",
        a.inbox.id,
      ),
    ).toBe(3);
    // Each forged report is still ordinary mail in the inbox, audited as received.
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ? AND direction = 'inbound' AND report_type = 'feedback'",
        a.inbox.id,
      ),
    ).toBe(3);

    // The same complaint through the signed events endpoint is counted: 1 in 100 is over 0.3 %.
    const relayed = await relayEvents([complaint(out.id, victim)]);
    expect(relayed.body.data.results[0]).toMatchObject({ linked: true, counted: true });
    expect(await snapshot(a.inbox.id)).toMatchObject({ complained: 1 });
    expect(await suppressed(a.account.id)).toBe(1);
    expect(await inboxStatus(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "complaint_rate" });
  });

  it("an ARF from a configured feedback loop counts, for the recipient it names only", async () => {
    const a = await createAccount("fbl-arf");
    const out = await insertSentMessage(a, { to: ["one@example.net", "two@example.net"] });
    await deliver(fromFeedbackLoop(arf(await rfcIdOf(out.id), "two@example.net")), a.inbox.address, "fbl@x");
    expect((await reportRows("original_message_id = ?", out.id))[0]).toMatchObject({
      verified: 1,
      recipient: "two@example.net",
    });
    expect(await snapshot(a.inbox.id)).toMatchObject({ complained: 1 });
    const sup = await env.DB.prepare("SELECT address FROM suppressions WHERE account_id = ?")
      .bind(a.account.id)
      .all<{ address: string }>();
    expect(sup.results.map((r) => r.address)).toEqual(["two@example.net"]);
  });
});

describe("DSNs count only at the recipient's own bounce address", () => {
  it("each copy leaves with its own tokened envelope; a DSN speaks for that recipient only", async () => {
    const a = await createAccount("verp");
    await liftLimit(a.account.id);
    const [x, y] = [
      `x-${crypto.randomUUID().slice(0, 8)}@example.org`,
      `y-${crypto.randomUUID().slice(0, 8)}@example.org`,
    ];
    const sent = await sendAndSettle(a, [x, y]);
    // The message shows the bounce addresses, and the relay saw exactly those as MAIL FROM.
    const [user, domain] = a.inbox.address.split("@") as [string, string];
    expect(Object.keys(sent.bounce_addresses).sort()).toEqual([x, y].sort());
    for (const r of [x, y]) {
      expect(sent.bounce_addresses[r]).toMatch(new RegExp(`^${user}\\+${sent.id}\\.[0-9a-f]{20}@${domain}$`));
      expect((await smtpReceived(r)).map((m) => m.mailFrom)).toEqual([sent.bounce_addresses[r]]);
    }
    expect(sent.bounce_addresses[x]).not.toBe(sent.bounce_addresses[y]);
    const fetched = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${sent.id}`, { key: a.key });
    expect(fetched.body.data.bounce_addresses).toEqual(sent.bounce_addresses);
    const rfcId = await rfcIdOf(sent.id);
    const other = await sendAndSettle(a, [x]);
    const before = await snapshot(a.inbox.id);

    // A DSN about x at y's bounce address, at the plain inbox address, at the token-less tag, and
    // with x's token for this message replayed for another message: nobody counts.
    const tokenOfX = (sent.bounce_addresses[x] as string).split("@")[0]?.split(".")[1];
    const attempts: [string, string][] = [
      [sent.bounce_addresses[y] as string, "other_recipient"],
      [a.inbox.address, "no_bounce_token"],
      [`${user}+${sent.id}@${domain}`, "no_bounce_token"],
      [`${user}+${other.id}.${tokenOfX}@${domain}`, "invalid_bounce_token"],
    ];
    for (const [to, reason] of attempts) {
      const msg = await deliver(dsn(rfcId, [x]), to, "");
      expect(msg.setReject).not.toHaveBeenCalled();
      const carrier = await env.DB.prepare(
        "SELECT id FROM messages WHERE inbox_id = ? AND direction = 'inbound' ORDER BY id DESC LIMIT 1",
      )
        .bind(a.inbox.id)
        .first<{ id: string }>();
      expect(await reportRows("report_message_id = ?", carrier?.id)).toEqual([
        expect.objectContaining({ verified: 0, unverified_reason: reason, original_message_id: null, recipient: x }),
      ]);
    }
    expect((await messageRow(sent.id))?.status).toBe("sent");
    expect((await messageRow(other.id))?.status).toBe("sent");
    expect(await snapshot(a.inbox.id)).toMatchObject({ bounced: 0, sent: before.sent });
    expect(await suppressed(a.account.id)).toBe(0);

    // At x's own address, a DSN naming x and y counts for x alone.
    await deliver(dsn(rfcId, [x, y]), sent.bounce_addresses[x] as string, "");
    expect((await messageRow(sent.id))?.status).toBe("bounced");
    expect(await snapshot(a.inbox.id)).toMatchObject({ bounced: 1 });
    const sup = await env.DB.prepare("SELECT address, source FROM suppressions WHERE account_id = ?")
      .bind(a.account.id)
      .all();
    expect(sup.results).toEqual([{ address: x, source: "report" }]);
    const rows = await reportRows(
      "original_message_id = ? OR (unverified_reason = 'other_recipient' AND recipient = ?)",
      sent.id,
      y,
    );
    expect(rows.filter((r) => r.verified === 1).map((r) => r.recipient)).toEqual([x]);
  });

  it("100 sends and one recipient bouncing itself 15 times (valid and forged): one bounce counted", async () => {
    const a = await createAccount("self-bounce");
    await recordSent(serviceContext(a.account.id), a.inbox.id, "bulk", addresses(100, "sb"));
    const r = "bouncer@example.net";
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await insertSentMessage(a, { to: [r] })).id);
    // Ten valid reports at ten different messages' bounce addresses, five forged ones.
    for (const id of ids) await deliver(dsn(await rfcIdOf(id), [r]), await bounceAddressOf(id, r), "");
    for (const id of ids.slice(0, 5)) await deliver(dsn(await rfcIdOf(id), [r]), a.inbox.address, "");
    const figures = await snapshot(a.inbox.id);
    expect(figures).toMatchObject({ sent: 100, bounced: 1 });
    expect(await accountSnapshot(a.account.id)).toMatchObject({ bounced: 1 });
    expect(await suppressed(a.account.id)).toBe(1);
    expect(await inboxStatus(a.inbox.id)).toEqual({ status: "active", disabled_reason: null });
    expect((await reportRows("inbox_id = ? AND verified = 0", a.inbox.id)).length).toBe(5);
  });
});

describe("sticky auto-disable", () => {
  it("account enable is 409 (audited); an operator enables (audited with figures); the next bounce disables again", async () => {
    const a = await createAccount("sticky");
    await recordSent(serviceContext(a.account.id), a.inbox.id, "bulk", addresses(100, "st"));
    const to = addresses(13, "stb");
    const msg = (await insertSentMessage(a, { to })).id;
    await relayEvents(to.slice(0, 11).map((r) => bounce(msg, r)));
    expect(await inboxStatus(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "bounce_rate" });

    const refused = await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: a.key });
    expect(expectError(refused, 409, "reputation_review_required").details).toEqual({ disabled_reason: "bounce_rate" });
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'inbox.enable_refused' AND inbox_id = ?",
        a.inbox.id,
      ),
    ).toBe(1);
    // Deactivating and re-enabling does not dodge the review either.
    expect((await call("DELETE", `/v1/inboxes/${a.inbox.id}`, { key: a.key })).status).toBe(200);
    expect(await inboxStatus(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "bounce_rate" });
    expectError(
      await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: a.key }),
      409,
      "reputation_review_required",
    );

    // An account's key is not an operator's.
    expect((await call("POST", `/v1/admin/inboxes/${a.inbox.id}/enable`, { key: a.key })).status).toBe(401);
    const enabled = await call("POST", `/v1/admin/inboxes/${a.inbox.id}/enable`, { key: ADMIN_TOKEN });
    expect(enabled.status, enabled.text).toBe(200);
    expect(enabled.body.data).toMatchObject({ status: "active", disabled_reason: null });
    const audit = await env.DB.prepare(
      "SELECT actor_type, metadata FROM audit_log WHERE action = 'inbox.enabled' AND inbox_id = ?",
    )
      .bind(a.inbox.id)
      .first<{ actor_type: string; metadata: string }>();
    expect(audit?.actor_type).toBe("admin");
    expect(JSON.parse(audit?.metadata ?? "{}")).toMatchObject({
      previous_reason: "bounce_rate",
      operator_review: true,
      reputation: { sent: 100, bounced: 11, bounce_rate: 0.11 },
    });

    // The history stayed in the window: the next bounce disables at once.
    await relayEvents([bounce(msg, to[11] as string)]);
    expect(await inboxStatus(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "bounce_rate" });
    expectError(
      await call("POST", `/v1/admin/inboxes/inbox_${"0".repeat(26)}/enable`, { key: ADMIN_TOKEN }),
      404,
      "not_found",
    );
  });
});

describe("transport refusals", () => {
  it("the relay's own 550 5.7.1 and 554 5.7.1 fail the message without touching reputation; 550 5.1.1 is a hard bounce", async () => {
    const a = await createAccount("relay-refusal");
    await liftLimit(a.account.id);
    const policy = await sendAndSettle(a, [`policy-${crypto.randomUUID().slice(0, 8)}@example.org`]);
    const content = await sendAndSettle(a, [`dataperm-${crypto.randomUUID().slice(0, 8)}@example.org`]);
    const mixed = await sendAndSettle(a, [
      `policy-${crypto.randomUUID().slice(0, 8)}@example.org`,
      `dataperm-${crypto.randomUUID().slice(0, 8)}@example.org`,
    ]);
    for (const m of [policy, content, mixed]) {
      const row = await messageRow(m.id);
      expect(row?.status).toBe("failed");
      expect(String(row?.last_error)).toMatch(/5\.7\.1/);
    }
    expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 0, bounced: 0 });
    expect(await accountSnapshot(a.account.id)).toMatchObject({ sent: 0, bounced: 0 });
    expect(await suppressed(a.account.id)).toBe(0);
    expect(await countRows("SELECT COUNT(*) AS n FROM delivery_reports WHERE account_id = ?", a.account.id)).toBe(0);

    const perm = `perm-${crypto.randomUUID().slice(0, 8)}@example.org`;
    const hard = await sendAndSettle(a, [perm]);
    // `failed` commits first, then the bounce is recorded (status, counters): wait for both.
    await settledMessage(hard.id, ["bounced"]);
    await vi.waitFor(async () => expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 1, bounced: 1 }));
    const sup = await env.DB.prepare("SELECT address, reason, source FROM suppressions WHERE account_id = ?")
      .bind(a.account.id)
      .all();
    expect(sup.results).toEqual([{ address: perm, reason: "hard_bounce", source: "transport" }]);
  });
});

describe("account-level reputation", () => {
  it("bounces spread over three inboxes refuse the account's sends (account_reputation), a fresh inbox too", async () => {
    const a = await createAccount("account-rep");
    await liftLimit(a.account.id);
    const inboxes = [a.inbox];
    for (const name of ["second", "third"]) {
      const res = await call("POST", "/v1/inboxes", {
        key: a.key,
        body: { username: `${name}-${a.account.id.slice(-6)}` },
      });
      expect(res.status, res.text).toBe(201);
      inboxes.push(res.body.data);
    }
    // 15 distinct recipients and 2 hard bounces per inbox: under 20 sends, no inbox is judged;
    // the account is: 6 bounces in 45 sends is 13 %.
    for (const [i, inbox] of inboxes.entries()) {
      const to = addresses(15, `ar${i}`);
      await recordSent(serviceContext(a.account.id), inbox.id, `bulk-${i}`, to);
      const msg = (await insertSentMessage({ account: a.account, inbox }, { to })).id;
      await relayEvents(to.slice(0, 2).map((r) => bounce(msg, r)));
    }
    for (const inbox of inboxes) expect((await inboxStatus(inbox.id))?.status).toBe("active");

    const rep = await call("GET", "/v1/account/reputation", { key: a.key });
    expect(rep.status, rep.text).toBe(200);
    expect(rep.body.data).toMatchObject({ sent: 45, bounced: 6, status: "disabled", disabled_reason: "bounce_rate" });
    expect(rep.body.data.bounce_rate).toBeCloseTo(6 / 45, 5);
    const listed = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(listed.headers.get("X-Mailbot-Account-Warning")).toBe("bounce_rate_approaching_threshold");

    const fresh = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: `fresh-${a.account.id.slice(-6)}` },
    });
    const before = await countRows("SELECT COUNT(*) AS n FROM messages WHERE account_id = ?", a.account.id);
    for (const inbox of [...inboxes, fresh.body.data]) {
      const res = await call("POST", `/v1/inboxes/${inbox.id}/messages`, {
        key: a.key,
        body: { to: ["new@example.org"], subject: "x", body_text: "x" },
      });
      expect(expectError(res, 403, "account_reputation").details).toMatchObject({
        reason: "bounce_rate",
        sent: 45,
        bounced: 6,
      });
    }
    expect(await countRows("SELECT COUNT(*) AS n FROM messages WHERE account_id = ?", a.account.id)).toBe(before);
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ? AND action = 'message.send_refused' AND json_extract(metadata, '$.reason') = 'account_reputation'",
        a.account.id,
      ),
    ).toBe(4);
  });

  it("rates count distinct recipients: the same 10 addresses mailed 5 times are 10 sends", async () => {
    const a = await createAccount("distinct");
    const seeds = addresses(10, "seed");
    for (let i = 0; i < 5; i++) await recordSent(serviceContext(a.account.id), a.inbox.id, `daily-${i}`, seeds);
    expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 10 });
    const rep = await call("GET", "/v1/account/reputation", { key: a.key });
    expect(rep.body.data).toMatchObject({ sent: 10, status: "ok" });
  });
});
