import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client";
import { recordFindings } from "../../src/features/bounces/bounces.service";
import { applySignals, reapplyPending, recordSent } from "../../src/features/reputation/reputation.service";
import type { ServiceContext } from "../../src/lib/context";
import { toHex } from "../../src/lib/crypto";
import arfComplaint from "../fixtures/emails/arf-complaint.eml?raw";
import dsnBounce from "../fixtures/emails/dsn-bounce.eml?raw";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";
import { deliver } from "../helpers/mail";
import { insertSentMessage } from "../helpers/outbound";

type Account = TestAccount;

const SECRET = "test-inbound-secret";

function systemContext(accountId: string): ServiceContext {
  return {
    accountId,
    actor: { type: "system", id: null },
    requestId: null,
    db: createDb(env.DB),
    env,
    now: Date.now,
  };
}

/** An outbound message that already left, to the given recipients (what the inputs link to). */
async function sentMessage(a: Account, to: string[]): Promise<string> {
  return (await insertSentMessage(a, { to, subject: "Newsletter" })).id;
}

/** Counts `n` sends, one message each (what the delivery consumer records when mail leaves). */
async function sends(a: Account, n: number, label = crypto.randomUUID()) {
  const ctx = systemContext(a.account.id);
  for (let i = 0; i < n; i++) await recordSent(ctx, a.inbox.id, `send-${label}-${i}`, 1);
}

async function signed(body: string, opts: { timestamp?: number; secret?: string } = {}) {
  const ts = String(opts.timestamp ?? Math.floor(Date.now() / 1000));
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(opts.secret ?? SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const sig = toHex(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${ts}.${body}`)));
  return { "X-Mailbot-Timestamp": ts, "X-Mailbot-Signature": `sha256=${sig}`, "Content-Type": "application/json" };
}

/** Posts relay events, signed like the relay would. */
async function relay(events: unknown[]) {
  const body = JSON.stringify({ events });
  return call("POST", "/webhooks/inbound/events", { rawBody: body, headers: await signed(body) });
}

const bounce = (messageId: string, recipient: string) => ({
  type: "bounce",
  message_id: messageId,
  recipient,
  status_code: "5.1.1",
  diagnostic: "550 5.1.1 user unknown",
});
const complaint = (messageId: string, recipient: string) => ({ type: "complaint", message_id: messageId, recipient });

async function inboxRow(id: string) {
  return env.DB.prepare("SELECT status, disabled_reason FROM inboxes WHERE id = ?")
    .bind(id)
    .first<{ status: string; disabled_reason: string | null }>();
}

async function countRows(sql: string, ...binds: unknown[]) {
  return (
    (
      await env.DB.prepare(sql)
        .bind(...binds)
        .first<{ n: number }>()
    )?.n ?? 0
  );
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
    const msg = await sentMessage(a, to);
    for (const r of to.slice(0, 10)) expect((await relay([bounce(msg, r)])).status).toBe(202);
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "active", disabled_reason: null });

    const eleventh = await relay([bounce(msg, to[10] as string)]);
    expect(eleventh.status, eleventh.text).toBe(202);
    expect(eleventh.body.data.results[0]).toMatchObject({ linked: true, counted: true, message_id: msg });
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "bounce_rate" });
    // A 12th input finds it disabled already: nothing is announced twice.
    await relay([bounce(msg, to[11] as string)]);
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

    // Re-enabled (audited); the rates are still above the threshold, so the next input disables again.
    const enabled = await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: a.key });
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
    await recordSent(systemContext(a.account.id), a.inbox.id, "bulk", 1000);
    const to = recipients(5, "c");
    const msg = await sentMessage(a, to);
    expect((await relay(to.slice(0, 3).map((r) => complaint(msg, r)))).status).toBe(202);
    expect((await inboxRow(a.inbox.id))?.status).toBe("active");
    await relay([complaint(msg, to[3] as string)]);
    expect(await inboxRow(a.inbox.id)).toEqual({ status: "disabled", disabled_reason: "complaint_rate" });
    await relay([complaint(msg, to[4] as string)]);
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
    const msg = await sentMessage(a, to);
    expect((await relay(to.map((r) => bounce(msg, r)))).status).toBe(202);
    expect(await relay(to.map((r) => complaint(msg, r)))).toMatchObject({ status: 202 });
    expect((await inboxRow(a.inbox.id))?.status).toBe("active");
    expect(await disabledEvents(a.inbox.id)).toBe(0);
    const rep = await call("GET", `/v1/inboxes/${a.inbox.id}/reputation`, { key: a.key });
    expect(rep.body.data).toMatchObject({ sent: 19, bounced: 19, complained: 19, bounce_rate: 1, status: "warning" });
  });

  it("200 send and bounce inputs applied concurrently end with exact counts and one disable", async () => {
    const a = await createAccount("concurrent");
    const ctx = systemContext(a.account.id);
    const msg = await sentMessage(a, ["x@example.net"]);
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

  it("the counter answers `disable` to one of many concurrent callers only", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_race_${crypto.randomUUID()}`);
    await stub.apply([{ metric: "sent", n: 100 }]);
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => stub.apply([{ metric: "bounced_hard", key: `b${i}` }])),
    );
    expect(results.filter((r) => r.disable !== null)).toHaveLength(1);
    expect(results.find((r) => r.disable)?.figures.bounced).toBe(11);
    expect((await stub.snapshot())?.bounced).toBe(50);
    // Re-enabled: the next input over the threshold is told again, once.
    await stub.enable();
    const again = await Promise.all([1, 2, 3].map(() => stub.apply([{ metric: "sent" }])));
    expect(again.filter((r) => r.disable === "bounce_rate")).toHaveLength(1);
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
    const ctx = systemContext(a.account.id);
    const msg = await sentMessage(a, ["s@example.net"]);
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
    const msg = await sentMessage(a, ["d@example.net"]);
    await applySignals(systemContext(a.account.id), [hardBounce(a, msg, "d@example.net")]);
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
    const enabled = await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: a.key });
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
    const ctx = { ...systemContext(a.account.id), env: broken };
    const msg = await sentMessage(a, ["p@example.net"]);
    await recordSent(ctx, a.inbox.id, msg, 25);
    await applySignals(ctx, [hardBounce(a, msg, "p@example.net")]);
    const pending = () => countRows("SELECT COUNT(*) AS n FROM reputation_pending WHERE inbox_id = ?", a.inbox.id);
    expect(await pending()).toBe(2);
    const stub = env.INBOX_COUNTER.getByName(a.inbox.id);
    expect(await stub.snapshot()).toMatchObject({ sent: 0, bounced: 0 });

    // One of them did reach the counter after all (the failure was on the way back): counted once.
    await recordSent(systemContext(a.account.id), a.inbox.id, msg, 25);
    await reapplyPending(env, Date.now());
    expect(await pending()).toBe(0);
    expect(await stub.snapshot()).toMatchObject({ sent: 25, bounced: 1 });
  });
});

describe("the counter's window", () => {
  const HOUR = 60 * 60 * 1000;
  const DAY = 24 * HOUR;

  it("slides: an input older than 7 days (by an hour) no longer counts, one just inside does", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_window_${crypto.randomUUID()}`);
    const now = Date.now();
    await stub.apply([{ metric: "sent", n: 40, key: "s" }], now);
    await stub.apply([{ metric: "bounced_hard", key: "old" }], now - 7 * DAY - HOUR);
    await stub.apply([{ metric: "bounced_hard", key: "inside" }], now - 7 * DAY + HOUR);
    expect(await stub.snapshot(now)).toMatchObject({ sent: 40, bounced: 1 });
    // An hour later the second one has left the window too.
    expect(await stub.snapshot(now + 2 * HOUR)).toMatchObject({ sent: 40, bounced: 0 });
  });

  it("forgets idempotency keys past the 8 days kept, pruning once per hour", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_prune_${crypto.randomUUID()}`);
    const now = Date.now();
    await stub.apply([{ metric: "complained", key: "k" }], now - 9 * DAY);
    expect((await stub.apply([{ metric: "complained", key: "k" }], now - 9 * DAY)).counted).toBe(0);
    // Now (a new hour bucket): the prune runs and the 9-day-old key is gone, so it counts again.
    expect((await stub.apply([{ metric: "sent", key: "trigger" }], now)).counted).toBe(1);
    expect((await stub.apply([{ metric: "complained", key: "k" }], now)).counted).toBe(1);
  });

  it("warns at 2/3 of the bounce threshold, not just under it (2 in 31 sends)", async () => {
    const stub = env.INBOX_COUNTER.getByName(`inbox_warn_${crypto.randomUUID()}`);
    await stub.apply([
      { metric: "sent", n: 31 },
      { metric: "bounced_hard", n: 2 },
    ]);
    expect((await stub.snapshot())?.warnings).toEqual([]); // 6.45 % < 6.67 %
    await stub.apply([{ metric: "bounced_hard" }]);
    expect((await stub.snapshot())?.warnings).toEqual(["bounce_rate"]); // 3/31 = 9.7 %
  });
});

describe("warning headers", () => {
  it("appear at 2/3 of the bounce threshold and not below, on inbox routes and sends", async () => {
    const a = await createAccount("warn-bounce");
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { new_account_until: null } });
    await sends(a, 30);
    const to = recipients(2, "w");
    const msg = await sentMessage(a, to);
    await relay([bounce(msg, to[0] as string)]); // 1/30 = 3.3 %: below 6.67 %
    const below = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(below.headers.get("X-Mailbot-Warning")).toBeNull();
    expect(below.headers.get("X-Mailbot-Bounce-Rate")).toBeNull();

    await relay([bounce(msg, to[1] as string)]); // 2/30 = 6.67 %: exactly 2/3 of 10 %
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
    await recordSent(systemContext(a.account.id), a.inbox.id, "bulk", 1000);
    const to = recipients(2, "wc");
    const msg = await sentMessage(a, to);
    await relay([complaint(msg, to[0] as string)]); // 0.1 %
    const below = await call("GET", `/v1/inboxes/${a.inbox.id}/messages`, { key: a.key });
    expect(below.headers.get("X-Mailbot-Warning")).toBeNull();
    await relay([complaint(msg, to[1] as string)]); // 0.2 %
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
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { new_account_until: null } });
    const rcpt = "htfgvhyufthdgcvhgjyfthgc@ethereal.email";
    const id = await sendAndSettle(a, [rcpt]);
    // The fixture's bounce comes back to the VERP address of the message (how our bounces link).
    const [user, domain] = a.inbox.address.split("@");
    const msg = await deliver(dsnBounce, `${user}+${id}@${domain}`, "");
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
    const id = await sentMessage(a, [rcpt]);
    await env.DB.prepare("UPDATE inboxes SET status = 'disabled', disabled_reason = 'bounce_rate' WHERE id = ?")
      .bind(a.inbox.id)
      .run();
    const [user, domain] = a.inbox.address.split("@");
    const dsn = await deliver(dsnBounce, `${user}+${id}@${domain}`, "");
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
    expect((await call("POST", `/v1/inboxes/${a.inbox.id}/enable`, { key: a.key })).status).toBe(200);
    expect((await call("DELETE", `/v1/inboxes/${a.inbox.id}`, { key: a.key })).status).toBe(200);
    const complaintTo = "user@example.com";
    const second = await sentMessage(a, [complaintTo]);
    const arf = await deliver(arfComplaint, `${user}+${second}@${domain}`, "abusedesk@example.com");
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
    const [user, domain] = a.inbox.address.split("@");
    await deliver(arfComplaint, `${user}+${id}@${domain}`, "abusedesk@example.com");
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
    const dup = await relay([complaint(id, "user@example.com")]);
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

    // A message whose only recipient is refused at DATA: failed for good, and a bounce.
    const dataperm = `dataperm-${crypto.randomUUID().slice(0, 8)}@example.org`;
    const second = await sendAndSettle(a, [dataperm]);
    await vi.waitFor(async () => {
      expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ sent: 3, bounced: 2 });
    });
    const events = await call("GET", `/v1/events?type=message.bounced`, { key: a.key });
    expect(events.body.data.map((e: { data: { message_id: string } }) => e.data.message_id).sort()).toEqual(
      [id, second].sort(),
    );
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
    // A later message to one such recipient is a bounce: once it is counted, the first one's
    // attempt (recorded before it) has been too, and added nothing.
    await sendAndSettle(a, [`dataperm-${crypto.randomUUID().slice(0, 8)}@example.org`]);
    await vi.waitFor(async () => {
      expect((await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot())?.bounced).toBeGreaterThan(0);
    });
    expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ sent: 1, bounced: 1 });
    expect(await countRows("SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ?", a.account.id)).toBe(1);
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

describe("POST /webhooks/inbound/events", () => {
  it("refuses a bad signature, a stale timestamp and an invalid body", async () => {
    const body = JSON.stringify({
      events: [{ type: "bounce", message_id: `msg_${"0".repeat(26)}`, recipient: "a@b.c" }],
    });
    const wrong = await call("POST", "/webhooks/inbound/events", {
      rawBody: body,
      headers: await signed(body, { secret: "not-the-secret" }),
    });
    expectError(wrong, 401, "invalid_signature");
    const stale = await call("POST", "/webhooks/inbound/events", {
      rawBody: body,
      headers: await signed(body, { timestamp: Math.floor(Date.now() / 1000) - 301 }),
    });
    expectError(stale, 401, "timestamp_out_of_range");
    const missing = await call("POST", "/webhooks/inbound/events", { rawBody: body });
    expectError(missing, 401, "invalid_signature");
    const bad = JSON.stringify({ events: [{ type: "bounce", recipient: "nope" }] });
    const invalid = await call("POST", "/webhooks/inbound/events", { rawBody: bad, headers: await signed(bad) });
    const err = expectError(invalid, 422, "validation_error");
    expect(err.details).toEqual(
      expect.arrayContaining([expect.objectContaining({ path: expect.stringContaining("events.0") })]),
    );
    const unknown = await call("POST", "/webhooks/inbound/events", { rawBody: body, headers: await signed(body) });
    expect(unknown.status).toBe(202);
    expect(unknown.body.data).toMatchObject({ received: 1, results: [{ linked: false, counted: false }] });
  });

  it("refuses a replayed request (a signature counts once); a fresh signature for the same events is accepted", async () => {
    const a = await createAccount("relay-replay");
    const msg = await sentMessage(a, ["rp@example.net"]);
    const body = JSON.stringify({ events: [bounce(msg, "rp@example.net")] });
    const headers = await signed(body);
    const first = await call("POST", "/webhooks/inbound/events", { rawBody: body, headers });
    expect(first.status, first.text).toBe(202);
    const replay = await call("POST", "/webhooks/inbound/events", { rawBody: body, headers });
    expectError(replay, 401, "invalid_signature");
    const reports = () =>
      countRows("SELECT COUNT(*) AS n FROM delivery_reports WHERE account_id = ? AND source = 'relay'", a.account.id);
    expect(await reports()).toBe(1);
    const resigned = await call("POST", "/webhooks/inbound/events", {
      rawBody: body,
      headers: await signed(body, { timestamp: Math.floor(Date.now() / 1000) - 1 }),
    });
    expect(resigned.status).toBe(202);
    expect(resigned.body.data.results[0]).toMatchObject({ linked: true, counted: false });
    expect(await reports()).toBe(2);
  });

  it("links by the Message-ID we sent, and refuses a recipient the message never went to", async () => {
    const a = await createAccount("relay-link");
    const msg = await sentMessage(a, ["ana@example.net"]);
    const res = await relay([
      { type: "bounce", rfc_message_id: `<${msg}@mailbot.test>`, recipient: "ANA@example.net", bounce_type: "soft" },
      { type: "bounce", message_id: msg, recipient: "stranger@example.net" },
    ]);
    expect(res.body.data.results).toMatchObject([
      { linked: true, counted: true },
      { linked: true, counted: false },
    ]);
    // A soft bounce is counted but suppresses nobody.
    expect(await env.INBOX_COUNTER.getByName(a.inbox.id).snapshot()).toMatchObject({ soft_bounced: 1, bounced: 0 });
    expect(await countRows("SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ?", a.account.id)).toBe(0);
  });
});

describe("each finding counts once", () => {
  it("a hard bounce after a soft one for the same recipient is recorded and suppresses", async () => {
    const a = await createAccount("soft-then-hard");
    const msg = await sentMessage(a, ["sh@example.net"]);
    const soft = await relay([{ ...bounce(msg, "sh@example.net"), bounce_type: "soft" }]);
    expect(soft.body.data.results[0]).toMatchObject({ linked: true, counted: true });
    const hard = await relay([{ ...bounce(msg, "sh@example.net"), bounce_type: "hard" }]);
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
    const msg = await sentMessage(a, ["cr@example.net"]);
    const ctx = systemContext(a.account.id);
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

describe("suppressed forms", () => {
  it("a suppression covers the address whatever its case and +tag", async () => {
    const a = await createAccount("sup-canonical");
    const msg = await sentMessage(a, ["bob+news@example.net"]);
    await relay([bounce(msg, "bob+news@example.net")]);
    const rows = await env.DB.prepare("SELECT address FROM suppressions WHERE account_id = ?")
      .bind(a.account.id)
      .all<{ address: string }>();
    expect(rows.results).toEqual([{ address: "bob@example.net" }]);

    const alone = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["Bob@Example.NET"], subject: "x", body_text: "x" },
    });
    expectError(alone, 422, "recipient_suppressed");
    const mixed = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: ["other@example.org", "BOB+promo@example.net"], subject: "x", body_text: "x" },
    });
    expect(mixed.status, mixed.text).toBe(202);
    expect(mixed.body.data).toMatchObject({
      to: ["other@example.org"],
      dropped_recipients: [{ address: "bob+promo@example.net", reason: "suppressed_hard_bounce" }],
    });
    const listed = await call("GET", `/v1/suppressions?address=${encodeURIComponent("Bob+x@example.net")}`, {
      key: a.key,
    });
    expect(listed.body.data).toHaveLength(1);
    // A key restricted to another inbox sees the entry, not which inbox's message caused it.
    const second = await call("POST", "/v1/inboxes", { key: a.key, body: { username: `sup-second-${Date.now()}` } });
    expect(second.status, second.text).toBe(201);
    const restricted = await call("POST", "/v1/api-keys", {
      key: a.key,
      body: { name: "other-inbox", scopes: ["read"], inbox_ids: [second.body.data.id] },
    });
    const seen = await call("GET", "/v1/suppressions", { key: restricted.body.data.key });
    expect(seen.body.data).toEqual([
      expect.objectContaining({ address: "bob@example.net", inbox_id: null, message_id: null, detail: null }),
    ]);
    const own = await call("GET", "/v1/suppressions", { key: a.key });
    expect(own.body.data[0]).toMatchObject({ inbox_id: a.inbox.id, message_id: msg });
    const lifted = await call("DELETE", `/v1/suppressions/${encodeURIComponent("BOB+news@example.net")}`, {
      key: a.key,
    });
    expect(lifted.status, lifted.text).toBe(200);
    expect(await countRows("SELECT COUNT(*) AS n FROM suppressions WHERE account_id = ?", a.account.id)).toBe(0);
  });
});

describe("usage and suppression validation", () => {
  it("GET /v1/usage and /v1/usage/daily count the log; bad input is a 422", async () => {
    const a = await createAccount("usage");
    const msg = await sentMessage(a, ["u1@example.net", "u2@example.net"]);
    await relay([bounce(msg, "u1@example.net"), complaint(msg, "u2@example.net")]);
    const usage = await call("GET", "/v1/usage", { key: a.key });
    expect(usage.status, usage.text).toBe(200);
    expect(usage.body.data).toMatchObject({
      sent: 1,
      bounced: 1,
      complained: 1,
      send_limit: { limit: 10, used: 0, window_hours: 24, scope: "new_account" },
    });
    const daily = await call("GET", "/v1/usage/daily?days=3", { key: a.key });
    expect(daily.body.data).toHaveLength(3);
    expect(daily.body.data[0]).toMatchObject({
      date: new Date().toISOString().slice(0, 10),
      sent: 1,
      bounced: 1,
      complained: 1,
    });
    expect(daily.body.meta).toEqual({ limit: 3, next_cursor: null });
    // A message queued two days ago that left today counts as sent today.
    await env.DB.prepare("UPDATE messages SET created_at = ? WHERE id = ?")
      .bind(Date.now() - 2 * 24 * 60 * 60 * 1000, msg)
      .run();
    const moved = await call("GET", "/v1/usage/daily?days=3", { key: a.key });
    expect(moved.body.data.map((d: { sent: number }) => d.sent)).toEqual([1, 0, 0]);
    expectError(await call("GET", "/v1/usage/daily?days=0", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/usage?since=yesterday", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/suppressions?reason=spam", { key: a.key }), 422, "validation_error");
    expectError(await call("DELETE", "/v1/suppressions/not-an-address", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/usage"), 401, "missing_api_key");
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
