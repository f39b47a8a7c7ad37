import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { countMessages, countRows, messageRow } from "../helpers/db";
import { mail } from "../helpers/mail";
import { sentMessageId } from "../helpers/outbound";
import { bounce, relayEvents, relaySignature, signedJson } from "../helpers/relay";

describe("POST /webhooks/inbound/events", () => {
  it("refuses a bad signature, a stale timestamp and an invalid body", async () => {
    const body = JSON.stringify({
      events: [{ type: "bounce", message_id: `msg_${"0".repeat(26)}`, recipient: "a@b.c" }],
    });
    const wrong = await call("POST", "/webhooks/inbound/events", {
      rawBody: body,
      headers: await signedJson(body, { secret: "not-the-secret" }),
    });
    expectError(wrong, 401, "invalid_signature");
    const stale = await call("POST", "/webhooks/inbound/events", {
      rawBody: body,
      headers: await signedJson(body, { timestamp: Math.floor(Date.now() / 1000) - 301 }),
    });
    expectError(stale, 401, "timestamp_out_of_range");
    const missing = await call("POST", "/webhooks/inbound/events", { rawBody: body });
    expectError(missing, 401, "invalid_signature");
    const bad = JSON.stringify({ events: [{ type: "bounce", recipient: "nope" }] });
    const invalid = await call("POST", "/webhooks/inbound/events", { rawBody: bad, headers: await signedJson(bad) });
    const err = expectError(invalid, 422, "validation_error");
    expect(err.details).toEqual(
      expect.arrayContaining([expect.objectContaining({ path: expect.stringContaining("events.0") })]),
    );
    const unknown = await call("POST", "/webhooks/inbound/events", { rawBody: body, headers: await signedJson(body) });
    expect(unknown.status).toBe(202);
    expect(unknown.body.data).toMatchObject({ received: 1, results: [{ linked: false, counted: false }] });
  });

  it("refuses a replayed request (a signature counts once); a fresh signature for the same events is accepted", async () => {
    const a = await createAccount("relay-replay");
    const msg = await sentMessageId(a, ["rp@example.net"]);
    const body = JSON.stringify({ events: [bounce(msg, "rp@example.net")] });
    const headers = await signedJson(body);
    const first = await call("POST", "/webhooks/inbound/events", { rawBody: body, headers });
    expect(first.status, first.text).toBe(202);
    const replay = await call("POST", "/webhooks/inbound/events", { rawBody: body, headers });
    expectError(replay, 401, "invalid_signature");
    const reports = () =>
      countRows("SELECT COUNT(*) AS n FROM delivery_reports WHERE account_id = ? AND source = 'relay'", a.account.id);
    expect(await reports()).toBe(1);
    const resigned = await call("POST", "/webhooks/inbound/events", {
      rawBody: body,
      // One second before the first: a different signature even when the clock turned a second since.
      headers: await signedJson(body, { timestamp: Number(headers["X-Mailbot-Timestamp"]) - 1 }),
    });
    expect(resigned.status).toBe(202);
    expect(resigned.body.data.results[0]).toMatchObject({ linked: true, counted: false });
    expect(await reports()).toBe(2);
  });

  it("links by the Message-ID we sent, and refuses a recipient the message never went to", async () => {
    const a = await createAccount("relay-link");
    const msg = await sentMessageId(a, ["ana@example.net"]);
    const res = await relayEvents([
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

describe("POST /webhooks/inbound/raw", () => {
  let a: TestAccount;
  beforeAll(async () => {
    a = await createAccount("relay");
  });

  const sign = (body: Uint8Array | string, timestamp?: number, secret?: string) =>
    relaySignature(body, { timestamp, secret });

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
