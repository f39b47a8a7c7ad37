import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { CLAIM_STALE_MS, releaseStaleClaims } from "../../src/features/bounces/bounces.service";
import { deliverOutbound } from "../../src/features/outbound/delivery.service";
import { SendMessageInput } from "../../src/features/outbound/outbound.schemas";
import { sendMessage } from "../../src/features/outbound/outbound.service";
import type { BaseContext } from "../../src/lib/context";
import { isRecipientBounce } from "../../src/mail/status-codes";
import { runSweeps } from "../../src/triggers/scheduled";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { call } from "../helpers/api";
import {
  auditEntries,
  countRows,
  eventsOf,
  jobContext,
  liftLimit,
  messageRow,
  serviceContext,
  settledMessage,
  unique,
} from "../helpers/db";
import { insertSentMessage, smtpReceived } from "../helpers/outbound";
import { bounce, relayEvents } from "../helpers/relay";

/**
 * Review of issue 15's delivery: one SMTP transaction per recipient must not lose recipients
 * (progress per recipient, retried alone), a relay's bare 550 is not a bounce, and a report claim
 * whose batch never committed does not swallow the report.
 */

const snapshot = async (id: string) =>
  (await env.INBOX_COUNTER.getByName(id).snapshot()) ?? { sent: 0, bounced: 0, complained: 0 };
const suppressions = (accountId: string) =>
  env.DB.prepare("SELECT address, reason FROM suppressions WHERE account_id = ?").bind(accountId).all();

/** Accepted but not queued: the test drives the consumer (and its clock) by hand. */
async function queuedMessage(a: TestAccount, to: string[]) {
  const ctx = serviceContext(a.account.id, { actor: { type: "api_key", id: null }, unqueued: true });
  const queued = await sendMessage(
    ctx,
    a.inbox.id,
    SendMessageInput.parse({ to, subject: "Newsletter", body_text: "x" }),
  );
  return { v: 1 as const, message_id: queued.id, account_id: a.account.id };
}

const later = (minutes: number) => jobContext({ at: Date.now() + minutes * 60_000 });

async function wireMessage(a: TestAccount, id: string) {
  const res = await call("GET", `/v1/inboxes/${a.inbox.id}/messages/${id}`, { key: a.key });
  expect(res.status, res.text).toBe(200);
  return res.body.data as { status: string; error: string | null; recipient_states: Record<string, string> };
}

describe("per-recipient delivery progress", () => {
  it("a 451 for a later recipient is retried for that recipient alone; each copy arrives once", async () => {
    const a = await createAccount("progress-retry");
    await liftLimit(a.account.id);
    const [first, limited, last] = [unique("p1-"), unique("ratelimit-"), unique("p3-")];
    const job = await queuedMessage(a, [first, limited, last]);

    // Attempt 1: the relay rate-limits the second transaction; the others' copies left.
    const outcome = await deliverOutbound(jobContext(), job);
    expect(outcome).toMatchObject({ kind: "retry", delaySeconds: expect.any(Number) });
    const row = await messageRow(job.message_id);
    expect(row?.status).toBe("queued");
    expect(row?.attempts).toBe(1);
    expect(String(row?.last_error)).toMatch(new RegExp(`451.*rate limited.*pending: ${limited}`));
    expect(JSON.parse(String(row?.delivery_progress))).toMatchObject({
      [first]: { state: "accepted" },
      [last]: { state: "accepted" },
    });
    expect((await wireMessage(a, job.message_id)).recipient_states).toEqual({
      [first]: "accepted",
      [limited]: "pending",
      [last]: "accepted",
    });
    const deferred = (await auditEntries({ accountId: a.account.id, action: "message.send_deferred" })).at(-1);
    expect(deferred?.metadata).toMatchObject({ attempt: 1, pending_recipients: [limited], done_recipients: 2 });
    expect(await eventsOf(a.account.id, "message.sent")).toHaveLength(0);
    expect((await smtpReceived(first)).length).toBe(1);
    expect((await smtpReceived(limited)).length).toBe(0);

    // Attempt 2 (after the backoff): only the pending recipient is sent to.
    expect(await deliverOutbound(later(6), job)).toEqual({ kind: "done", status: "sent" });
    for (const r of [first, limited, last]) expect((await smtpReceived(r)).length, r).toBe(1);
    const [limitedCopy] = await smtpReceived(limited);
    // The retried copy still leaves with its own VERP bounce address.
    expect(limitedCopy?.mailFrom).toBe(JSON.parse(String(row?.bounce_addresses))[limited]);
    const sent = await wireMessage(a, job.message_id);
    expect(sent.status).toBe("sent");
    expect(sent.error).toBeNull();
    expect(Object.values(sent.recipient_states)).toEqual(["accepted", "accepted", "accepted"]);
    const [event] = await eventsOf(a.account.id, "message.sent");
    expect(event?.data.accepted).toEqual([first, limited, last]);
    expect(event?.data.rejected).toEqual([]);
    // Sends are counted once each, when the message finishes.
    expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 3, bounced: 0 });

    // A redelivery of the finished message sends nothing.
    expect(await deliverOutbound(later(12), job)).toEqual({ kind: "done", status: "sent" });
    for (const r of [first, limited, last]) expect((await smtpReceived(r)).length, r).toBe(1);
  });

  it("retries running out fail the pending recipients by name; the delivered ones stay sent", async () => {
    const a = await createAccount("progress-exhausted");
    await liftLimit(a.account.id);
    const [ok, stuck] = [unique("ok-"), unique("temp-")];
    const job = await queuedMessage(a, [ok, stuck]);
    expect(await deliverOutbound(jobContext(), job)).toMatchObject({ kind: "retry" });
    // Skip to the last attempt.
    await env.DB.prepare("UPDATE messages SET attempts = 7 WHERE id = ?").bind(job.message_id).run();
    expect(await deliverOutbound(later(60), job)).toEqual({ kind: "done", status: "sent" });

    expect((await smtpReceived(ok)).length).toBe(1);
    const wire = await wireMessage(a, job.message_id);
    expect(wire.status).toBe("sent");
    expect(wire.recipient_states).toEqual({ [ok]: "accepted", [stuck]: "failed" });
    expect(wire.error).toMatch(new RegExp(`${stuck}: retries_exhausted .*451`));
    const [event] = await eventsOf(a.account.id, "message.sent");
    expect(event?.data.accepted).toEqual([ok]);
    expect(event?.data.rejected).toEqual([
      { recipient: stuck, code: "retries_exhausted", message: expect.stringMatching(/451/) },
    ]);
    const audit = (await auditEntries({ accountId: a.account.id, action: "message.sent" })).at(-1);
    expect(audit?.metadata.rejected).toEqual([
      expect.objectContaining({ recipient: stuck, code: "retries_exhausted", permanent: false, bounce: false }),
    ]);
    // Running out of retries is the path's failure: no bounce, no suppression.
    expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 1, bounced: 0 });
    expect((await suppressions(a.account.id)).results).toEqual([]);
  });

  it("a Worker dying between two copies: the next attempt sends only to the recipients not yet delivered", async () => {
    const a = await createAccount("progress-crash");
    await liftLimit(a.account.id);
    const rcpts = [unique("c1-"), unique("c2-"), unique("c3-")];
    const job = await queuedMessage(a, rcpts);

    // The Worker dies right after the first copy's progress is written: nothing after it is
    // written (every later write throws), so the row stays `sending` under its lease.
    const base = jobContext();
    let updates = 0;
    let dead = false;
    const db = new Proxy(base.db, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if (dead && ["insert", "update", "delete", "batch"].includes(String(prop))) {
          return () => {
            throw new Error("worker died");
          };
        }
        if (prop !== "update") return typeof value === "function" ? value.bind(target) : value;
        return (table: unknown) => {
          const builder = target.update(table as never);
          // #1 is the claim, #2 the progress after the first copy.
          if (++updates !== 2) return builder;
          return {
            set: (values: never) => ({
              where: (cond: never) => ({
                // biome-ignore lint/suspicious/noThenProperty: a thenable like drizzle's builder
                then: (resolve: (v: unknown) => void, reject: (e: unknown) => void) =>
                  builder
                    .set(values)
                    .where(cond)
                    .then(() => {
                      dead = true;
                      throw new Error("worker died");
                    })
                    .then(resolve, reject),
              }),
            }),
          };
        };
      },
    });
    await expect(deliverOutbound({ ...base, db } as BaseContext, job)).rejects.toThrow("worker died");
    const crashed = await messageRow(job.message_id);
    expect(crashed?.status).toBe("sending");
    expect(Object.keys(JSON.parse(String(crashed?.delivery_progress)))).toEqual([rcpts[0]]);
    expect((await smtpReceived(rcpts[0] as string)).length).toBe(1);
    expect((await smtpReceived(rcpts[1] as string)).length).toBe(0);

    // The queue redelivers once the lease has run out.
    expect(await deliverOutbound(later(6), job)).toEqual({ kind: "done", status: "sent" });
    for (const r of rcpts) expect((await smtpReceived(r)).length, r).toBe(1);
    expect((await wireMessage(a, job.message_id)).status).toBe("sent");
    const [event] = await eventsOf(a.account.id, "message.sent");
    expect(event?.data.accepted).toEqual(rcpts);
  });
});

describe("a relay's 5xx without an enhanced status", () => {
  it("is a bounce only when its text says the mailbox is unknown", () => {
    expect(isRecipientBounce("rcpt", 550, "Relaying denied")).toBe(false);
    expect(isRecipientBounce("rcpt", 550, "Sender quota exceeded")).toBe(false);
    expect(isRecipientBounce("rcpt", 554, "Transaction failed")).toBe(false);
    expect(isRecipientBounce("rcpt", 550, "User unknown in virtual mailbox table")).toBe(true);
    expect(isRecipientBounce("rcpt", 550, "No such user here")).toBe(true);
    expect(isRecipientBounce("rcpt", 550, "<a@b.example>: Recipient rejected")).toBe(true);
    expect(isRecipientBounce("rcpt", 553, "mailbox not found")).toBe(true);
    // An enhanced status decides, whatever the text.
    expect(isRecipientBounce("rcpt", 550, "5.7.1 User unknown relaying denied")).toBe(false);
    expect(isRecipientBounce("rcpt", 550, "5.1.1 Relaying denied")).toBe(true);
    expect(isRecipientBounce("data", 550, "User unknown")).toBe(false);
    expect(isRecipientBounce("rcpt", 450, "User unknown")).toBe(false);
  });

  it("`550 Relaying denied` fails the message and moves nothing; `550 User unknown` is a hard bounce", async () => {
    const a = await createAccount("bare-550");
    await liftLimit(a.account.id);
    const denied = unique("relaydeny-");
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [denied], subject: "x", body_text: "x" },
    });
    expect(res.status, res.text).toBe(202);
    const failed = await settledMessage(res.body.data.id);
    expect(failed.status).toBe("failed");
    expect(String(failed.last_error)).toMatch(/550 Relaying denied/);
    expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 0, bounced: 0 });
    expect((await suppressions(a.account.id)).results).toEqual([]);
    expect(await countRows("SELECT COUNT(*) AS n FROM delivery_reports WHERE account_id = ?", a.account.id)).toBe(0);

    const unknown = unique("nouser-");
    const res2 = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [unknown], subject: "x", body_text: "x" },
    });
    await settledMessage(res2.body.data.id, ["bounced"]);
    // The counters are fed right after the status commits.
    await vi.waitFor(async () => expect(await snapshot(a.inbox.id)).toMatchObject({ sent: 1, bounced: 1 }));
    expect((await suppressions(a.account.id)).results).toEqual([{ address: unknown, reason: "hard_bounce" }]);
  });
});

describe("report claims left by a crash", () => {
  /** The claim row a crash left: inserted ahead of its batch, the batch never ran. */
  async function orphanClaim(a: TestAccount, messageId: string, recipient: string, createdAt: number) {
    await env.DB.prepare(
      `INSERT INTO delivery_reports (id, account_id, inbox_id, report_message_id, original_message_id, kind,
         bounce_type, recipient, status_code, source, created_at, claim_key, claim_pending, verified)
       VALUES (?, ?, ?, ?, ?, 'bounce', 'hard', ?, '5.1.1', 'relay', ?, ?, 1, 1)`,
    )
      .bind(
        `rpt_crash${crypto.randomUUID().replaceAll("-", "").slice(0, 20)}`,
        a.account.id,
        a.inbox.id,
        "rev_lost",
        messageId,
        recipient,
        createdAt,
        `bounce:hard:${recipient}`,
      )
      .run();
  }
  const status = async (id: string) => (await messageRow(id))?.status;
  /** The relay posts the bounce again (a distinct body: an identical signed one would be a replay). */
  let posts = 0;
  async function redeliver(id: string, rcpt: string) {
    const res = await relayEvents([{ ...bounce(id, rcpt), diagnostic: `550 5.1.1 user unknown (${++posts})` }]);
    expect(res.status, res.text).toBe(202);
    return res.body.data.results[0] as { linked: boolean; counted: boolean };
  }

  it("the sweep releases a claim whose batch never committed; the redelivered report then counts once", async () => {
    const a = await createAccount("claim-sweep");
    const rcpt = unique("claimed-");
    const { id } = await insertSentMessage(a, { to: [rcpt] });
    await orphanClaim(a, id, rcpt, Date.now());

    // While the claim is fresh (its batch could still be running), a report is a repeat.
    expect(await redeliver(id, rcpt)).toMatchObject({ counted: false });
    expect(await status(id)).toBe("sent");
    expect((await suppressions(a.account.id)).results).toEqual([]);

    // The sweep, later: the orphan is released (committed claims are kept) …
    // The cron runs the sweep (now: nothing of ours is stale yet) …
    expect((await runSweeps(env, Date.now())).report_claims_released).toEqual(expect.any(Number));
    expect(await status(id)).toBe("sent");
    // … and later (the sweep alone at a later clock: the other sweeps would touch other files' rows).
    expect(await releaseStaleClaims(later(11))).toBeGreaterThanOrEqual(1);
    expect(
      await countRows(
        "SELECT COUNT(*) AS n FROM delivery_reports WHERE original_message_id = ? AND claim_pending = 1",
        id,
      ),
    ).toBe(0);
    // … and the relay's redelivery is applied: status, suppression, counter, event.
    expect(await redeliver(id, rcpt)).toMatchObject({ linked: true, counted: true });
    expect(await status(id)).toBe("bounced");
    expect((await suppressions(a.account.id)).results).toEqual([{ address: rcpt, reason: "hard_bounce" }]);
    expect(await snapshot(a.inbox.id)).toMatchObject({ bounced: 1 });
    expect(await eventsOf(a.account.id, "message.bounced")).toHaveLength(1);
    const claims = await env.DB.prepare(
      "SELECT claim_pending FROM delivery_reports WHERE original_message_id = ? AND claim_key IS NOT NULL",
    )
      .bind(id)
      .all();
    expect(claims.results).toEqual([{ claim_pending: 0 }]);

    // A committed claim survives the sweep: a third copy is still a repeat.
    await releaseStaleClaims(later(12));
    expect(await redeliver(id, rcpt)).toMatchObject({ counted: false });
    expect(await eventsOf(a.account.id, "message.bounced")).toHaveLength(1);
    expect(await snapshot(a.inbox.id)).toMatchObject({ bounced: 1 });
  });

  it("a stale orphan claim is taken over by the redelivered report without waiting for the sweep", async () => {
    const a = await createAccount("claim-takeover");
    const rcpt = unique("claimed-");
    const { id } = await insertSentMessage(a, { to: [rcpt] });
    await orphanClaim(a, id, rcpt, Date.now() - CLAIM_STALE_MS - 60_000);
    expect(await redeliver(id, rcpt)).toMatchObject({ linked: true, counted: true });
    expect(await status(id)).toBe("bounced");
    expect((await suppressions(a.account.id)).results).toEqual([{ address: rcpt, reason: "hard_bounce" }]);
    expect(await eventsOf(a.account.id, "message.bounced")).toHaveLength(1);
  });
});
