import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { afterEach, describe, expect, inject, it } from "vitest";
import { createDb } from "../../src/db/client";
import { inboxes } from "../../src/db/schema";
import { deliverOutbound } from "../../src/features/outbound/delivery.service";
import { SendMessageInput } from "../../src/features/outbound/outbound.schemas";
import { sendMessage } from "../../src/features/outbound/outbound.service";
import { selectTransport, transportName } from "../../src/features/outbound/transports";
import { enforceSenderAuth } from "../../src/features/sender-auth/compliance.service";
import { sharedDomainKey } from "../../src/features/sender-auth/dkim-keys";
import { KNOWN_SENDERS, signOutbound } from "../../src/features/sender-auth/send-policy";
import { type DnsType, dohResolver, setDnsResolver, staticResolver } from "../../src/lib/dns";
import { createAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import {
  auditEntries,
  eventsOf,
  jobContext,
  liftLimit,
  serviceContext,
  settledMessage,
  unique,
  worker,
} from "../helpers/db";
import { deliver, mail } from "../helpers/mail";

type Table = Record<string, Partial<Record<DnsType, string[]>> | "temporary_failure">;
interface DnsRecord {
  type: "TXT" | "MX";
  name: string;
  value: string;
  purpose: string;
}

// Tests never reach the network: between tests (and for consumers still running after one) DNS
// knows no names, so a late re-check blocks instead of asking a real resolver.
afterEach(() => {
  setDnsResolver(staticResolver({}));
});

/** The DNS a domain owner publishes: the records we asked for, with `edit` applied per name. */
function published(records: DnsRecord[], edit: (t: Table) => void = () => {}): Table {
  const table: Table = {};
  for (const r of records) {
    const entry = (table[r.name] ?? {}) as Partial<Record<DnsType, string[]>>;
    entry[r.type] = [...(entry[r.type] ?? []), r.value];
    table[r.name] = entry;
  }
  edit(table);
  return table;
}

function useDns(table: Table) {
  setDnsResolver(staticResolver(table));
}

async function messageCount(inboxId: string) {
  return (
    await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ? AND direction = 'outbound'")
      .bind(inboxId)
      .first<{ n: number }>()
  )?.n;
}

/** mailauth's verdicts on the last message the SMTP server received for `rcpt`, keys served from `dns`. */
async function dkimVerdicts(rcpt: string, dns: Record<string, string>) {
  const res = await fetch(`${inject("smtpControlUrl")}/dkim-verify`, {
    method: "POST",
    body: JSON.stringify({ rcpt, dns }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { results: { signingDomain: string; selector: string; status: { result: string } }[] })
    .results;
}

/** An account with a domain added (not yet verified). */
async function withDomain(name = `acme-${crypto.randomUUID().slice(0, 6)}.example`) {
  const a = await createAccount("domains");
  const res = await call("POST", "/v1/domains", { key: a.key, body: { domain: name } });
  expect(res.status, res.text).toBe(201);
  return { ...a, domain: res.body.data, name, records: res.body.data.dns_records as DnsRecord[] };
}

/** An account with a verified domain and an inbox `sales@<domain>` on it, send limit lifted. */
async function verifiedSender() {
  const a = await withDomain();
  useDns(published(a.records));
  const verify = await call("POST", `/v1/domains/${a.domain.id}/verify`, { key: a.key });
  expect(verify.status, verify.text).toBe(200);
  expect(verify.body.data.status).toBe("verified");
  const inbox = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "sales", domain: a.name } });
  expect(inbox.status, inbox.text).toBe(201);
  await liftLimit(a.account.id);
  return { ...a, sender: inbox.body.data };
}

describe("domains", () => {
  it("adding a domain generates a sealed DKIM key and the records to publish; bad input is refused", async () => {
    const a = await withDomain("mail.acme-add.example");
    expect(a.domain).toMatchObject({
      id: expect.stringMatching(/^dom_/),
      domain: "mail.acme-add.example",
      status: "pending",
      dkim_selector: "default",
      spf_verified: false,
    });
    const byPurpose = Object.fromEntries(a.records.map((r) => [r.purpose, r]));
    expect(byPurpose.spf).toMatchObject({
      type: "TXT",
      name: "mail.acme-add.example",
      value: "v=spf1 include:_spf.mx.cloudflare.net ~all",
    });
    expect(byPurpose.dkim?.name).toBe("default._domainkey.mail.acme-add.example");
    expect(byPurpose.dkim?.value).toMatch(/^v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA[\w+/=]+$/);
    expect(byPurpose.dmarc).toMatchObject({
      name: "_dmarc.mail.acme-add.example",
      value: expect.stringMatching(/^v=DMARC1; p=/),
    });
    expect(a.records.filter((r) => r.purpose === "mx").map((r) => r.value)).toEqual([
      "10 route1.mx.cloudflare.net",
      "20 route2.mx.cloudflare.net",
      "30 route3.mx.cloudflare.net",
    ]);

    // At rest: public key in clear, private key sealed (iv.ciphertext), never on the wire.
    const row = await env.DB.prepare("SELECT * FROM domains WHERE id = ?")
      .bind(a.domain.id)
      .first<{ account_id: string; dkim_public_key: string; dkim_private_key_sealed: string }>();
    expect(row?.account_id).toBe(a.account.id);
    expect(byPurpose.dkim?.value).toContain(row?.dkim_public_key);
    expect(row?.dkim_private_key_sealed).toMatch(/^[A-Za-z0-9+/=]{16}\.[A-Za-z0-9+/=]{1000,}$/);
    expect(row?.dkim_private_key_sealed).not.toContain("MIIE");
    const got = await call("GET", `/v1/domains/${a.domain.id}`, { key: a.key });
    expect(got.body.data.id).toBe(a.domain.id);
    expect(got.text).not.toContain(row?.dkim_private_key_sealed.slice(0, 40));
    const list = await call("GET", "/v1/domains", { key: a.key });
    expect(list.body.data.map((d: { id: string }) => d.id)).toEqual([a.domain.id]);
    expect((await auditEntries({ accountId: a.account.id, action: "domain.created" }))[0]?.metadata).toMatchObject({
      domain: "mail.acme-add.example",
    });

    expectError(
      await call("POST", "/v1/domains", { key: a.key, body: { domain: "mail.acme-add.example" } }),
      409,
      "domain_exists",
    );
    const bad = expectError(
      await call("POST", "/v1/domains", { key: a.key, body: { domain: "not a domain" } }),
      422,
      "validation_error",
    );
    expect(bad.details[0].path).toBe("domain");
    expectError(
      await call("POST", "/v1/domains", { key: a.key, body: { domain: "mailbot.test" } }),
      422,
      "validation_error",
    );
    expectError(
      await call("POST", "/v1/domains", { key: a.key, body: { domain: "x.example", extra: 1 } }),
      422,
      "validation_error",
    );
    expectError(await call("POST", "/v1/domains", { body: { domain: "x.example" } }), 401, "missing_api_key");
  });

  it("verify bypasses the DNS cache (a record published a moment ago counts); the gate keeps using it", async () => {
    const a = await withDomain();
    // A caching DoH resolver over a table the test edits, counting the questions it is asked.
    let table: Table = {};
    const asked: string[] = [];
    const codes: Record<string, number> = { TXT: 16, MX: 15, A: 1, AAAA: 28 };
    const fetcher = (async (url: string) => {
      const name = new URL(url).searchParams.get("name") as string;
      const type = new URL(url).searchParams.get("type") as DnsType;
      asked.push(`${type} ${name}`);
      const entry = table[name];
      if (entry === undefined) return Response.json({ Status: 3 });
      const records = entry === "temporary_failure" ? [] : (entry[type] ?? []);
      return Response.json({
        Status: 0,
        Answer: records.map((r) => ({ name, type: codes[type], TTL: 300, data: type === "TXT" ? `"${r}"` : r })),
      });
    }) as unknown as typeof fetch;
    setDnsResolver(dohResolver({ fetcher }));

    const first = await call("POST", `/v1/domains/${a.domain.id}/verify`, { key: a.key });
    expect(first.body.data.status).toBe("pending");
    const afterFirst = asked.length;
    expect(afterFirst).toBeGreaterThanOrEqual(4);
    // The owner publishes; verifying right away sees it, although NXDOMAIN answers are cached.
    table = published(a.records);
    const second = await call("POST", `/v1/domains/${a.domain.id}/verify`, { key: a.key });
    expect(second.body.data).toMatchObject({ status: "verified", spf_verified: true, mx_verified: true });
    expect(asked.length).toBeGreaterThan(afterFirst);
    // The gate's lookups answer from the cache verify refreshed: no new questions.
    const before = asked.length;
    const check = await call("GET", `/v1/compliance/check?domain=${a.name}`, { key: a.key });
    expect(check.body.data.send_allowed).toBe(true);
    expect(asked.length).toBe(before);
  });

  it("verify checks live DNS: pending with next steps, then verified (event + audit); inboxes need it; inbound resolves", async () => {
    const a = await withDomain();
    // Nothing published yet: an inbox on the domain is refused, verify stays pending and says why.
    useDns({});
    expectError(
      await call("POST", "/v1/inboxes", { key: a.key, body: { username: "sales", domain: a.name } }),
      422,
      "validation_error",
    );
    const pending = await call("POST", `/v1/domains/${a.domain.id}/verify`, { key: a.key });
    expect(pending.status, pending.text).toBe(200);
    expect(pending.body.data).toMatchObject({
      status: "pending",
      spf_verified: false,
      dkim_verified: false,
      dmarc_verified: false,
      mx_verified: false,
      next_step: expect.stringContaining("SPF, DKIM, DMARC"),
    });
    expect(await eventsOf(a.account.id, "domain.verified")).toHaveLength(0);
    expect(
      (await auditEntries({ accountId: a.account.id, action: "domain.verification_checked" }))[0]?.metadata.problems.spf
        .status,
    ).toBe("missing");

    // A temporary DNS failure decides nothing.
    useDns({ [a.name]: "temporary_failure" });
    const temp = expectError(
      await call("POST", `/v1/domains/${a.domain.id}/verify`, { key: a.key }),
      503,
      "dns_unavailable",
    );
    expect(temp.details.domain).toBe(a.name);

    useDns(published(a.records));
    const ok = await call("POST", `/v1/domains/${a.domain.id}/verify`, { key: a.key });
    expect(ok.body.data).toMatchObject({
      status: "verified",
      spf_verified: true,
      dkim_verified: true,
      dmarc_verified: true,
      mx_verified: true,
      next_step: null,
    });
    expect(ok.body.data.dns_records.every((r: { status: string }) => r.status === "verified")).toBe(true);
    const [event] = await eventsOf(a.account.id, "domain.verified");
    expect(event?.data).toMatchObject({ domain_id: a.domain.id, domain: a.name, dkim_verified: true });
    const [audit] = await auditEntries({ accountId: a.account.id, action: "domain.verified" });
    expect(audit?.target_id).toBe(a.domain.id);
    expect(audit?.metadata.event_id).toBeDefined();

    const inbox = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "Sales", domain: a.name } });
    expect(inbox.status, inbox.text).toBe(201);
    expect(inbox.body.data).toMatchObject({ address: `sales@${a.name}`, domain: a.name });
    const msg = await deliver(mail({ to: `sales@${a.name}`, subject: "Custom domain inbound" }), `sales@${a.name}`);
    expect(msg.setReject).not.toHaveBeenCalled();
    const stored = await env.DB.prepare("SELECT subject FROM messages WHERE inbox_id = ? AND direction = 'inbound'")
      .bind(inbox.body.data.id)
      .first<{ subject: string }>();
    expect(stored?.subject).toBe("Custom domain inbound");

    // Another account: the domain is invisible (404), and cannot be claimed (409).
    const b = await createAccount("intruder");
    expectError(await call("GET", `/v1/domains/${a.domain.id}`, { key: b.key }), 404, "not_found");
    expectError(await call("POST", `/v1/domains/${a.domain.id}/verify`, { key: b.key }), 404, "not_found");
    expectError(await call("GET", `/v1/compliance/check?domain=${a.name}`, { key: b.key }), 404, "not_found");
    // It may add the name (the holder's claim could be stale), but DNS still proves A's key: its
    // verify does not take the domain, and A keeps it.
    const added = await call("POST", "/v1/domains", { key: b.key, body: { domain: a.name } });
    expect(added.status, added.text).toBe(201);
    const tried = await call("POST", `/v1/domains/${added.body.data.id}/verify`, { key: b.key });
    expect(tried.status, tried.text).toBe(200);
    expect(tried.body.data).toMatchObject({ status: "pending", dkim_verified: false });
    expect((await call("GET", `/v1/domains/${a.domain.id}`, { key: a.key })).body.data.status).toBe("verified");
    await call("DELETE", `/v1/domains/${added.body.data.id}`, { key: b.key });
    expectError(
      await call("POST", "/v1/inboxes", { key: b.key, body: { username: "x", domain: a.name } }),
      422,
      "validation_error",
    );

    // A domain with inboxes is not deleted; without, it is (audited).
    expectError(await call("DELETE", `/v1/domains/${a.domain.id}`, { key: a.key }), 409, "domain_in_use");
    const other = await call("POST", "/v1/domains", { key: a.key, body: { domain: `spare-${a.name}` } });
    const del = await call("DELETE", `/v1/domains/${other.body.data.id}`, { key: a.key });
    expect(del.status, del.text).toBe(200);
    expect(await env.DB.prepare("SELECT id FROM domains WHERE id = ?").bind(other.body.data.id).first()).toBeNull();
    expect(await auditEntries({ accountId: a.account.id, action: "domain.deleted" })).toHaveLength(1);
  });
});

describe("the gate before every send", () => {
  it("a verified domain sends, DKIM-signed; mailauth verifies the signature on the bytes the SMTP server got", async () => {
    const a = await verifiedSender();
    const to = unique("dkim-");
    const res = await call("POST", `/v1/inboxes/${a.sender.id}/messages`, {
      key: a.key,
      body: {
        to: [to],
        subject: "Signed  with   DKIM",
        body_text: "Hello from a custom domain.\n\nTrailing spaces   \n\n\n",
      },
    });
    expect(res.status, res.text).toBe(202);
    expect((await settledMessage(res.body.data.id))?.status).toBe("sent");
    const dkim = a.records.find((r) => r.purpose === "dkim") as DnsRecord;
    const verdicts = await dkimVerdicts(to, { [dkim.name]: dkim.value });
    expect(verdicts).toHaveLength(1);
    expect(verdicts[0]).toMatchObject({ signingDomain: a.name, selector: "default", status: { result: "pass" } });
    // A key that is not ours: the same bytes fail.
    const other = await withDomain();
    const wrong = other.records.find((r) => r.purpose === "dkim") as DnsRecord;
    expect((await dkimVerdicts(to, { [dkim.name]: wrong.value }))[0]?.status.result).toBe("fail");
    // The raw endpoint serves the signed bytes that left.
    const raw = await call("GET", `/v1/inboxes/${a.sender.id}/messages/${res.body.data.id}/raw`, { key: a.key });
    expect(raw.text).toMatch(
      new RegExp(
        `^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=${a.name.replace(/\./g, "\\.")}; s=default;`,
      ),
    );
  });

  it("mailauth verifies an attachment, a quoted-printable body, folded To/References and List-Unsubscribe", async () => {
    const a = await verifiedSender();
    const dkim = a.records.find((r) => r.purpose === "dkim") as DnsRecord;
    const dns = { [dkim.name]: dkim.value };
    const recipients = Array.from({ length: 12 }, (_, i) => unique(`a-rather-long-recipient-name-${i}-`));
    const res = await call("POST", `/v1/inboxes/${a.sender.id}/messages`, {
      key: a.key,
      body: {
        to: recipients,
        subject: "Invoice INV-2041 – März",
        body_text: `Grüße aus München — your invoice is attached.\n${"A long line of prose that will need soft line breaks. ".repeat(6)}\n`,
        body_html: '<p>Grüße — <a href="https://billing.example.org/inv/2041">invoice INV-2041</a></p>',
        attachments: [
          {
            filename: "INV-2041.pdf",
            content_type: "application/pdf",
            content: btoa("%PDF-1.4\n% fake invoice\n".repeat(200)),
          },
        ],
        headers: {
          "List-Unsubscribe": "<https://news.example.org/u/abc>, <mailto:unsubscribe@news.example.org>",
          "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
      },
    });
    expect(res.status, res.text).toBe(202);
    expect((await settledMessage(res.body.data.id))?.status).toBe("sent");
    const raw = await call("GET", `/v1/inboxes/${a.sender.id}/messages/${res.body.data.id}/raw`, { key: a.key });
    expect(raw.text).toMatch(/\r\nTo: [^\r]+,\r\n[ \t]/); // To is folded
    expect(raw.text).toMatch(/Content-Transfer-Encoding: quoted-printable/i);
    expect(raw.text).toMatch(/Content-Disposition: attachment/i);
    expect(raw.text).toMatch(/h=[^;]*list-unsubscribe:list-unsubscribe-post/);
    expect((await dkimVerdicts(recipients[0] as string, dns))[0]).toMatchObject({
      signingDomain: a.name,
      status: { result: "pass" },
    });

    // A reply carries the thread's long References, folded.
    const refs = Array.from({ length: 14 }, (_, i) => `<thread-${i}.${crypto.randomUUID()}@mail.example.org>`);
    const customer = unique("customer-");
    await deliver(
      mail({ to: a.sender.address, from: customer, subject: "Re: invoice", references: refs.join(" ") }),
      a.sender.address,
      customer,
    );
    const inbound = await env.DB.prepare(
      "SELECT id FROM messages WHERE inbox_id = ? AND direction = 'inbound' ORDER BY created_at DESC",
    )
      .bind(a.sender.id)
      .first<{ id: string }>();
    const reply = await call("POST", `/v1/messages/${inbound?.id}/reply`, {
      key: a.key,
      body: { body_text: "Thanks — we have reissued the invoice." },
    });
    expect(reply.status, reply.text).toBe(202);
    expect((await settledMessage(reply.body.data.id))?.status).toBe("sent");
    const replyRaw = await call("GET", `/v1/inboxes/${a.sender.id}/messages/${reply.body.data.id}/raw`, {
      key: a.key,
    });
    expect(replyRaw.text).toMatch(/\r\nReferences: [^\r]+\r\n[ \t]/);
    expect(replyRaw.text).toContain(refs[13]);
    expect((await dkimVerdicts(customer, dns))[0]).toMatchObject({ signingDomain: a.name, status: { result: "pass" } });
  });

  it("the shared MAIL_DOMAIN is signed with its configured key and verifies too", async () => {
    const a = await createAccount("shared");
    const to = unique("shared-");
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [to], subject: "Shared domain", body_text: "Hi", body_html: "<p>Hi <b>there</b></p>" },
    });
    expect(res.status, res.text).toBe(202);
    expect((await settledMessage(res.body.data.id))?.status).toBe("sent");
    const key = await sharedDomainKey(env);
    const verdicts = await dkimVerdicts(to, {
      "default._domainkey.mailbot.test": `v=DKIM1; k=rsa; p=${key?.publicKey}`,
    });
    expect(verdicts[0]).toMatchObject({ signingDomain: "mailbot.test", status: { result: "pass" } });
  });

  const failures: { name: string; reason: string; edit: (t: Table, d: string) => void; problem: RegExp }[] = [
    {
      name: "no SPF record",
      reason: "spf_failed",
      edit: (t, d) => delete (t[d] as { TXT?: string[] }).TXT,
      problem: /no SPF/,
    },
    {
      name: "SPF without our include",
      reason: "spf_failed",
      edit: (t, d) => {
        (t[d] as { TXT: string[] }).TXT = ["v=spf1 include:_spf.google.com ~all"];
        t["_spf.google.com"] = { TXT: ["v=spf1 ip4:192.0.2.0/24 ~all"] };
      },
      problem: /`~all` at acme-.* ends the evaluation before include:_spf\.mx\.cloudflare\.net/,
    },
    {
      name: "-all before our include",
      reason: "spf_failed",
      edit: (t, d) => ((t[d] as { TXT: string[] }).TXT = ["v=spf1 -all include:_spf.mx.cloudflare.net"]),
      problem: /`-all` at .* ends the evaluation/,
    },
    {
      name: "two SPF records",
      reason: "spf_failed",
      edit: (t, d) => (t[d] as { TXT: string[] }).TXT.push("v=spf1 -all"),
      problem: /more than one/,
    },
    {
      name: "SPF +all",
      reason: "spf_failed",
      edit: (t, d) => ((t[d] as { TXT: string[] }).TXT = ["v=spf1 include:_spf.mx.cloudflare.net +all"]),
      problem: /authorises every server/,
    },
    {
      name: "no DKIM key",
      reason: "dkim_failed",
      edit: (t, d) => delete t[`default._domainkey.${d}`],
      problem: /no DKIM key/,
    },
    {
      name: "another DKIM key",
      reason: "dkim_failed",
      edit: (t, d) =>
        ((t[`default._domainkey.${d}`] as { TXT: string[] }).TXT = [
          "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwrong",
        ]),
      problem: /not the key we sign with/,
    },
    {
      name: "revoked DKIM key",
      reason: "dkim_failed",
      edit: (t, d) => ((t[`default._domainkey.${d}`] as { TXT: string[] }).TXT = ["v=DKIM1; k=rsa; p="]),
      problem: /revoked/,
    },
    { name: "no DMARC record", reason: "dmarc_failed", edit: (t, d) => delete t[`_dmarc.${d}`], problem: /no DMARC/ },
    {
      name: "DMARC without a policy",
      reason: "dmarc_failed",
      edit: (t, d) => ((t[`_dmarc.${d}`] as { TXT: string[] }).TXT = ["v=DMARC1; rua=mailto:x@example.org"]),
      problem: /no valid p=/,
    },
  ];

  it("each DNS failure blocks with its reason (422, audited, message.blocked event), stores and sends nothing", async () => {
    const a = await verifiedSender();
    for (const f of failures) {
      useDns(published(a.records, (t) => f.edit(t, a.name)));
      const res = await call("POST", `/v1/inboxes/${a.sender.id}/messages`, {
        key: a.key,
        body: { to: [unique("gate-")], subject: `gate: ${f.name}`, body_text: "x" },
      });
      const err = expectError(res, 422, "send_blocked");
      expect(err.details, f.name).toMatchObject({
        reason: f.reason,
        domain: a.name,
        expected: expect.any(String),
        problem: expect.stringMatching(f.problem),
      });
      expect(err.details).toHaveProperty("found");
    }
    expect(await messageCount(a.sender.id)).toBe(0);
    const audits = await auditEntries({ accountId: a.account.id, action: "message.send_blocked" });
    expect(audits.map((x) => x.metadata.details.reason)).toEqual(failures.map((f) => f.reason));
    expect(audits[1]?.metadata.details.found).toEqual(["v=spf1 include:_spf.google.com ~all"]);
    const events = await eventsOf(a.account.id, "message.blocked");
    expect(events.map((e) => e.data.reason)).toEqual(failures.map((f) => f.reason));
    expect(events[0]?.data).toMatchObject({
      inbox_id: a.sender.id,
      message_id: null,
      stage: "accept",
      subject: "gate: no SPF record",
    });
    expect(audits[0]?.metadata.event_id).toBe(events[0]?.id);

    // SPF reached through a nested include passes; the fixed record set passes.
    useDns(
      published(a.records, (t) => {
        (t[a.name] as { TXT: string[] }).TXT = ["v=spf1 include:spf.corp.example -all"];
        t["spf.corp.example"] = { TXT: ["v=spf1 include:_spf.mx.cloudflare.net ~all"] };
      }),
    );
    const nested = await call("POST", `/v1/inboxes/${a.sender.id}/messages`, {
      key: a.key,
      body: { to: [unique("nested-")], subject: "nested", body_text: "x" },
    });
    expect(nested.status, nested.text).toBe(202);
  });

  it("a temporary DNS failure never lets a send through: 503 at the API, a retry at the consumer", async () => {
    const a = await verifiedSender();
    for (const broken of [a.name, `default._domainkey.${a.name}`, `_dmarc.${a.name}`]) {
      useDns(published(a.records, (t) => (t[broken] = "temporary_failure")));
      const res = await call("POST", `/v1/inboxes/${a.sender.id}/messages`, {
        key: a.key,
        body: { to: [unique("temp-dns-")], subject: "dns down", body_text: "x" },
      });
      const err = expectError(res, 503, "dns_unavailable");
      expect(res.headers.get("Retry-After")).toBe("30");
      expect(err.details.domain).toBe(a.name);
    }
    // A temporary failure in an include evaluated before ours decides nothing either.
    useDns(
      published(a.records, (t) => {
        (t[a.name] as { TXT: string[] }).TXT = ["v=spf1 include:spf.flaky.example include:_spf.mx.cloudflare.net -all"];
        t["spf.flaky.example"] = "temporary_failure";
      }),
    );
    const nested = await call("POST", `/v1/inboxes/${a.sender.id}/messages`, {
      key: a.key,
      body: { to: [unique("temp-dns-")], subject: "dns down", body_text: "x" },
    });
    expect(expectError(nested, 503, "dns_unavailable").details.checks.spf).toMatch(/spf\.flaky\.example/);
    expect(await messageCount(a.sender.id)).toBe(0);
    const refused = await auditEntries({ accountId: a.account.id, action: "message.send_refused" });
    expect(refused.map((r) => r.metadata.reason)).toEqual([
      "dns_unavailable",
      "dns_unavailable",
      "dns_unavailable",
      "dns_unavailable",
    ]);
    expect(await eventsOf(a.account.id, "message.blocked")).toHaveLength(0);

    // Accepted while DNS was fine (queue left out, so the test drives the consumer) …
    useDns(published(a.records));
    const ctx = serviceContext(a.account.id, { actor: { type: "api_key", id: null }, unqueued: true });
    const to = unique("deferred-");
    const queued = await sendMessage(
      ctx,
      a.sender.id,
      SendMessageInput.parse({ to: [to], subject: "later", body_text: "x" }),
    );
    // … then DNS fails before it leaves: retried later, nothing sent.
    useDns(published(a.records, (t) => (t[`_dmarc.${a.name}`] = "temporary_failure")));
    const job = { v: 1 as const, message_id: queued.id, account_id: a.account.id };
    const outcome = await deliverOutbound(jobContext(), job);
    expect(outcome).toMatchObject({ kind: "retry", delaySeconds: expect.any(Number) });
    const row = await env.DB.prepare("SELECT status, last_error FROM messages WHERE id = ?")
      .bind(queued.id)
      .first<{ status: string; last_error: string }>();
    expect(row?.status).toBe("queued");
    expect(row?.last_error).toMatch(/could not be looked up/);
    const smtp = await (await fetch(`${inject("smtpControlUrl")}/messages?rcpt=${to}`)).json();
    expect(smtp).toEqual([]);

    // The records change before the retry: the consumer blocks it, with the event naming the message.
    useDns(published(a.records, (t) => delete t[`_dmarc.${a.name}`]));
    expect(await deliverOutbound(jobContext({ at: Date.now() + 6 * 60_000 }), job)).toEqual({
      kind: "done",
      status: "blocked",
    });
    const [blocked] = await eventsOf(a.account.id, "message.blocked");
    expect(blocked?.message_id).toBe(queued.id);
    expect(blocked?.data).toMatchObject({ reason: "dmarc_failed", stage: "deliver", message_id: queued.id });
    const audit = (await auditEntries({ accountId: a.account.id, action: "message.send_blocked" })).at(-1);
    expect(audit?.metadata.details.reason).toBe("dmarc_failed");
    expect(await (await fetch(`${inject("smtpControlUrl")}/messages?rcpt=${to}`)).json()).toEqual([]);
  });

  it("MAIL_DOMAIN is gated too: in production it must publish SPF, our DKIM key and DMARC", async () => {
    const a = await createAccount("prod-shared");
    const inbox = await env.DB.prepare("SELECT * FROM inboxes WHERE id = ?").bind(a.inbox.id).first();
    const prodCtx = serviceContext(a.account.id, { vars: { ENVIRONMENT: "production" } });
    const row = {
      ...(inbox as Record<string, unknown>),
      accountId: a.account.id,
      domain: "mailbot.test",
    } as unknown as Parameters<typeof enforceSenderAuth>[1];
    useDns({});
    await expect(enforceSenderAuth(prodCtx, row)).rejects.toMatchObject({
      code: "send_blocked",
      details: { reason: "spf_failed" },
    });
    const key = await sharedDomainKey(env);
    useDns({
      "mailbot.test": { TXT: ["v=spf1 include:_spf.mx.cloudflare.net -all"] },
      "default._domainkey.mailbot.test": { TXT: [`v=DKIM1; k=rsa; p=${key?.publicKey}`] },
      "_dmarc.mailbot.test": { TXT: ["v=DMARC1; p=reject"] },
    });
    await expect(enforceSenderAuth(prodCtx, row)).resolves.toBeUndefined();
  });

  it("fails closed in any ENVIRONMENT but exactly development: real DNS, no ephemeral DKIM key", async () => {
    const a = await createAccount("staging-shared");
    const inbox = await env.DB.prepare("SELECT * FROM inboxes WHERE id = ?").bind(a.inbox.id).first();
    const row = {
      ...(inbox as Record<string, unknown>),
      accountId: a.account.id,
      domain: "mailbot.test",
    } as unknown as Parameters<typeof enforceSenderAuth>[1];
    const ctxIn = (environment: string) => serviceContext(a.account.id, { vars: { ENVIRONMENT: environment } });
    useDns({});
    // Development (this suite's setting) answers MAIL_DOMAIN from configuration …
    await expect(enforceSenderAuth(ctxIn("development"), row)).resolves.toBeUndefined();
    // … nothing else does, however close the name.
    for (const environment of ["staging", "test", "Development", "development "]) {
      await expect(enforceSenderAuth(ctxIn(environment), row), environment).rejects.toMatchObject({
        code: "send_blocked",
        details: { reason: "spf_failed", found: null },
      });
    }
    const noSecret = { ...env, DKIM_PRIVATE_KEY: undefined };
    expect(await sharedDomainKey({ ...noSecret, ENVIRONMENT: "staging" })).toBeNull();
    expect(await sharedDomainKey({ ...noSecret, ENVIRONMENT: "production" })).toBeNull();
    expect((await sharedDomainKey({ ...noSecret, ENVIRONMENT: "development" }))?.publicKey).toMatch(/^MIIBIjAN/);
  });
});

describe("compliance endpoints", () => {
  it("check and readiness expose the gate's logic, per account", async () => {
    const a = await verifiedSender();
    useDns(published(a.records, (t) => delete (t[a.name] as { MX?: string[] }).MX));
    const check = await call("GET", `/v1/compliance/check?domain=${a.name.toUpperCase()}`, { key: a.key });
    expect(check.status, check.text).toBe(200);
    expect(check.body.data).toMatchObject({
      domain: a.name,
      spf: { status: "pass", found: ["v=spf1 include:_spf.mx.cloudflare.net ~all"] },
      dkim: { status: "pass" },
      dmarc: { status: "pass" },
      mx: { status: "missing", found: null, expected: expect.stringContaining("route1.mx.cloudflare.net") },
      send_allowed: true,
    });
    const ready = await call("GET", `/v1/compliance/readiness/${a.sender.id}`, { key: a.key });
    expect(ready.body.data).toMatchObject({ inbox_id: a.sender.id, score: 90, send_allowed: true });
    expect(ready.body.data.checks.find((c: { name: string }) => c.name === "mx")).toMatchObject({
      passed: false,
      points: 0,
    });

    useDns(published(a.records, (t) => delete t[`_dmarc.${a.name}`]));
    const noDmarc = await call("GET", `/v1/compliance/readiness/${a.sender.id}`, { key: a.key });
    expect(noDmarc.body.data).toMatchObject({ score: 70, send_allowed: false });
    const shared = await call("GET", "/v1/compliance/check?domain=mailbot.test", { key: a.key });
    expect(shared.body.data).toMatchObject({ send_allowed: true, dkim: { status: "pass" } });

    expectError(await call("GET", "/v1/compliance/check?domain=unknown.example", { key: a.key }), 404, "not_found");
    expectError(await call("GET", "/v1/compliance/check", { key: a.key }), 422, "validation_error");
    const b = await createAccount("other");
    expectError(await call("GET", `/v1/compliance/readiness/${a.sender.id}`, { key: b.key }), 404, "not_found");
  });
});

describe("phishing-style content", () => {
  it("is blocked with the signals that fired (422, audited, event); ordinary mail passes", async () => {
    const a = await createAccount("phish");
    const res = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: {
        to: ["victim@example.org"],
        subject: "Your account has been suspended",
        body_html:
          '<p>Verify your account within 24 hours:</p><a href="http://paypa1-secure.com/login">https://www.paypal.com/signin</a>',
      },
    });
    const err = expectError(res, 422, "send_blocked");
    expect(err.details).toMatchObject({ reason: "phishing_suspected", threshold: 50, score: expect.any(Number) });
    const names = err.details.signals.map((s: { name: string }) => s.name);
    expect(names).toEqual(
      expect.arrayContaining(["deceptive_anchor", "brand_lookalike_host", "credential_request_with_link"]),
    );
    expect(err.details.signals[0]).toMatchObject({ weight: expect.any(Number), evidence: expect.any(String) });
    expect(await messageCount(a.inbox.id)).toBe(0);
    const [audit] = await auditEntries({ accountId: a.account.id, action: "message.send_blocked" });
    expect(audit?.metadata.details.signals.length).toBe(names.length);
    expect((await eventsOf(a.account.id, "message.blocked"))[0]?.data.reason).toBe("phishing_suspected");

    const attachment = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: {
        to: ["victim@example.org"],
        subject: "Invoice",
        body_text: "See attached.",
        attachments: [{ filename: "invoice.pdf.exe", content: btoa("MZ"), content_type: "application/octet-stream" }],
      },
    });
    expect(expectError(attachment, 422, "send_blocked").details.signals[0].name).toBe("double_extension_attachment");

    const fine = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: {
        to: ["client@example.org"],
        subject: "Invoice INV-7",
        body_text: "Invoice attached: https://billing.example.com/inv/7",
      },
    });
    expect(fine.status, fine.text).toBe(202);
  });

  it("the same body sprayed to many new recipients adds a signal that tips a borderline message over", async () => {
    const a = await createAccount("spray");
    await liftLimit(a.account.id);
    const body = { subject: "Quick question", body_text: "Have a look at our offer: https://bit.ly/offer-42" };
    const batch = (n: number, tag: string) => Array.from({ length: n }, (_, i) => `${tag}${i}@example.net`);
    // Someone who has written to the account before is not a new recipient.
    await deliver(
      mail({ to: a.inbox.address, from: "friend@example.net", subject: "hello" }),
      a.inbox.address,
      "friend@example.net",
    );
    const first = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { ...body, to: [...batch(20, "a"), "friend@example.net"] },
    });
    expect(first.status, first.text).toBe(202);
    const fp = await env.DB.prepare("SELECT new_recipients FROM send_fingerprints WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ new_recipients: string }>();
    expect(JSON.parse(fp?.new_recipients ?? "[]")).toHaveLength(20);

    const second = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { ...body, to: batch(10, "b") },
    });
    const err = expectError(second, 422, "send_blocked");
    expect(err.details.signals.map((s: { name: string }) => s.name).sort()).toEqual([
      "same_body_sprayed",
      "url_shortener",
    ]);
    // Another body to the same people is not a spray.
    const other = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { subject: "Different", body_text: "A different note, https://bit.ly/other", to: batch(10, "b") },
    });
    expect(other.status, other.text).toBe(202);
  });

  it("the known-sender lookup of every send uses the partial index on lower(from_address)", async () => {
    const a = await createAccount("plan");
    const query = KNOWN_SENDERS.statement({
      accountId: a.account.id,
      addresses: JSON.stringify(["x@example.net", "y@example.net"]),
    });
    const plan = await env.DB.prepare(`EXPLAIN QUERY PLAN ${query.sql}`)
      .bind(...query.params)
      .all<{ detail: string }>();
    const details = plan.results.map((r) => r.detail).join("\n");
    expect(details).toMatch(/USING (COVERING )?INDEX messages_account_inbound_from_idx/);
    expect(details).not.toMatch(/SCAN messages/);
    // And it answers: a sender that wrote in (any case) is known, an outbound recipient is not.
    await deliver(
      mail({ to: a.inbox.address, from: "Known@Example.net", subject: "hi" }),
      a.inbox.address,
      "Known@Example.net",
    );
    const rows = await KNOWN_SENDERS.all(createDb(env.DB), {
      accountId: a.account.id,
      addresses: JSON.stringify(["known@example.net", "new@example.net"]),
    });
    expect(rows.map((r) => r.a)).toEqual(["known@example.net"]);
  });

  it("old send fingerprints are swept by scheduled(), not on the send path", async () => {
    const a = await createAccount("sweep");
    const old = Date.now() - 25 * 3_600_000;
    await env.DB.prepare(
      "INSERT INTO send_fingerprints (id, account_id, body_hash, new_recipients, created_at) VALUES ('sfp_old', ?, 'h', '[]', ?), ('sfp_recent', ?, 'h', '[]', ?)",
    )
      .bind(a.account.id, old, a.account.id, Date.now() - 3_600_000)
      .run();
    const ids = async () =>
      (
        await env.DB.prepare("SELECT id FROM send_fingerprints WHERE account_id = ? ORDER BY id")
          .bind(a.account.id)
          .all<{ id: string }>()
      ).results.map((r) => r.id);
    // A send to a new recipient records its fingerprint and leaves the old row alone.
    const sent = await call("POST", `/v1/inboxes/${a.inbox.id}/messages`, {
      key: a.key,
      body: { to: [unique("fp-")], subject: "hello", body_text: "A plain note." },
    });
    expect(sent.status, sent.text).toBe(202);
    expect(await ids()).toHaveLength(3);
    expect(await ids()).toContain("sfp_old");
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ scheduledTime: Date.now(), cron: "*/5 * * * *" }), env, ctx);
    await waitOnExecutionContext(ctx);
    const left = await ids();
    expect(left).toHaveLength(2);
    expect(left).not.toContain("sfp_old");
    expect(left).toContain("sfp_recent");
    const plan = await env.DB.prepare("EXPLAIN QUERY PLAN DELETE FROM send_fingerprints WHERE created_at < ?")
      .bind(old)
      .all<{ detail: string }>();
    expect(plan.results.map((r) => r.detail).join("\n")).toMatch(/INDEX send_fingerprints_created_idx/);
  });

  it("the signer and the transport read OUTBOUND_TRANSPORT alike: `smtp ` is signed SMTP", async () => {
    const a = await createAccount("transport-name");
    const inbox = await createDb(env.DB).select().from(inboxes).where(eq(inboxes.id, a.inbox.id)).get();
    if (!inbox) throw new Error("no inbox");
    const raw = new TextEncoder().encode(`From: ${a.inbox.address}\r\nSubject: hi\r\n\r\nbody\r\n`);
    const ctxWith = (transport: string | undefined) =>
      serviceContext(a.account.id, { vars: { OUTBOUND_TRANSPORT: transport } });
    const head = async (transport: string | undefined) =>
      new TextDecoder().decode((await signOutbound(ctxWith(transport), inbox, raw)).subarray(0, 15));
    for (const t of ["smtp", "smtp ", " smtp\t"]) {
      expect(transportName({ ENVIRONMENT: "development", OUTBOUND_TRANSPORT: t })).toBe("smtp");
      expect(selectTransport({ ...env, OUTBOUND_TRANSPORT: t }).name, JSON.stringify(t)).toBe("smtp");
      expect(await head(t), JSON.stringify(t)).toBe("DKIM-Signature:");
    }
    expect(await head("dev")).toMatch(/^From: /);
    expect(await head(undefined)).toMatch(/^From: /);
    expect(transportName({ ENVIRONMENT: "production", OUTBOUND_TRANSPORT: undefined })).toBe("cloudflare");
  });
});
