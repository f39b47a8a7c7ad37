/**
 * Issue 16, items 5–8: the inbound relay's v2 signature, the HMAC computed while the body streams
 * (and the per-client throttle of failed signatures before any body is read), the trusted
 * authentication verdicts per ingestion path, Message-ID collisions, empty bodies and malformed
 * signature headers.
 */
import { env, exports } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { authenticationVerdicts } from "../../src/mail/parse";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { auditEntries, countMessages, messageRow } from "../helpers/db";
import { deliver, mail } from "../helpers/mail";
import { relaySignature } from "../helpers/relay";
import { relayV2 } from "../helpers/relay-v2";

/** Posts raw mail to the relay, v1-signed unless `headers` says otherwise. */
async function relay(
  raw: string,
  to: string,
  opts: { from?: string; headers?: Record<string, string>; ip?: string } = {},
) {
  const qs = new URLSearchParams({ to, ...(opts.from !== undefined ? { from: opts.from } : {}) });
  return call("POST", `/webhooks/inbound/raw?${qs}`, {
    rawBody: raw,
    headers: { "CF-Connecting-IP": opts.ip ?? "192.0.2.1", ...(opts.headers ?? (await relaySignature(raw))) },
  });
}

describe("relay signature v2 (item 5)", () => {
  let a: TestAccount;
  let b: TestAccount;
  beforeAll(async () => {
    a = await createAccount("v2-a");
    b = await createAccount("v2-b");
  });

  it("accepts one message relayed to several recipients, each with its own v2 signature", async () => {
    const raw = mail({ to: `${a.inbox.address}, ${b.inbox.address}` });
    for (const to of [a.inbox.address, b.inbox.address]) {
      const res = await relay(raw, to, { from: "ana@example.org", headers: await relayV2(raw, to, "ana@example.org") });
      expect(res.status, res.text).toBe(202);
    }
    expect(await countMessages(a.inbox.id)).toBe(1);
    expect(await countMessages(b.inbox.id)).toBe(1);
  });

  it("a captured v2 request cannot be pointed at another recipient or sender", async () => {
    const raw = mail({ to: a.inbox.address });
    const headers = await relayV2(raw, a.inbox.address, "ana@example.org");
    const before = await countMessages(b.inbox.id);
    expectError(await relay(raw, b.inbox.address, { from: "ana@example.org", headers }), 401, "invalid_signature");
    expectError(await relay(raw, a.inbox.address, { from: "eve@example.org", headers }), 401, "invalid_signature");
    expect(await countMessages(b.inbox.id)).toBe(before);
    // As signed, it goes through; a retry of the same request is the same mail (stored once).
    const ok = await relay(raw, a.inbox.address, { from: "ana@example.org", headers });
    expect(ok.status, ok.text).toBe(202);
    const again = await relay(raw, a.inbox.address, { from: "ana@example.org", headers });
    expect(again.body.data).toMatchObject({ message_id: ok.body.data.message_id, duplicate: true });
  });

  it("keeps v1 working, one recipient per signature", async () => {
    const raw = mail({ to: a.inbox.address });
    const headers = await relaySignature(raw);
    expect((await relay(raw, a.inbox.address, { headers })).status).toBe(202);
    expectError(await relay(raw, b.inbox.address, { headers }), 401, "invalid_signature");
  });
});

describe("streaming verification and the failed-signature throttle (item 6)", () => {
  it("refuses a client after 10 bad signatures a minute, before reading its body; others are unaffected", async () => {
    const a = await createAccount("throttle");
    const raw = mail({ to: a.inbox.address });
    const ip = "198.51.100.77";
    for (let i = 0; i < 10; i++) {
      const bad = await relay(raw, a.inbox.address, { ip, headers: await relaySignature(raw, { secret: "wrong" }) });
      expectError(bad, 401, "invalid_signature");
    }
    // The 11th request from that client, a 25 MiB body in 64 KiB chunks, is refused without its
    // body being read (the runtime may buffer a first chunk ahead of any reader, no more).
    let pulled = 0;
    const chunk = new Uint8Array(64 * 1024).fill(120);
    const body = new ReadableStream<Uint8Array>(
      {
        pull(controller) {
          pulled++;
          if (pulled > 400) controller.close();
          else controller.enqueue(chunk);
        },
      },
      { highWaterMark: 0 },
    );
    const res = await exports.default.fetch(
      new Request(`http://localhost/webhooks/inbound/raw?to=${encodeURIComponent(a.inbox.address)}`, {
        method: "POST",
        headers: { "CF-Connecting-IP": ip, ...(await relaySignature(raw)) },
        body,
      }),
    );
    expect(res.status).toBe(429);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("too_many_failed_attempts");
    expect(res.headers.get("Retry-After")).toBeTruthy();
    expect(pulled).toBeLessThanOrEqual(2);
    // Another client is not throttled, and good signatures never counted.
    expect((await relay(raw, a.inbox.address, { ip: "198.51.100.78" })).status).toBe(202);
    expect(await countMessages(a.inbox.id)).toBe(1);
  });

  it("verifies a body that arrives in many chunks (the HMAC is computed as it streams)", async () => {
    const a = await createAccount("chunks");
    const raw = mail({ to: a.inbox.address, body: `${"line of text\r\n".repeat(20_000)}` });
    const bytes = new TextEncoder().encode(raw);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 1000) controller.enqueue(bytes.slice(i, i + 1000));
        controller.close();
      },
    });
    const res = await exports.default.fetch(
      new Request(`http://localhost/webhooks/inbound/raw?to=${encodeURIComponent(a.inbox.address)}`, {
        method: "POST",
        headers: { "CF-Connecting-IP": "192.0.2.50", ...(await relaySignature(raw)) },
        body,
      }),
    );
    expect(res.status).toBe(202);
    const { data } = (await res.json()) as { data: { message_id: string } };
    const row = await messageRow(data.message_id);
    const stored = await env.MAIL_BUCKET.get(row?.raw_key as string);
    expect(new Uint8Array(await (stored as R2ObjectBody).arrayBuffer())).toEqual(bytes);
  });
});

describe("trusted authentication verdicts (item 7)", () => {
  let a: TestAccount;
  beforeAll(async () => {
    a = await createAccount("authres");
  });
  const forged = {
    "Authentication-Results": "mx.cloudflare.net; spf=pass smtp.mailfrom=bank.example; dkim=pass; dmarc=pass",
  };

  it("the relay does not believe a sender's own Authentication-Results (none trusted by default)", async () => {
    const raw = mail({ to: a.inbox.address, headers: forged });
    const res = await relay(raw, a.inbox.address);
    expect(res.status).toBe(202);
    expect((await messageRow(res.body.data.message_id))?.authentication).toBeNull();
  });

  it("Email Routing believes only the topmost header from its receiver, and never ARC", async () => {
    const top = await deliver(mail({ to: a.inbox.address, headers: forged }), a.inbox.address);
    expect(top.setReject).not.toHaveBeenCalled();
    const stored = await env.DB.prepare(
      "SELECT authentication FROM messages WHERE inbox_id = ? ORDER BY id DESC LIMIT 1",
    )
      .bind(a.inbox.id)
      .first<{ authentication: string | null }>();
    expect(JSON.parse(stored?.authentication ?? "null")).toMatchObject({
      spf: "pass",
      authserv_id: "mx.cloudflare.net",
    });

    // A trusted id below an untrusted topmost header, and a high-i ARC set: neither counts.
    const below = mail({
      to: a.inbox.address,
      headers: {
        "Authentication-Results": "relay.example; spf=fail",
        "X-Filler": "x",
        "ARC-Authentication-Results": "i=9; mx.cloudflare.net; spf=pass; dkim=pass; dmarc=pass",
      },
    }).replace("X-Filler: x", `Authentication-Results: ${forged["Authentication-Results"]}`);
    await deliver(below, a.inbox.address);
    const second = await env.DB.prepare(
      "SELECT authentication FROM messages WHERE inbox_id = ? ORDER BY id DESC LIMIT 1",
    )
      .bind(a.inbox.id)
      .first<{ authentication: string | null }>();
    expect(second?.authentication).toBeNull();
  });

  it("authenticationVerdicts reads the topmost header against the path's list only", () => {
    const headers = {
      "authentication-results": ["relay.example; spf=pass", "mx.cloudflare.net; spf=fail"],
      "arc-authentication-results": "i=1; relay.example; dkim=pass",
    };
    expect(authenticationVerdicts(headers, ["relay.example"])).toMatchObject({ spf: "pass" });
    expect(authenticationVerdicts(headers, ["mx.cloudflare.net"])).toBeNull();
    expect(authenticationVerdicts(headers, [])).toBeNull();
    expect(
      authenticationVerdicts({ "arc-authentication-results": "i=1; relay.example; spf=pass" }, ["relay.example"]),
    ).toBeNull();
  });
});

describe("Message-ID collisions, empty bodies, malformed headers (item 8)", () => {
  let a: TestAccount;
  beforeAll(async () => {
    a = await createAccount("collide");
  });

  it("stores a different message with a known Message-ID, flagged, instead of dropping it", async () => {
    const id = `<known.${crypto.randomUUID()}@example.org>`;
    const forgedFirst = mail({ to: a.inbox.address, messageId: id, subject: "Forged", body: "Pay here.\r\n" });
    const real = mail({ to: a.inbox.address, messageId: id, subject: "Real", body: "The real mail.\r\n" });
    const first = await relay(forgedFirst, a.inbox.address);
    const second = await relay(real, a.inbox.address);
    expect(second.status).toBe(202);
    expect(second.body.data.duplicate).toBe(false);
    expect(second.body.data.message_id).not.toBe(first.body.data.message_id);
    const row = await messageRow(second.body.data.message_id);
    expect(row?.subject).toBe("Real");
    expect(JSON.parse(row?.labels as string)).toContain("message_id_collision");
    expect(JSON.parse((await messageRow(first.body.data.message_id))?.labels as string)).not.toContain(
      "message_id_collision",
    );
    const audit = (await auditEntries({ accountId: a.account.id })).find(
      (e) => e.action === "message.received" && e.target_id === second.body.data.message_id,
    );
    expect(audit?.metadata.message_id_collision).toBe(first.body.data.message_id);
    // The same real mail again (a redelivery, another Received line on top) is a duplicate.
    const redelivered = `Received: from mx2.example.org by relay; Mon, 23 Nov 2026 10:01:00 +0000\r\n${real}`;
    const third = await relay(redelivered, a.inbox.address);
    expect(third.body.data).toMatchObject({ duplicate: true, message_id: second.body.data.message_id });
  });

  it("refuses an empty body with 400 empty_message and stores nothing", async () => {
    const before = await countMessages(a.inbox.id);
    expectError(await relay("", a.inbox.address), 400, "empty_message");
    expect(await countMessages(a.inbox.id)).toBe(before);
  });

  it("says a malformed signature header is malformed, and a missing one is required", async () => {
    const raw = mail({ to: a.inbox.address });
    const ts = String(Math.floor(Date.now() / 1000));
    const malformed = await relay(raw, a.inbox.address, {
      headers: { "X-Mailbot-Timestamp": ts, "X-Mailbot-Signature": "sha256=nothex" },
    });
    expect(expectError(malformed, 401, "malformed_signature").message).toMatch(/malformed/);
    const badTs = await relay(raw, a.inbox.address, {
      headers: { "X-Mailbot-Timestamp": "yesterday", "X-Mailbot-Signature": `sha256=${"0".repeat(64)}` },
    });
    expectError(badTs, 401, "malformed_signature");
    const missing = await relay(raw, a.inbox.address, { headers: {} });
    expect(expectError(missing, 401, "invalid_signature").message).toMatch(/required/);
  });
});
