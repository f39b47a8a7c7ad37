import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { recordFindings } from "../../src/features/bounces/bounces.service";
import { applySignals, reapplyPending, recordSent } from "../../src/features/reputation/reputation.service";
import arfComplaint from "../fixtures/emails/arf-complaint.eml?raw";
import dsnBounce from "../fixtures/emails/dsn-bounce.eml?raw";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";
import { countRows, jobContext, liftLimit, serviceContext } from "../helpers/db";
import { deliver } from "../helpers/mail";
import { sentMessageId } from "../helpers/outbound";
import { bounce, complaint, relayEvents } from "../helpers/relay";
import { bounceAddressOf, fromFeedbackLoop } from "../helpers/reports";

type Account = TestAccount;

/** Counts `n` sends, one message each (what the delivery consumer records when mail leaves). */
async function sends(a: Account, n: number, label = crypto.randomUUID()) {
  const ctx = serviceContext(a.account.id);
  for (let i = 0; i < n; i++) await recordSent(ctx, a.inbox.id, `send-${label}-${i}`, 1);
}

async function inboxRow(id: string) {
  return env.DB.prepare("SELECT status, disabled_reason FROM inboxes WHERE id = ?")
    .bind(id)
    .first<{ status: string; disabled_reason: string | null }>();
}

const disabledEvents = (inboxId: string) =>
  countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'inbox.disabled' AND inbox_id = ?", inboxId);
const disabledAudits = (inboxId: string) =>
  countRows("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'inbox.disabled' AND inbox_id = ?", inboxId);

const recipients = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `${tag}-${i}@example.net`);

describe("auto-disable", () => {
  it("100 sends and 10 hard bounces keep the inbox; the 11th disables it exactly once, with event and audit", async () => {
    const a = await createAccount("bounce-rate");
    await sends(a, 100);
    const to = recipients(12, "b");
    const msg = await sentMessageId(a, to);
    for (const r of to.slice(0, 10)) expect((await relayEvents([bounce(msg, r)])).status).toBe(202);
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "active", disabled_reason: null });

    const eleventh = await relayEvents([bounce(msg, to[10] as string)]);
    expect(eleventh.status, eleventh.text).toBe(202);
    expect(eleventh.body.data.results[0]).toMatchObject({ linked: true, counted: true, message_id: msg });
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "bounce_rate" });
    // A 12th input finds it disabled already: nothing is announced twice.
    await relayEvents([bounce(msg, to[11] as string)]);
    expect(await disabledEvents(a.inbox.id)).toBe(1);
    expect(await disabledAudits(a.inbox.id)).toBe(1);
    const audit = await call("GET", "/v1/audit-log?action=inbox.disabled", { key: a.key });
    expect(audit.body.data[0]).toMatchObject({
      actor: { type: "system", id: null },
      target: { type: "inbox", id: a.inbox.id },
      metadata: { reason: "bounce_rate", sent: 100, bounced: 11, bounce_rate: 0.11, window_days: 7 },
    });
    const event = await call("GET", `/v1/events?type=inbox.disabled&inbox_id=${a.inbox.id}`, { key: a.key });
    expect(event.body.data).toHaveLength(1);
    expect(event.body.data[0].data).toMatchObject({
      inbox_id: a.inbox.id,
      disabled_reason: "bounce_rate",
      reputation: { sent: 100, bounced: 11 },
    });

    // Sends are refused while disabled.
    const refused = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["someone@example.org"], subject: "x", body_text: "x" },
    });
    expectError(refused, 403, "inbox_disabled");
    const rep = await call("GET", `/v1/inboxes/${a.inbox.id}/reputation`, { key: a.key });
    expect(rep.body.data).toMatchObject({ status: "disabled", disabled_reason: "bounce_rate", sent: 100, bounced: 12 });

    // Only an operator re-enables it (audited); the rates are still above the threshold, so the
    // next input disables again.
    expectError(
      await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: a.key }),
      409,
      "reputation_review_required",
    );
    const enabled = await call("POST", `/v1/admin/inboxes/${a.inbox.id}/enable`, { key: ADMIN_TOKEN });
    expect(enabled.body.data).toMatchObject({ status: "active", disabled_reason: null });
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'inbox.enabled' AND inbox_id = ?",
        a.inbox.id,
      ),
    ).toBe(1);
    await sends(a, 1);
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "bounce_rate" });
    expect(await disabledEvents(a.inbox.id)).toBe(2);
  });

  it("complaints: 3 in 1000 sends (0.3 %) keep the inbox, the 4th disables it once", async () => {
    const a = await createAccount("complaint-rate");
    await recordSent(serviceContext(a.account.id), a.inbox.id, "bulk", 1000);
    const to = recipients(5, "c");
    const msg = await sentMessageId(a, to);
    expect((await relayEvents(to.slice(0, 3).map((r) => complaint(msg, r)))).status).toBe(202);
    expect((await inboxRow(a.inbox.id))?.status).toBe("active");
    await relayEvents([complaint(msg, to[3] as string)]);
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "complaint_rate" });
    await relayEvents([complaint(msg, to[4] as string)]);
    expect(await disabledEvents(a.inbox.id)).toBe(1);
    expect(await disabledAudits(a.inbox.id)).toBe(1);
    const row = await env.DB.prepare("SELECT complained_at FROM messages WHERE id = ?")
      .bind(msg)
      .first<{ complained_at: number }>();
    expect(row?.complained_at).toEqual(expect.any(Number));
    const complained = await countRows(
      "SELECT COUNT(*) AS n FROM events WHERE type = 'message.complained' AND message_id = ?",
      msg,
    );
    expect(complained).toBe(5);
  });

  it("fewer than 20 sends never disable, whatever the rates", async () => {
    const a = await createAccount("few-sends");
    await sends(a, 19);
    const to = recipients(19, "f");
    const msg = await sentMessageId(a, to);
    expect((await relayEvents(to.map((r) => bounce(msg, r)))).status).toBe(202);
    expect(await relayEvents(to.map((r) => complaint(msg, r)))).toMatchObject({ status: 202 });
    expect((await inboxRow(a.inbox.id))?.status).toBe("active");
    expect(await disabledEvents(a.inbox.id)).toBe(0);
    const rep = await call("GET", `/v1/inboxes/${a.inbox.id}/reputation`, { key: a.key });
    expect(rep.body.data).toMatchObject({ sent: 19, bounced: 19, complained: 19, bounce_rate: 1, status: "warning" });
  });

  it("200 send and bounce inputs applied concurrently end with exact counts and one disable", async () => {
    const a = await createAccount("concurrent");
    const ctx = serviceContext(a.account.id);
    const msg = await sentMessageId(a, ["x@example.net"]);
    const inputs = Array.from({ length: 200 }, (_, i) =>
      i % 2 === 0
        ? recordSent(ctx, a.inbox.id, `c-send-${i}`, 1)
        : applySignals(ctx, [
            {
              inboxId: a.inbox.id,
              messageId: msg,
              kind: "bounce",
              bounceType: "hard",
              recipient: `r${i}@example.net`,
              source: "relay",
              detail: null,
            },
          ]),
    );
    // The same inputs again (a redelivery) count nothing.
    inputs.push(recordSent(ctx, a.inbox.id, "c-send-0", 1), recordSent(ctx, a.inbox.id, "c-send-2", 1));
    await Promise.all(inputs);
    const figures = await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot();
    expect(figures).toMatchObject({ sent: 100, bounced: 100 });
    expect(await disabledEvents(a.inbox.id)).toBe(1);
    expect(await disabledAudits(a.inbox.id)).toBe(1);
  });
});

/** A hard bounce signal of `msg` for the counter (what a linked report feeds it). */
const hardBounce = (a: Account, msg: string, recipient: string) => ({
  inboxId: a.inbox.id,
  messageId: msg,
  kind: "bounce" as const,
  bounceType: "hard" as const,
  recipient,
  source: "relay",
  detail: null,
});

describe("recovery from a failed counter or D1 call", () => {
  it("a disable the counter remembers but D1 lost is carried out by the next input, announced once", async () => {
    const a = await createAccount("stuck-disable");
    await sends(a, 100);
    // The counter decided a disable whose D1 write failed, and its revert failed too.
    const stub = env.INBOX_COUNTER.getByName(a.inbox.id);
    const lost = Array.from({ length: 11 }, (_, i) => ({ metric: "bounced_hard" as const, key: `lost-${i}` }));
    expect((await stub.apply(lost, Date.now(), a.account.id)).disable).toBe("bounce_rate");
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "active", disabled_reason: null });

    // Concurrent inputs all see "already disabled" in the counter and an active inbox in D1:
    // the guarded update lets one of them disable it, and only that one announces it.
    const ctx = serviceContext(a.account.id);
    const msg = await sentMessageId(a, ["s@example.net"]);
    await Promise.all(
      Array.from({ length: 6 }, (_, i) => applySignals(ctx, [hardBounce(a, msg, `s${i}@example.net`)])),
    );
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "bounce_rate" });
    expect(await disabledEvents(a.inbox.id)).toBe(1);
    expect(await disabledAudits(a.inbox.id)).toBe(1);
  });

  it("a deactivated inbox is not announced as disabled for its rates", async () => {
    const a = await createAccount("stuck-deactivated");
    await sends(a, 100);
    const stub = env.INBOX_COUNTER.getByName(a.inbox.id);
    const lost = Array.from({ length: 11 }, (_, i) => ({ metric: "bounced_hard" as const, key: `lost-${i}` }));
    await stub.apply(lost, Date.now(), a.account.id);
    expect((await call("DELETE", `/v1/inboxes/${a.inbox.id}`, { key: a.key })).status).toBe(200);
    const before = await disabledEvents(a.inbox.id); // the deactivation's own inbox.disabled
    const msg = await sentMessageId(a, ["d@example.net"]);
    await applySignals(serviceContext(a.account.id), [hardBounce(a, msg, "d@example.net")]);
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "deactivated" });
    expect(await disabledEvents(a.inbox.id)).toBe(before);
    expect(await disabledAudits(a.inbox.id)).toBe(0);
  });

  it("enabling an inbox D1 already holds active still tells the counter (a lost re-enable is repaired)", async () => {
    const a = await createAccount("stuck-enable");
    await sends(a, 100);
    const stub = env.INBOX_COUNTER.getByName(a.inbox.id);
    const lost = Array.from({ length: 11 }, (_, i) => ({ metric: "bounced_hard" as const, key: `lost-${i}` }));
    await stub.apply(lost, Date.now(), a.account.id);
    expect((await stub.snapshot())?.disabled).not.toBeNull();
    // The account cannot clear the counter's memory (its sends stay refused at accept) …
    expect((await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: a.key })).status).toBe(200);
    expect((await stub.snapshot())?.disabled).not.toBeNull();
    expectError(
      await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
        key: a.key,
        body: { to: ["x@example.org"], subject: "x", body_text: "x" },
      }),
      403,
      "inbox_disabled",
    );
    // … an operator can.
    const enabled = await call("POST", `/v1/admin/inboxes/${a.inbox.id}/enable`, { key: ADMIN_TOKEN });
    expect(enabled.status, enabled.text).toBe(200);
    expect((await stub.snapshot())?.disabled).toBeNull();
    // The counter answers `disable` again to the next input over the threshold.
    const next = await stub.apply([{ metric: "sent", key: "after-enable" }], Date.now(), a.account.id);
    expect(next.disable).toBe("bounce_rate");
  });

  it("signals whose counter call failed are kept in D1 and applied once by the sweep", async () => {
    const a = await createAccount("pending");
    const broken = {
      ...env,
      INBOX_COUNTER: {
        getByName: () => ({
          apply: async () => {
            throw new Error("counter unavailable");
          },
        }),
      },
    } as unknown as typeof env;
    const ctx = { ...serviceContext(a.account.id), env: broken };
    const msg = await sentMessageId(a, ["p@example.net"]);
    await recordSent(ctx, a.inbox.id, msg, 25);
    await applySignals(ctx, [hardBounce(a, msg, "p@example.net")]);
    const pending = () => countRows("SELECT COUNT(*) AS n FROM reputation_pending WHERE inbox_id = ?", a.inbox.id);
    expect(await pending()).toBe(2);
    const stub = env.INBOX_COUNTER.getByName(a.inbox.id);
    expect(await stub.snapshot()).toMatchObject({ sent: 0, bounced: 0 });

    // One of them did reach the counter after all (the failure was on the way back): counted once.
    await recordSent(serviceContext(a.account.id), a.inbox.id, msg, 25);
    await reapplyPending(jobContext());
    expect(await pending()).toBe(0);
    expect(await stub.snapshot()).toMatchObject({ sent: 25, bounced: 1 });
  });
});

describe("warning headers", () => {
  it("appear at 2/3 of the bounce threshold and not below, on inbox routes and sends", async () => {
    const a = await createAccount("warn-bounce");
    await liftLimit(a.account.id);
    await sends(a, 30);
    const to = recipients(2, "w");
    const msg = await sentMessageId(a, to);
    await relayEvents([bounce(msg, to[0] as string)]); // 1/30 = 3.3 %: below 6.67 %
    const below = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(below.headers.get("X-Mailbot-Warning")).toBeNull();
    expect(below.headers.get("X-Mailbot-Bounce-Rate")).toBeNull();

    await relayEvents([bounce(msg, to[1] as string)]); // 2/30 = 6.67 %: exactly 2/3 of 10 %
    const at = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(at.headers.get("X-Mailbot-Warning")).toBe("bounce_rate_approaching_threshold");
    expect(at.headers.get("X-Mailbot-Bounce-Rate")).toBe("0.066667");
    expect(at.headers.get("X-Mailbot-Complaint-Rate")).toBeNull();
    // Timings are for the bench under `wrangler dev` only.
    expect(at.headers.get("Server-Timing")).toBeNull();
    const send = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["fresh@example.org"], subject: "still sending", body_text: "x" },
    });
    expect(send.status, send.text).toBe(202);
    expect(send.headers.get("X-Mailbot-Warning")).toBe("bounce_rate_approaching_threshold");
    const reply = await call("POST", `/v1/messages/${msg}/reply`, { key: a.key, body: { body_text: "follow-up" } });
    expect(reply.headers.get("X-Mailbot-Warning")).toBe("bounce_rate_approaching_threshold");
    const rep = await call("GET", `/v1/inboxes/${a.inbox.id}/reputation`, { key: a.key });
    expect(rep.headers.get("X-Mailbot-Warning")).toBe("bounce_rate_approaching_threshold");
    expect(rep.headers.get("X-Mailbot-Bounce-Rate")).toBe("0.066667");
    expect(rep.body.data).toMatchObject({
      status: "warning",
      warnings: ["bounce_rate_approaching_threshold"],
      thresholds: { bounce_rate: 0.1, complaint_rate: 0.003, min_sends: 20 },
    });

    // Another account asking about this inbox gets a 404 and no figures.
    const b = await createAccount("warn-intruder");
    const foreign = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: b.key });
    expectError(foreign, 404, "not_found");
    expect(foreign.headers.get("X-Mailbot-Warning")).toBeNull();
    const foreignReply = await call("POST", `/v1/messages/${msg}/reply`, { key: b.key, body: { body_text: "x" } });
    expect(foreignReply.headers.get("X-Mailbot-Warning")).toBeNull();
  });

  it("appear at 2/3 of the complaint threshold (0.2 %) and not below", async () => {
    const a = await createAccount("warn-complaint");
    await recordSent(serviceContext(a.account.id), a.inbox.id, "bulk", 1000);
    const to = recipients(2, "wc");
    const msg = await sentMessageId(a, to);
    await relayEvents([complaint(msg, to[0] as string)]); // 0.1 %
    const below = await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key });
    expect(below.headers.get("X-Mailbot-Warning")).toBeNull();
    await relayEvents([complaint(msg, to[1] as string)]); // 0.2 %
    const at = await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key });
    expect(at.headers.get("X-Mailbot-Warning")).toBe("complaint_rate_approaching_threshold");
    expect(at.headers.get("X-Mailbot-Complaint-Rate")).toBe("0.002");
    expect((await inboxRow(a.inbox.id))?.status).toBe("active");
  });
});

describe("the inputs, end to end", () => {
  /** Sends through the API and waits for the queue consumer to finish with it. */
  async function sendAndSettle(a: Account, to: string[]) {
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to, subject: "Our newsletter", body_text: "hello" },
    });
    expect(res.status, res.text).toBe(202);
    await vi.waitFor(
      async () => {
        const r = await env.DB.prepare("SELECT status FROM messages WHERE id = ?")
          .bind(res.body.data.id)
          .first<{ status: string }>();
        expect(["sent", "failed", "bounced"]).toContain(r?.status);
      },
      { timeout: 10_000, interval: 50 },
    );
    return res.body.data.id as string;
  }

  it("a DSN bounce: message bounced, counter, suppression, event and audit; the next send is refused", async () => {
    const a = await createAccount("e2e-dsn");
    await liftLimit(a.account.id);
    const rcpt = "htfgvhyufthdgcvhgjyfthgc@ethereal.email";
    const id = await sendAndSettle(a, [rcpt]);
    // The fixture's bounce comes back to the recipient's own bounce address (how our bounces link).
    const msg = await deliver(dsnBounce, await bounceAddressOf(id, rcpt), "");
    expect(msg.setReject).not.toHaveBeenCalled();

    const row = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${id}`, { key: a.key });
    expect(row.body.data.status).toBe("bounced");
    expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ sent: 1, bounced: 1 });
    const sup = await call("GET", "/v1/suppressions", { key: a.key });
    expect(sup.body.data).toEqual([
      expect.objectContaining({
        address: rcpt,
        reason: "hard_bounce",
        source: "report",
        message_id: id,
        inbox_id: a.inbox.id,
      }),
    ]);
    expect(
      await countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'message.bounced' AND message_id = ?", id),
    ).toBe(1);
    const audit = await call("GET", "/v1/audit-log?action=message.bounced", { key: a.key });
    expect(audit.body.data).toHaveLength(1);
    expect(audit.body.data[0].metadata).toMatchObject({ recipient: rcpt, bounce_type: "hard", suppressed: rcpt });
    // 1 bounce in 1 send: a warning already (no disable below 20 sends).
    const rep = await call("GET", `/v1/inboxes/${a.inbox.id}/reputation`, { key: a.key });
    expect(rep.headers.get("X-Mailbot-Warning")).toBe("bounce_rate_approaching_threshold");

    // Every recipient suppressed: 422, audited, nothing stored.
    const before = await countRows("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?", a.inbox.id);
    const refused = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [rcpt.toUpperCase()], subject: "again", body_text: "x" },
    });
    expect(expectError(refused, 422, "recipient_suppressed").details).toEqual({
      recipients: [{ address: rcpt, reason: "suppressed_hard_bounce" }],
    });
    expect(await countRows("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?", a.inbox.id)).toBe(before);
    const refusal = await call("GET", "/v1/audit-log?action=message.send_refused", { key: a.key });
    expect(refusal.body.data[0].metadata).toMatchObject({ reason: "recipient_suppressed" });

    // With another recipient: the suppressed one is dropped, visibly.
    const mixed = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["other@example.org"], cc: [rcpt], subject: "again", body_text: "x" },
    });
    expect(mixed.status, mixed.text).toBe(202);
    expect(mixed.body.data).toMatchObject({
      to: ["other@example.org"],
      cc: [],
      dropped_recipients: [{ address: rcpt, reason: "suppressed_hard_bounce" }],
    });
    const attempted = await call("GET", "/v1/audit-log?action=message.send_attempted", { key: a.key });
    expect(attempted.body.data[0].metadata.dropped_recipients).toEqual([
      { address: rcpt, reason: "suppressed_hard_bounce" },
    ]);

    // Lifting the suppression (audited) lets the address be sent to again.
    const lifted = await call("DELETE", `/v1/suppressions/${encodeURIComponent(rcpt)}`, { key: a.key });
    expect(lifted.body.data).toMatchObject({ address: rcpt, reason: "hard_bounce" });
    expectError(await call("DELETE", `/v1/suppressions/${encodeURIComponent(rcpt)}`, { key: a.key }), 404, "not_found");
    const liftAudit = await call("GET", "/v1/audit-log?action=suppression.deleted", { key: a.key });
    expect(liftAudit.body.data[0].metadata).toMatchObject({ address: rcpt });
    const ok = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [rcpt], subject: "again", body_text: "x" },
    });
    expect(ok.status).toBe(202);
  });

  it("a disabled inbox still takes the reports of its own mail, and nothing else", async () => {
    const a = await createAccount("disabled-bounce");
    const rcpt = "htfgvhyufthdgcvhgjyfthgc@ethereal.email";
    const id = await sentMessageId(a, [rcpt]);
    await env.DB.prepare("UPDATE inboxes SET status = 'disabled', disabled_reason = 'bounce_rate' WHERE id = ?")
      .bind(a.inbox.id)
      .run();
    const [user, domain] = a.inbox.address.split("@");
    const dsn = await deliver(dsnBounce, await bounceAddressOf(id, rcpt), "");
    expect(dsn.setReject).not.toHaveBeenCalled();
    const row = await env.DB.prepare("SELECT status FROM messages WHERE id = ?").bind(id).first<{ status: string }>();
    expect(row?.status).toBe("bounced");
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ? AND address = ?",
        a.account.id,
        rcpt,
      ),
    ).toBe(1);
    expect(
      await countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'message.bounced' AND message_id = ?", id),
    ).toBe(1);
    expect((await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot())?.bounced).toBe(1);

    // Deactivated by hand: a report of its mail is still taken (the suppressions are the account's).
    expect((await call("POST", `/v1/admin/inboxes/${a.inbox.id}/enable`, { key: ADMIN_TOKEN })).status).toBe(200);
    expect((await call("DELETE", `/v1/inboxes/${a.inbox.id}`, { key: a.key })).status).toBe(200);
    const complaintTo = "user@example.com";
    const second = await sentMessageId(a, [complaintTo]);
    const arf = await deliver(
      fromFeedbackLoop(arfComplaint),
      await bounceAddressOf(second, complaintTo),
      "abusedesk@example.com",
    );
    expect(arf.setReject).not.toHaveBeenCalled();
    expect(
      await countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'message.complained' AND message_id = ?", second),
    ).toBe(1);

    // Ordinary mail, and a tag naming no message of this inbox, are still refused.
    const plain = "From: a@example.org\r\nTo: x@y\r\nSubject: hi\r\nMessage-ID: <plain-1@example.org>\r\n\r\nhello\r\n";
    const refused = await deliver(plain, a.inbox.address, "a@example.org");
    expect(refused.setReject).toHaveBeenCalledWith(expect.stringContaining("disabled"));
    const forged = await deliver(plain, `${user}+msg_${"0".repeat(26)}@${domain}`, "a@example.org");
    expect(forged.setReject).toHaveBeenCalled();
  });

  it("an ARF complaint: message complained, counter, suppression, event and audit", async () => {
    const a = await createAccount("e2e-arf");
    const id = await sendAndSettle(a, ["user@example.com"]);
    // From the configured feedback loop, to the copy's bounce address (how the loop names the message).
    await deliver(
      fromFeedbackLoop(arfComplaint),
      await bounceAddressOf(id, "user@example.com"),
      "abusedesk@example.com",
    );
    const row = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${id}`, { key: a.key });
    expect(row.body.data.complained_at).toEqual(expect.any(String));
    expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ sent: 1, complained: 1 });
    const sup = await call("GET", "/v1/suppressions?reason=complaint", { key: a.key });
    expect(sup.body.data).toEqual([expect.objectContaining({ address: "user@example.com", reason: "complaint" })]);
    expect(
      await countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'message.complained' AND message_id = ?", id),
    ).toBe(1);
    const audit = await call("GET", "/v1/audit-log?action=message.complained", { key: a.key });
    expect(audit.body.data[0].metadata).toMatchObject({ feedback_type: "abuse", source: "report" });
    // The same complaint from the relay too counts once.
    const dup = await relayEvents([complaint(id, "user@example.com")]);
    expect(dup.body.data.results[0]).toMatchObject({ linked: true, counted: false });
    expect((await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot())?.complained).toBe(1);
  });

  it("an SMTP 550 at RCPT is a hard bounce of that recipient; the others count as sent", async () => {
    const a = await createAccount("e2e-smtp");
    const perm = `perm-${crypto.randomUUID().slice(0, 8)}@example.org`;
    const id = await sendAndSettle(a, ["fine@example.org", perm]);
    await vi.waitFor(async () => {
      expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ sent: 2, bounced: 1 });
    });
    const row = await env.DB.prepare("SELECT status FROM messages WHERE id = ?").bind(id).first<{ status: string }>();
    expect(row?.status).toBe("bounced");
    const report = await env.DB.prepare("SELECT * FROM delivery_reports WHERE original_message_id = ?")
      .bind(id)
      .first<Record<string, unknown>>();
    expect(report).toMatchObject({ source: "transport", recipient: perm, bounce_type: "hard", report_message_id: id });
    const sup = await call("GET", `/v1/suppressions?address=${encodeURIComponent(perm)}`, { key: a.key });
    expect(sup.body.data).toEqual([expect.objectContaining({ address: perm, source: "transport" })]);

    // A message whose only recipient is refused at DATA (content, 554 5.7.1): failed for good,
    // and not a bounce (issue 15: a content refusal says nothing about the recipient).
    const dataperm = `dataperm-${crypto.randomUUID().slice(0, 8)}@example.org`;
    const second = await sendAndSettle(a, [dataperm]);
    const failed = await env.DB.prepare("SELECT status FROM messages WHERE id = ?")
      .bind(second)
      .first<{ status: string }>();
    expect(failed?.status).toBe("failed");
    expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ sent: 2, bounced: 1 });
    const events = await call("GET", `/v1/events?type=message.bounced`, { key: a.key });
    expect(events.body.data.map((e: { data: { message_id: string } }) => e.data.message_id)).toEqual([id]);
  });

  it("a refusal of the whole transaction blames nobody when several outside recipients were tried", async () => {
    const a = await createAccount("e2e-data-multi");
    const to = [1, 2].map((i) => `dataperm-${i}-${crypto.randomUUID().slice(0, 8)}@example.org`);
    const id = await sendAndSettle(a, to);
    const row = await env.DB.prepare("SELECT status FROM messages WHERE id = ?").bind(id).first<{ status: string }>();
    expect(row?.status).toBe("failed");
    expect(await countRows("SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ?", a.account.id)).toBe(0);
    expect(await countRows("SELECT COUNT(*) AS n FROM delivery_reports WHERE original_message_id = ?", id)).toBe(0);
    expect(
      await countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'message.bounced' AND message_id = ?", id),
    ).toBe(0);
    // A later message to one such recipient alone is no bounce either (a refusal at DATA is about
    // the content or the path, never the mailbox): nothing counted, nobody suppressed.
    const single = await sendAndSettle(a, [`dataperm-${crypto.randomUUID().slice(0, 8)}@example.org`]);
    const r = await env.DB.prepare("SELECT status FROM messages WHERE id = ?").bind(single).first<{ status: string }>();
    expect(r?.status).toBe("failed");
    expect((await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()) ?? { sent: 0, bounced: 0 }).toMatchObject({
      sent: 0,
      bounced: 0,
    });
    expect(await countRows("SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ?", a.account.id)).toBe(0);
  });

  it("copies delivered to our own inboxes are not sends for the inbox's reputation", async () => {
    const a = await createAccount("e2e-internal-send");
    const b = await createAccount("e2e-internal-rcpt");
    await sendAndSettle(a, [b.inbox.address, "outside@example.org"]);
    await vi.waitFor(async () => {
      expect((await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot())?.sent).toBe(1);
    });
    // Delivered to b all the same.
    expect(await countRows("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?", b.inbox.id)).toBe(1);
  });
});

describe("each finding counts once", () => {
  it("a hard bounce after a soft one for the same recipient is recorded and suppresses", async () => {
    const a = await createAccount("soft-then-hard");
    const msg = await sentMessageId(a, ["sh@example.net"]);
    const soft = await relayEvents([{ ...bounce(msg, "sh@example.net"), bounce_type: "soft" }]);
    expect(soft.body.data.results[0]).toMatchObject({ linked: true, counted: true });
    const hard = await relayEvents([{ ...bounce(msg, "sh@example.net"), bounce_type: "hard" }]);
    expect(hard.body.data.results[0]).toMatchObject({ linked: true, counted: true });
    expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ soft_bounced: 1, bounced: 1 });
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ? AND address = ?",
        a.account.id,
        "sh@example.net",
      ),
    ).toBe(1);
    expect(
      await countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'message.bounced' AND message_id = ?", msg),
    ).toBe(2);
  });

  it("the same bounce reported concurrently by several carriers is evented and audited once", async () => {
    const a = await createAccount("concurrent-reports");
    const msg = await sentMessageId(a, ["cr@example.net"]);
    const ctx = serviceContext(a.account.id);
    const finding = {
      kind: "bounce" as const,
      bounceType: "hard" as const,
      recipient: "cr@example.net",
      statusCode: "5.1.1",
      diagnostic: "user unknown",
      feedbackType: null,
    };
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        recordFindings(ctx, msg, [finding], { source: "relay", carrierId: `rev_concurrent_${i}` }),
      ),
    );
    expect(
      await countRows("SELECT COUNT(*) AS n FROM events WHERE type = 'message.bounced' AND message_id = ?", msg),
    ).toBe(1);
    expect(
      await countRows("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'message.bounced' AND target_id = ?", msg),
    ).toBe(1);
    expect(await countRows("SELECT COUNT(*) AS n FROM delivery_reports WHERE original_message_id = ?", msg)).toBe(1);
    // Every carrier is kept; the repeats unlinked.
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM delivery_reports WHERE report_message_id LIKE 'rev_concurrent_%' AND account_id = ?",
        a.account.id,
      ),
    ).toBe(6);
    expect((await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot())?.bounced).toBe(1);
  });
});

describe("OpenAPI", () => {
  it("documents the new routes and the relay events body", async () => {
    const doc = (await call("GET", "/openapi.json")).body;
    for (const path of [
      "/v1/inboxes/{inbox_id}/reputation",
      "/v1/suppressions",
      "/v1/suppressions/{address}",
      "/v1/usage",
      "/v1/usage/daily",
      "/webhooks/inbound/events",
    ]) {
      expect(doc.paths[path], path).toBeDefined();
    }
    expect(doc.paths["/webhooks/inbound/events"].post.requestBody.content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/RelayEvents",
    });
    expect(doc.components.schemas.RelayEvents.properties.events).toBeDefined();
    expect(doc.components.schemas.Message.properties).toHaveProperty("dropped_recipients");
    expect(doc.components.schemas.Message.properties).toHaveProperty("complained_at");
  });
});
