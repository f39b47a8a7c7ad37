import { env } from "cloudflare:workers";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { afterAll, describe, expect, inject, it, vi } from "vitest";
import { inboxCounter } from "../../src/durable-objects/inbox-counter.client";
import { type DnsType, setDnsResolver, staticResolver } from "../../src/lib/dns";
import { createAccount, createKey } from "../helpers/accounts";
import { call } from "../helpers/api";
import { auditEntries, liftLimit, messageRow, unique } from "../helpers/db";
import { deliver, mail } from "../helpers/mail";
import { closeMcpClients, connect, tool, workerFetch } from "../helpers/mcp";
import { receiver } from "../helpers/webhooks";

const TOOL_NAMES = [
  "create_inbox",
  "list_inboxes",
  "get_inbox",
  "send_message",
  "list_messages",
  "get_message",
  "reply_to_message",
  "forward_message",
  "search_messages",
  "wait_for_message",
  "list_threads",
  "get_thread",
  "replay_event",
  "get_usage",
  "add_domain",
  "verify_domain",
  "list_domains",
  "check_compliance",
  "list_audit_log",
];

afterAll(closeMcpClients);

async function ok(client: Client, name: string, args: Record<string, unknown>) {
  const r = await tool(client, name, args);
  expect(r.isError, r.text).toBe(false);
  return r.data;
}

async function fails(client: Client, name: string, args: Record<string, unknown>, code: string) {
  const r = await tool(client, name, args);
  expect(r.isError, r.text).toBe(true);
  expect(r.data.error).toMatchObject({ code, message: expect.any(String), request_id: expect.stringMatching(/^req_/) });
  return r;
}

/** The audit entries of one target: who did what. */
async function auditOf(targetId: string) {
  return (await auditEntries({ targetId })).map(({ action, actor_type, actor_id }) => ({
    action,
    actor_type,
    actor_id,
  }));
}

async function keyId(accountId: string): Promise<string> {
  const row = await env.DB.prepare("SELECT id FROM api_keys WHERE account_id = ? ORDER BY id LIMIT 1")
    .bind(accountId)
    .first<{ id: string }>();
  return row?.id ?? "";
}

/** An account with one inbound message delivered through the email handler, found by wait_for_message. */
async function accountWithMail(client?: Client) {
  const a = await createAccount("mcp");
  const mcp = client ?? (await connect(a.key));
  const sender = unique("ana");
  const waiting = ok(mcp, "wait_for_message", { inbox_id: a.inbox.id, from_address: sender, timeout_ms: 20_000 });
  // The wait is polling before the mail exists: it must pick it up when it lands.
  await new Promise((r) => setTimeout(r, 300));
  await deliver(
    mail({
      from: `Ana <${sender}>`,
      to: a.inbox.address,
      subject: "Zebra invoice 42",
      body: "Could you resend the zebra invoice?\r\n",
    }),
    a.inbox.address,
    sender,
  );
  const inbound = await waiting;
  return { ...a, mcp, sender, inbound };
}

describe("MCP server at /mcp", () => {
  it("lists every tool with its input schema and the untrusted-content warning", async () => {
    const a = await createAccount("mcp");
    const client = await connect(a.key);
    expect(client.getServerVersion()?.name).toBe("mailbot");
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual(TOOL_NAMES);
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    for (const t of tools) {
      expect(t.inputSchema.type).toBe("object");
      expect(t.description).toMatch(/untrusted/i);
    }
    const send = byName.send_message?.inputSchema;
    expect(send?.required?.sort()).toEqual(["inbox_id", "subject", "to"]);
    expect(Object.keys(send?.properties ?? {})).toEqual(
      expect.arrayContaining([
        "to",
        "cc",
        "bcc",
        "subject",
        "body_text",
        "body_html",
        "attachments",
        "idempotency_key",
      ]),
    );
    expect(send).toMatchObject({ additionalProperties: false });
    expect(byName.reply_to_message?.inputSchema.required).toEqual(["message_id"]);
    expect(byName.reply_to_message?.inputSchema.properties).toHaveProperty("idempotency_key");
    expect(byName.forward_message?.inputSchema.required?.sort()).toEqual(["message_id", "to"]);
    expect(byName.search_messages?.inputSchema.required?.sort()).toEqual(["inbox_id", "query"]);
    expect(byName.wait_for_message?.inputSchema.properties).toMatchObject({
      timeout_ms: { maximum: 30000, minimum: 0 },
      direction: { enum: ["inbound", "outbound"] },
      from_address: { type: "string" },
      subject_contains: { type: "string" },
      since: { type: "string" },
    });
    expect(byName.get_thread?.inputSchema.required?.sort()).toEqual(["inbox_id", "thread_id"]);
    expect(byName.replay_event?.inputSchema.required).toEqual(["event_id"]);
    expect(byName.list_audit_log?.inputSchema.properties).toHaveProperty("action");
    expect(byName.get_message?.annotations).toMatchObject({ readOnlyHint: true });
    expect(byName.send_message?.annotations).toMatchObject({ readOnlyHint: false, openWorldHint: true });
  });

  it("finds an inbound message (wait, list, search, get, threads) and replies in its thread as actor mcp", async () => {
    const { mcp, inbox, account, key, sender, inbound } = await accountWithMail();
    expect(inbound).toMatchObject({
      inbox_id: inbox.id,
      direction: "inbound",
      from_address: sender,
      subject: "Zebra invoice 42",
    });
    // Tools give the safe view by default (issue 20): safe_text, no raw bodies.
    expect(inbound.safe_text).toContain("zebra invoice");
    expect(inbound.body_text).toBeNull();
    expect(inbound.screening).toMatchObject({ verdict: "clean" });

    const listed = await ok(mcp, "list_messages", { inbox_id: inbox.id, direction: "inbound" });
    expect(listed.items.map((m: { id: string }) => m.id)).toEqual([inbound.id]);
    expect(listed.next_cursor).toBeNull();
    const found = await ok(mcp, "search_messages", { inbox_id: inbox.id, query: "zebra" });
    expect(found.items.map((m: { id: string }) => m.id)).toEqual([inbound.id]);
    expect((await ok(mcp, "search_messages", { inbox_id: inbox.id, query: "giraffe" })).items).toEqual([]);
    const got = await ok(mcp, "get_message", { inbox_id: inbox.id, message_id: inbound.id });
    expect(got).toEqual(inbound);
    // With raw: true, the HTTP API returns the very same object in `data`.
    const rawGot = await ok(mcp, "get_message", { inbox_id: inbox.id, message_id: inbound.id, raw: true });
    expect(rawGot.body_text).toContain("zebra invoice");
    const http = await call("GET", `/v1/inboxes/${inbox.id}/messages/${inbound.id}`, { key: key });
    expect(http.body.data).toEqual(rawGot);

    const threads = await ok(mcp, "list_threads", { inbox_id: inbox.id });
    expect(threads.items).toHaveLength(1);
    expect(threads.items[0]).toMatchObject({ id: inbound.thread_id, message_count: 1 });

    const reply = await ok(mcp, "reply_to_message", {
      message_id: inbound.id,
      body_text: "Here it is.",
      idempotency_key: "reply-1",
    });
    expect(reply).toMatchObject({
      direction: "outbound",
      status: "queued",
      thread_id: inbound.thread_id,
      in_reply_to: inbound.rfc_message_id,
      subject: "Re: Zebra invoice 42",
      to: [sender],
    });
    expect(reply.references).toContain(inbound.rfc_message_id);
    const row = await messageRow(reply.id);
    expect(row).toMatchObject({ direction: "outbound", thread_id: inbound.thread_id, account_id: account.id });
    const audit = await auditOf(reply.id);
    expect(audit.length).toBeGreaterThan(0);
    const mcpKeyId = await keyId(account.id);
    expect(audit[0]).toMatchObject({ action: "message.send_attempted", actor_type: "mcp", actor_id: mcpKeyId });

    // Same idempotency key and arguments: the first result, nothing sent twice.
    const again = await ok(mcp, "reply_to_message", {
      message_id: inbound.id,
      body_text: "Here it is.",
      idempotency_key: "reply-1",
    });
    expect(again.id).toBe(reply.id);
    const outbound = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ? AND direction = 'outbound'",
    )
      .bind(inbox.id)
      .first<{ n: number }>();
    expect(outbound?.n).toBe(1);
    await fails(
      mcp,
      "reply_to_message",
      { message_id: inbound.id, body_text: "Other text", idempotency_key: "reply-1" },
      "idempotency_key_reused",
    );

    const thread = await ok(mcp, "get_thread", { inbox_id: inbox.id, thread_id: inbound.thread_id });
    expect(thread.messages.map((m: { id: string }) => m.id)).toEqual([inbound.id, reply.id]);
    expect(thread.messages_truncated).toBe(false);

    // The queue consumer delivers the reply to the real SMTP server, threaded.
    await vi.waitFor(
      async () => {
        expect((await messageRow(reply.id))?.status).toBe("sent");
      },
      { timeout: 15_000, interval: 100 },
    );
    const res = await fetch(`${inject("smtpControlUrl")}/messages?rcpt=${encodeURIComponent(sender)}`);
    const received = (await res.json()) as { raw: string }[];
    expect(received).toHaveLength(1);
    expect(received[0]?.raw).toContain(`In-Reply-To: ${inbound.rfc_message_id}`);
  });

  it("creates inboxes, sends, forwards, replays an event and reads the audit log", async () => {
    const { mcp, inbox, account, key, inbound } = await accountWithMail();
    const created = await ok(mcp, "create_inbox", { username: "Agent.Desk", display_name: "Agent desk" });
    expect(created).toMatchObject({ username: "agent.desk", status: "active", display_name: "Agent desk" });
    expect(
      await env.DB.prepare("SELECT id FROM inboxes WHERE id = ? AND account_id = ?")
        .bind(created.id, account.id)
        .first(),
    ).not.toBeNull();
    expect(await auditOf(created.id)).toEqual([
      expect.objectContaining({ action: "inbox.created", actor_type: "mcp" }),
    ]);
    expect(await ok(mcp, "get_inbox", { inbox_id: created.id })).toEqual(created);
    const inboxes = await ok(mcp, "list_inboxes", { limit: 1 });
    expect(inboxes.items.map((i: { id: string }) => i.id)).toEqual([created.id]);
    expect(inboxes.next_cursor).toEqual(expect.any(String));
    const page2 = await ok(mcp, "list_inboxes", { limit: 1, cursor: inboxes.next_cursor });
    expect(page2.items.map((i: { id: string }) => i.id)).toEqual([inbox.id]);

    const to = unique("bob");
    const sent = await ok(mcp, "send_message", {
      inbox_id: created.id,
      to: [`Bob <${to}>`],
      subject: "Hello from an agent",
      body_text: "Hi Bob",
      idempotency_key: "send-1",
    });
    expect(sent).toMatchObject({ inbox_id: created.id, status: "queued", to: [to], subject: "Hello from an agent" });
    expect(await messageRow(sent.id)).toMatchObject({ direction: "outbound", inbox_id: created.id });
    // The same key over HTTP with the same body replays the tool's result: one store for both transports.
    const httpReplay = await call("POST", `/v1/inboxes/${created.id}/messages`, {
      key: key,
      headers: { "Idempotency-Key": "send-1" },
      body: { to: [`Bob <${to}>`], subject: "Hello from an agent", body_text: "Hi Bob" },
    });
    expect(httpReplay.status).toBe(202);
    expect(httpReplay.headers.get("Idempotent-Replayed")).toBe("true");
    expect(httpReplay.body.data.id).toBe(sent.id);

    const fwdTo = unique("carol");
    const forwarded = await ok(mcp, "forward_message", { message_id: inbound.id, to: [fwdTo], body_text: "FYI" });
    expect(forwarded).toMatchObject({ status: "queued", to: [fwdTo], thread_id: inbound.thread_id });
    expect(await auditOf(forwarded.id)).toContainEqual(expect.objectContaining({ actor_type: "mcp" }));

    // replay_event: the message.received event of the inbound mail, to a webhook on the test receiver.
    const hook = receiver();
    const webhook = await call("POST", "/v1/webhooks", {
      key: key,
      body: { url: hook.url, events: ["message.received"] },
    });
    expect(webhook.status, webhook.text).toBe(201);
    const events = await call("GET", "/v1/events?type=message.received", { key: key });
    const eventId = events.body.data[0].id as string;
    const replay = await ok(mcp, "replay_event", { event_id: eventId });
    expect(replay).toEqual({ event_id: eventId, webhook_ids: [webhook.body.data.id], target_url: null });
    const deliveries = await hook.waitFor((d) => d.some((x) => x.body.includes(eventId)));
    expect(deliveries.some((d) => JSON.parse(d.body).id === eventId)).toBe(true);

    // get_usage: the same object as GET /v1/usage for the same period, once the consumer has
    // finished with this account's sends (a send leaving between the two reads changes `sent`).
    await vi.waitFor(
      async () => {
        const pending = await env.DB.prepare(
          "SELECT COUNT(*) AS n FROM messages WHERE account_id = ? AND status IN ('queued', 'sending')",
        )
          .bind(account.id)
          .first<{ n: number }>();
        expect(pending?.n).toBe(0);
      },
      { timeout: 15_000, interval: 50 },
    );
    const period = {
      since: new Date(Date.now() - 3_600_000).toISOString(),
      until: new Date(Date.now() + 60_000).toISOString(),
    };
    const usage = await ok(mcp, "get_usage", period);
    const httpUsage = await call("GET", `/v1/usage?since=${period.since}&until=${period.until}`, { key: key });
    expect(usage).toEqual(httpUsage.body.data);
    expect(usage.received).toBeGreaterThanOrEqual(1);
    expect(usage.send_limit).toMatchObject({ limit: 10, window_hours: 24 });
    await fails(mcp, "get_usage", { since: period.until, until: period.since }, "validation_error");

    const log = await ok(mcp, "list_audit_log", { limit: 100 });
    const actions = log.items.map((e: { action: string; actor: { type: string } }) => `${e.actor.type}:${e.action}`);
    expect(actions).toEqual(expect.arrayContaining(["mcp:inbox.created", "mcp:message.send_attempted"]));
    const filtered = await ok(mcp, "list_audit_log", { action: "inbox.created", inbox_id: created.id });
    expect(filtered.items).toHaveLength(1);
    expect(filtered.items[0]).toMatchObject({ action: "inbox.created", actor: { type: "mcp" }, inbox_id: created.id });
  });

  it("domain and compliance tools: add, list, verify and check a domain; a policy block is an isError result", async () => {
    const a = await createAccount("mcp-domains");
    const mcp = await connect(a.key);
    const name = `agent-${crypto.randomUUID().slice(0, 6)}.example`;
    const added = await ok(mcp, "add_domain", { domain: name, idempotency_key: `dom-${name}` });
    expect(added).toMatchObject({ id: expect.stringMatching(/^dom_/), domain: name, status: "pending" });
    const purposes = new Set(added.dns_records.map((r: { purpose: string }) => r.purpose));
    expect(purposes).toEqual(new Set(["dkim", "dmarc", "mx", "spf"]));
    // The same key over HTTP replays the tool's answer: one domain row.
    const replay = await call("POST", "/v1/domains", {
      key: a.key,
      body: { domain: name },
      headers: { "Idempotency-Key": `dom-${name}` },
    });
    expect(replay.body.data.id).toBe(added.id);
    const listed = await ok(mcp, "list_domains", {});
    expect(listed.items.map((d: { id: string }) => d.id)).toEqual([added.id]);

    try {
      // Nothing published yet: verify leaves it pending, compliance shows what is missing.
      setDnsResolver(staticResolver({}));
      const pending = await ok(mcp, "verify_domain", { domain_id: added.id });
      expect(pending).toMatchObject({ status: expect.not.stringMatching(/^verified$/), spf_verified: false });
      const missing = await ok(mcp, "check_compliance", { domain: name });
      expect(missing).toMatchObject({ domain: name, send_allowed: false, spf: { status: "missing" } });

      // A temporary DNS failure is a retryable tool result, not a protocol error.
      setDnsResolver(staticResolver({ [name]: "temporary_failure" }));
      await fails(mcp, "verify_domain", { domain_id: added.id }, "dns_unavailable");

      // The records published as asked: verified, with the domain.verified event and an mcp audit entry.
      const table: Record<string, Partial<Record<DnsType, string[]>>> = {};
      for (const r of added.dns_records as { type: DnsType; name: string; value: string }[]) {
        const entry = table[r.name] ?? {};
        entry[r.type] = [...(entry[r.type] ?? []), r.value];
        table[r.name] = entry;
      }
      setDnsResolver(staticResolver(table));
      const verified = await ok(mcp, "verify_domain", { domain_id: added.id });
      expect(verified).toMatchObject({
        status: "verified",
        spf_verified: true,
        dkim_verified: true,
        dmarc_verified: true,
      });
      const passing = await ok(mcp, "check_compliance", { domain: name });
      expect(passing).toMatchObject({ send_allowed: true, spf: { status: "pass" }, dkim: { status: "pass" } });
      expect(await auditOf(added.id)).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ action: "domain.created", actor_type: "mcp" }),
          expect.objectContaining({ action: "domain.verified", actor_type: "mcp" }),
        ]),
      );
      const events = await env.DB.prepare("SELECT COUNT(*) AS n FROM events WHERE account_id = ? AND type = ?")
        .bind(a.account.id, "domain.verified")
        .first<{ n: number }>();
      expect(events?.n).toBe(1);
    } finally {
      setDnsResolver(staticResolver({}));
    }

    // Phishing-style content from the shared-domain inbox: send_blocked with the signals, nothing stored.
    const blocked = await fails(
      mcp,
      "send_message",
      {
        inbox_id: a.inbox.id,
        to: [unique("victim")],
        subject: "Your account has been suspended",
        body_html:
          '<p>Verify your account within 24 hours:</p><a href="http://paypa1-secure.com/login">https://www.paypal.com/signin</a>',
      },
      "send_blocked",
    );
    expect(blocked.data.error.details).toMatchObject({ reason: "phishing_suspected", signals: expect.any(Array) });
    const stored = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ? AND direction = 'outbound'",
    )
      .bind(a.inbox.id)
      .first<{ n: number }>();
    expect(stored?.n).toBe(0);
    const audit = await env.DB.prepare(
      "SELECT actor_type FROM audit_log WHERE account_id = ? AND action = 'message.send_blocked'",
    )
      .bind(a.account.id)
      .all<{ actor_type: string }>();
    expect(audit.results.map((r) => r.actor_type)).toEqual(["mcp"]);
  });

  it("maps errors: what the agent can fix is an isError result with the API's code; auth failures are protocol errors", async () => {
    const { mcp, inbox, account, key, inbound } = await accountWithMail();
    const invalid = await fails(
      mcp,
      "send_message",
      { inbox_id: inbox.id, to: ["not an address"], body_text: "x" },
      "validation_error",
    );
    const paths = invalid.data.error.details.map((d: { path: string }) => d.path);
    expect(paths).toEqual(expect.arrayContaining(["to.0", "subject"]));
    await fails(
      mcp,
      "send_message",
      { inbox_id: inbox.id, to: ["a@example.org"], subject: "s", body_text: "x", admin: true },
      "validation_error",
    );
    await fails(mcp, "get_message", { inbox_id: inbox.id, message_id: "msg_00000000000000000000000000" }, "not_found");
    await fails(mcp, "wait_for_message", { inbox_id: inbox.id, timeout_ms: 0 }, "wait_timeout");
    await fails(mcp, "list_inboxes", { cursor: "garbage!!" }, "invalid_cursor");

    // A blocked send: the inbox is deactivated; nothing is stored or queued, the refusal is audited.
    const off = await call("DELETE", `/v1/inboxes/${inbox.id}`, { key: key });
    expect(off.status).toBe(200);
    const before = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?")
      .bind(inbox.id)
      .first<{ n: number }>();
    const blocked = await fails(
      mcp,
      "send_message",
      { inbox_id: inbox.id, to: [unique("dan")], subject: "Hi", body_text: "x" },
      "inbox_disabled",
    );
    expect(blocked.text).toContain("inbox_disabled");
    await fails(mcp, "reply_to_message", { message_id: inbound.id, body_text: "x" }, "inbox_disabled");
    const after = await env.DB.prepare("SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ?")
      .bind(inbox.id)
      .first<{ n: number }>();
    expect(after?.n).toBe(before?.n);
    const refusals = await env.DB.prepare(
      "SELECT actor_type FROM audit_log WHERE account_id = ? AND action IN ('message.send_blocked', 'message.send_refused')",
    )
      .bind(account.id)
      .all<{ actor_type: string }>();
    expect(refusals.results.length).toBeGreaterThanOrEqual(1);
    expect(refusals.results.every((r) => r.actor_type === "mcp")).toBe(true);

    // A read-only key: reading works, sending is refused as a protocol error (not a tool result).
    const reader = await call("POST", "/v1/api-keys", { key: key, body: { name: "reader", scopes: ["read"] } });
    const readOnly = await connect(reader.body.data.key);
    await ok(readOnly, "list_messages", { inbox_id: inbox.id });
    await expect(
      readOnly.callTool({
        name: "send_message",
        arguments: { inbox_id: inbox.id, to: ["a@example.org"], subject: "s", body_text: "x" },
      }),
    ).rejects.toMatchObject({ code: -32600, data: { code: "insufficient_scope" } });
    await expect(readOnly.callTool({ name: "drop_database", arguments: {} })).rejects.toMatchObject({ code: -32602 });
  });

  it("speaks HTTP like the API: 401 without a key, 405 for GET, rate-limit headers on answers", async () => {
    const initialize = {
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "curl", version: "1" } },
    };
    const headers = { "Content-Type": "application/json", Accept: "application/json, text/event-stream" };
    const anonymous = await call("POST", "/mcp", { body: initialize, headers });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe("missing_api_key");
    const bad = await call("POST", "/mcp", {
      key: "mb_notavalidkey000000000000000000000000",
      body: initialize,
      headers,
    });
    expect(bad.status).toBe(401);
    const a = await createAccount("mcp");
    const res = await call("POST", "/mcp", { key: a.key, body: initialize, headers });
    expect(res.status, res.text).toBe(200);
    expect(res.body.result.serverInfo.name).toBe("mailbot");
    expect(res.headers.get("X-RateLimit-Limit")).toEqual(expect.any(String));
    expect(res.headers.get("X-Request-Id")).toMatch(/^req_/);
    const get = await call("GET", "/mcp", { key: a.key });
    expect(get.status).toBe(405);
    expect(get.headers.get("Allow")).toBe("POST");
    expect((await call("DELETE", "/mcp", { key: a.key })).status).toBe(405);
    // A notification has no answer: 202 and no body.
    const note = await call("POST", "/mcp", {
      key: a.key,
      body: { jsonrpc: "2.0", method: "notifications/initialized" },
      headers,
    });
    expect(note.status).toBe(202);
    // A client that cannot read JSON answers is refused by the transport.
    const noAccept = await call("POST", "/mcp", { key: a.key, body: initialize });
    expect(noAccept.status).toBe(406);
    // Batches would run many tool calls on one rate-limit token: refused before any runs.
    const listCall = (id: number) => ({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name: "list_inboxes", arguments: {} },
    });
    const batch = await call("POST", "/mcp", { key: a.key, body: [listCall(1), listCall(2)], headers });
    expect(batch.status).toBe(400);
    expect(batch.body.error.code).toBe(-32600);
    const garbage = await call("POST", "/mcp", {
      key: a.key,
      rawBody: "{not json",
      headers: { ...headers, "Content-Type": "application/json" },
    });
    expect(garbage.status).toBe(400);
    expect(garbage.body.error.code).toBe(-32700);
  });

  it("tenancy: another account's key cannot see or touch A's inboxes through any tool", async () => {
    const a = await accountWithMail();
    const event = await call("GET", "/v1/events?type=message.received", { key: a.key });
    const eventId = event.body.data[0].id as string;
    const domain = await call("POST", "/v1/domains", {
      key: a.key,
      body: { domain: `tenant-${crypto.randomUUID().slice(0, 6)}.example` },
    });
    expect(domain.status, domain.text).toBe(201);
    const b = await createAccount("intruder");
    const intruder = await connect(b.key);
    const ids = {
      inbox_id: a.inbox.id,
      message_id: a.inbound.id,
      thread_id: a.inbound.thread_id,
      event_id: eventId,
      domain_id: domain.body.data.id as string,
    };
    const attempts: Record<string, Record<string, unknown>> = {
      get_inbox: { inbox_id: ids.inbox_id },
      send_message: { inbox_id: ids.inbox_id, to: [unique("x")], subject: "hijack", body_text: "x" },
      list_messages: { inbox_id: ids.inbox_id },
      get_message: { inbox_id: ids.inbox_id, message_id: ids.message_id },
      reply_to_message: { message_id: ids.message_id, body_text: "hijack" },
      forward_message: { message_id: ids.message_id, to: [unique("x")] },
      search_messages: { inbox_id: ids.inbox_id, query: "zebra" },
      wait_for_message: { inbox_id: ids.inbox_id, timeout_ms: 0 },
      list_threads: { inbox_id: ids.inbox_id },
      get_thread: { inbox_id: ids.inbox_id, thread_id: ids.thread_id },
      replay_event: { event_id: ids.event_id },
      verify_domain: { domain_id: ids.domain_id },
    };
    const { tools } = await intruder.listTools();
    // Every tool with a required *_id argument must be tried here: a new tool (or a new id kind,
    // such as domain_id) fails this test until it is added to `ids` and `attempts`.
    const withIds = tools.filter((t) => (t.inputSchema.required ?? []).some((p) => p.endsWith("_id")));
    expect(withIds.map((t) => t.name).sort()).toEqual(Object.keys(attempts).sort());
    for (const t of withIds) {
      for (const p of (t.inputSchema.required ?? []).filter((r) => r.endsWith("_id"))) expect(ids).toHaveProperty(p);
    }
    const secrets = [...Object.values(ids), a.inbox.address, a.sender, "zebra", domain.body.data.domain];
    // check_compliance takes a domain name, not an id: A's domain is not found for B either.
    await fails(intruder, "check_compliance", { domain: domain.body.data.domain }, "not_found");
    for (const [name, args] of Object.entries(attempts)) {
      const r = await fails(intruder, name, args, "not_found");
      for (const s of secrets) expect(r.text, `${name} leaked ${s}`).not.toContain(s);
    }
    // Lists of B's own account never include A's data, even when filtered by A's inbox.
    const lists = [
      await tool(intruder, "list_inboxes", {}),
      await tool(intruder, "list_domains", {}),
      await tool(intruder, "list_audit_log", { limit: 100 }),
      await tool(intruder, "list_audit_log", { inbox_id: ids.inbox_id }),
    ];
    for (const l of lists) for (const s of secrets) expect(l.text).not.toContain(s);
    expect(lists[3]?.data.items).toEqual([]);
    expect(lists[1]?.data.items).toEqual([]);
    // Nothing was written to A's inbox.
    const outbound = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ? AND direction = 'outbound'",
    )
      .bind(a.inbox.id)
      .first<{ n: number }>();
    expect(outbound?.n).toBe(0);
  });

  it("a restricted key only reaches its own inboxes", async () => {
    const a = await accountWithMail();
    const second = await ok(a.mcp, "create_inbox", { username: "second" });
    await deliver(mail({ to: second.address, subject: "Second inbox mail" }), second.address);
    const created = await createKey(a, { name: "only-second", inbox_ids: [second.id] });
    const restricted = await connect(created.key);
    expect((await ok(restricted, "list_inboxes", {})).items.map((i: { id: string }) => i.id)).toEqual([second.id]);
    expect((await ok(restricted, "list_messages", { inbox_id: second.id })).items).toHaveLength(1);
    // Every tool that names an inbox, message, thread or event of the other inbox: not found.
    const event = await call("GET", `/v1/events?type=message.received&inbox_id=${a.inbox.id}`, { key: a.key });
    const eventId = event.body.data[0].id as string;
    const outside: Record<string, Record<string, unknown>> = {
      get_inbox: { inbox_id: a.inbox.id },
      send_message: { inbox_id: a.inbox.id, to: [unique("x")], subject: "s", body_text: "x" },
      list_messages: { inbox_id: a.inbox.id },
      get_message: { inbox_id: a.inbox.id, message_id: a.inbound.id },
      reply_to_message: { message_id: a.inbound.id, body_text: "x" },
      forward_message: { message_id: a.inbound.id, to: [unique("x")] },
      search_messages: { inbox_id: a.inbox.id, query: "zebra" },
      wait_for_message: { inbox_id: a.inbox.id, timeout_ms: 0 },
      list_threads: { inbox_id: a.inbox.id },
      get_thread: { inbox_id: a.inbox.id, thread_id: a.inbound.thread_id },
      replay_event: { event_id: eventId },
    };
    for (const [name, args] of Object.entries(outside)) await fails(restricted, name, args, "not_found");
    const before = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM messages WHERE inbox_id = ? AND direction = 'outbound'",
    )
      .bind(a.inbox.id)
      .first<{ n: number }>();
    expect(before?.n).toBe(0);
    const audit = await ok(restricted, "list_audit_log", { limit: 100 });
    expect(audit.items.length).toBeGreaterThan(0);
    expect(audit.items.every((e: { inbox_id: string | null }) => e.inbox_id === second.id)).toBe(true);
    expect((await ok(restricted, "list_audit_log", { inbox_id: a.inbox.id })).items).toEqual([]);
    // Managing the account (new inboxes, domains) needs an unrestricted key: a protocol
    // error, the same on a retry with the same idempotency key.
    for (let i = 0; i < 2; i++) {
      await expect(
        restricted.callTool({
          name: "create_inbox",
          arguments: { username: "third", idempotency_key: "restricted-1" },
        }),
      ).rejects.toMatchObject({ code: -32600, data: { code: "insufficient_scope" } });
    }
    await expect(
      restricted.callTool({ name: "add_domain", arguments: { domain: "restricted.example" } }),
    ).rejects.toMatchObject({ data: { code: "insufficient_scope" } });
    const inboxes = await env.DB.prepare("SELECT COUNT(*) AS n FROM inboxes WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    expect(inboxes?.n).toBe(2);
  });

  it("idempotency keys belong to the key that used them; arguments nobody declared are refused", async () => {
    const a = await createAccount("mcp-idem");
    const first = await connect(a.key);
    const other = await createKey(a, { name: "second" });
    const second = await connect(other.key);
    const args = { username: "desk", idempotency_key: "same-key" };
    const made = await ok(first, "create_inbox", args);
    expect((await ok(first, "create_inbox", args)).id).toBe(made.id);
    // Another key of the same account does not get the first key's answer: it runs the call itself.
    await fails(second, "create_inbox", args, "address_taken");
    await fails(first, "wait_for_message", { inbox_id: a.inbox.id, timeout: 5000 }, "validation_error");
    await fails(first, "list_inboxes", { limit: 5, offset: 10 }, "validation_error");
  });

  it("sending tools carry the inbox's reputation warnings, like the HTTP headers", async () => {
    const a = await createAccount("mcp-warn");
    await liftLimit(a.account.id);
    const mcp = await connect(a.key);
    const send = { inbox_id: a.inbox.id, to: [unique("w")], subject: "Status", body_text: "All good." };
    // 3 hard bounces in 30 sends: 10 %, past 2/3 of the threshold but not above it (and still
    // past 2/3 when the consumer counts the send below).
    await inboxCounter(env, a.inbox.id).apply(
      [
        { metric: "sent", n: 30, key: "mcp-warn-sent" },
        { metric: "bounced_hard", n: 3, key: "mcp-warn-bounces" },
      ],
      Date.now(),
      a.account.id,
    );
    const warned = await mcp.callTool({ name: "send_message", arguments: send });
    expect(warned.isError).toBeFalsy();
    expect(warned._meta?.["mailbot/warnings"]).toEqual({
      "X-Mailbot-Warning": "bounce_rate_approaching_threshold",
      "X-Mailbot-Bounce-Rate": expect.stringMatching(/^0\.(1|09\d*)$/),
    });
    expect((warned.content as { text: string }[])[0]?.text).toMatch(
      /^Warning: X-Mailbot-Warning: bounce_rate_approaching_threshold/,
    );
    const http = await call("GET", `/v1/inboxes/${a.inbox.id}`, { key: a.key });
    expect(http.headers.get("X-Mailbot-Warning")).toBe("bounce_rate_approaching_threshold");
    // An inbox with a clean record: no warnings.
    const b = await createAccount("mcp-calm");
    const calm = await (await connect(b.key)).callTool({
      name: "send_message",
      arguments: { ...send, inbox_id: b.inbox.id },
    });
    expect(calm.isError).toBeFalsy();
    expect(calm._meta?.["mailbot/warnings"]).toBeUndefined();
  });

  it("MCP_ACCOUNT_ID pins the endpoint to one account", async () => {
    const a = await createAccount("pinned");
    const b = await createAccount("other");
    const pinned = { MCP_ACCOUNT_ID: a.account.id };
    const client = await connect(a.key, pinned);
    expect((await ok(client, "get_inbox", { inbox_id: a.inbox.id })).id).toBe(a.inbox.id);
    await expect(connect(b.key, pinned)).rejects.toThrow();
    const res = await workerFetch(pinned)("http://localhost/mcp", {
      method: "POST",
      headers: {
        Authorization: `Bearer ${b.key}`,
        "Content-Type": "application/json",
        Accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("mcp_account_not_allowed");
    // Without the setting, the same key is served.
    expect((await (await connect(b.key)).listTools()).tools).toHaveLength(TOOL_NAMES.length);
  });
});
