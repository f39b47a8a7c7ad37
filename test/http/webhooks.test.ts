import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { setDnsResolver, staticResolver } from "../../src/lib/dns";
import { createAccount, createKey } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { auditEntries, webhooksSettled } from "../helpers/db";
import { deliver, mail } from "../helpers/mail";
import { endpointOnReceiver, eventOf, type ReceivedDelivery, receiver, receiverHasPython } from "../helpers/webhooks";

afterEach(() => {
  setDnsResolver(null);
  vi.restoreAllMocks();
});

/**
 * Tests that register endpoints on made-up public hosts (resolved by a fake resolver) answer
 * their deliveries here: the test machine has no network, only the loopback receiver.
 */
function answerMadeUpHosts() {
  const real = globalThis.fetch;
  return vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.hostname.endsWith(".example.com")) return new Response("ok");
    return real(input, init);
  });
}

const attemptsOf = async (key: string, webhookId: string, eventId: string) => {
  const res = await call("GET", `/v1/webhooks/${webhookId}/deliveries?limit=100`, { key });
  expect(res.status, res.text).toBe(200);
  // biome-ignore lint/suspicious/noExplicitAny: wire objects are checked field by field
  return (res.body.data as any[]).filter((d) => d.event_id === eventId).sort((a, b) => a.attempt - b.attempt);
};

describe("webhook endpoints", () => {
  it("create returns the secret once, sends webhook.test right away, and is audited", async () => {
    const a = await createAccount("hooks");
    const { hook, webhook } = await endpointOnReceiver(a.key, { events: ["message.received"], description: "CI" });
    expect(webhook.secret).toMatch(/^whsec_[A-Za-z0-9+/]{32}$/);
    expect(webhook).toMatchObject({
      id: expect.stringMatching(/^whk_/),
      url: hook.url,
      events: ["message.received"],
      inbox_id: null,
      description: "CI",
      enabled: true,
      disabled_reason: null,
    });
    // Only the creation response shows the secret; at rest it is sealed (WEBHOOK_ENCRYPTION_KEY is set).
    const got = await call("GET", `/v1/webhooks/${webhook.id}`, { key: a.key });
    expect(got.body.data.secret).toBeUndefined();
    expect(Object.keys(got.body.data).sort()).toEqual(
      [
        "created_at",
        "description",
        "disabled_reason",
        "enabled",
        "events",
        "id",
        "inbox_id",
        "updated_at",
        "url",
      ].sort(),
    );
    const stored = await env.DB.prepare("SELECT secret FROM webhook_endpoints WHERE id = ?")
      .bind(webhook.id)
      .first<{ secret: string }>();
    expect(stored?.secret).toMatch(/^sealed:v1:/);
    expect(stored?.secret).not.toContain(webhook.secret.slice(6));

    const [test] = await hook.deliveries();
    const event = eventOf(test as ReceivedDelivery);
    expect(event).toMatchObject({ type: "webhook.test", account_id: a.account.id, data: { webhook_id: webhook.id } });
    expect(test?.headers["webhook-id"]).toBe(event.id);
    const [created] = await auditEntries({ accountId: a.account.id, action: "webhook.created" });
    expect(created).toMatchObject({ actor_type: "api_key", target_id: webhook.id });

    const list = await call("GET", "/v1/webhooks", { key: a.key });
    expect(list.body.data.map((w: { id: string }) => w.id)).toEqual([webhook.id]);
    expect(list.text).not.toContain(webhook.secret);
  });

  it("signs every delivery so standardwebhooks and the docs' Node snippet accept it; data carries the message", async () => {
    const a = await createAccount("signed");
    const { hook, webhook } = await endpointOnReceiver(a.key, { events: ["message.received"] });
    const raw = mail({
      to: a.inbox.address,
      subject: "Invoice 42",
      contentType: 'multipart/mixed; boundary="b1"',
      body: [
        "--b1",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Ünïcode body ✓",
        "--b1",
        'Content-Type: application/pdf; name="inv.pdf"',
        'Content-Disposition: attachment; filename="inv.pdf"',
        "Content-Transfer-Encoding: base64",
        "",
        "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK",
        "--b1--",
        "",
      ].join("\r\n"),
    });
    await deliver(raw, a.inbox.address);
    const all = await hook.waitFor((d) => d.some((x) => eventOf(x).type === "message.received"));
    const delivery = all.find((x) => eventOf(x).type === "message.received") as ReceivedDelivery;
    for (const d of all) {
      expect(d.standardwebhooks, "standardwebhooks library").toBe(true);
      expect(d.node, "Node snippet of docs/webhooks.md").toBe(true);
    }
    const h = delivery.headers;
    expect(h["x-mailbot-signature"]).toMatch(/^sha256=[0-9a-f]{64}$/);
    expect(h["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(h["x-mailbot-timestamp"]).toBe(h["webhook-timestamp"]);
    expect(h["content-type"]).toContain("application/json");

    // The body is exactly the stored event, the same object GET /v1/events/:id returns.
    const event = eventOf(delivery);
    expect(h["webhook-id"]).toBe(event.id);
    const stored = await call("GET", `/v1/events/${event.id}`, { key: a.key });
    expect(JSON.parse(delivery.body)).toEqual(stored.body.data);
    expect(Object.keys(event).sort()).toEqual(["account_id", "created_at", "data", "id", "type"]);
    expect(event.data).toMatchObject({
      message_id: expect.stringMatching(/^msg_/),
      inbox_id: a.inbox.id,
      thread_id: expect.stringMatching(/^thr_/),
      from_address: "ana@example.org",
      to: [a.inbox.address],
      subject: "Invoice 42",
      body_text: expect.stringContaining("Ünïcode body ✓"),
      attachments: [expect.objectContaining({ filename: "inv.pdf", content_type: "application/pdf", size: 54 })],
    });
    expect(delivery.body).not.toContain("JVBERi0xLjQK");

    // D1: one dispatch, succeeded at the first attempt, and its attempt row.
    const dispatch = await env.DB.prepare("SELECT status, attempts FROM webhook_dispatches WHERE event_id = ?")
      .bind(event.id)
      .all<{ status: string; attempts: number }>();
    expect(dispatch.results).toEqual([{ status: "succeeded", attempts: 1 }]);
    const attempts = await attemptsOf(a.key, webhook.id, event.id);
    expect(attempts).toEqual([
      {
        id: expect.stringMatching(/^dlv_/),
        event_id: event.id,
        event_type: "message.received",
        attempt: 1,
        status_code: 200,
        error: null,
        duration_ms: expect.any(Number),
        url: hook.url,
        status: "succeeded",
        next_attempt_at: null,
        created_at: expect.any(String),
      },
    ]);
  });

  it("the Python snippet of docs/webhooks.md accepts the same deliveries", async ({ skip }) => {
    if (!(await receiverHasPython())) {
      console.warn("python3 is not installed here: skipping the Python snippet check");
      skip();
    }
    const a = await createAccount("python");
    const { hook } = await endpointOnReceiver(a.key);
    await deliver(mail({ to: a.inbox.address, subject: "py" }), a.inbox.address);
    const all = await hook.waitFor((d) => d.some((x) => eventOf(x).type === "message.received"));
    for (const d of all) expect(d.python).toBe(true);
  });

  it("a receiver failing for a while (500, a timeout, 429 + Retry-After) gets every event, same webhook-id; each attempt is logged", async () => {
    const a = await createAccount("flaky");
    const { hook, webhook } = await endpointOnReceiver(a.key, { events: ["message.received"] });
    await hook.configure({
      steps: [{ status: 500 }, { hangMs: 4000 }, { status: 429, retryAfter: "1" }, { status: 200 }],
    });
    await deliver(mail({ to: a.inbox.address, subject: "first" }), a.inbox.address);
    await deliver(mail({ to: a.inbox.address, subject: "second" }), a.inbox.address);
    const all = await hook.waitFor((d) => {
      const ok = d.filter((x) => eventOf(x).type === "message.received" && x.answered === 200);
      return new Set(ok.map((x) => eventOf(x).id)).size === 2;
    }, 30_000);
    const received = all.filter((x) => eventOf(x).type === "message.received");
    const ids = [...new Set(received.map((x) => x.headers["webhook-id"]))];
    expect(ids).toHaveLength(2);
    expect(new Set(received.map((x) => eventOf(x).data.subject))).toEqual(new Set(["first", "second"]));
    for (const d of received) {
      expect(d.headers["webhook-id"]).toBe(eventOf(d).id);
      expect(d.standardwebhooks).toBe(true);
    }
    // Four scripted answers were shared by the two events; together they needed 4 + 1 deliveries.
    expect(received).toHaveLength(5);

    const logged: { status_code: number | null; error: string | null; status: string; duration_ms: number }[] = [
      ...(await attemptsOf(a.key, webhook.id, ids[0] as string)),
      ...(await attemptsOf(a.key, webhook.id, ids[1] as string)),
    ];
    expect(logged).toHaveLength(5);
    const codes = logged.map((l) => l.status_code);
    expect(codes.filter((c) => c === 200)).toHaveLength(2);
    expect(codes).toContain(500);
    expect(codes).toContain(429);
    const timedOut = logged.find((l) => l.status_code === null);
    expect(timedOut?.error).toMatch(/timed out after 1500 ms/);
    expect(timedOut?.duration_ms).toBeGreaterThanOrEqual(1400);
    expect(logged.filter((l) => l.status === "retrying")).toHaveLength(3);
    const states = await env.DB.prepare(
      "SELECT status FROM webhook_dispatches WHERE endpoint_id = ? AND kind = 'event'",
    )
      .bind(webhook.id)
      .all<{ status: string }>();
    expect(states.results.map((s) => s.status)).toEqual(["succeeded", "succeeded"]);
  }, 40_000);

  it("after the last scheduled attempt the delivery is failed", async () => {
    const a = await createAccount("dead");
    const { hook, webhook } = await endpointOnReceiver(a.key);
    await hook.configure({ steps: Array.from({ length: 6 }, () => ({ status: 503 })) });
    const test = await call("POST", `/v1/webhooks/${webhook.id}/test`, { key: a.key });
    expect(test.status, test.text).toBe(202);
    const eventId = test.body.data.event_id as string;
    await vi.waitFor(
      async () => {
        const row = await env.DB.prepare("SELECT status, attempts FROM webhook_dispatches WHERE event_id = ?")
          .bind(eventId)
          .first<{ status: string; attempts: number }>();
        expect(row).toEqual({ status: "failed", attempts: 6 });
      },
      { timeout: 30_000, interval: 200 },
    );
    const attempts = await attemptsOf(a.key, webhook.id, eventId);
    expect(attempts.map((x) => x.attempt)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(attempts.map((x) => x.status)).toEqual([
      "retrying",
      "retrying",
      "retrying",
      "retrying",
      "retrying",
      "failed",
    ]);
    expect((await hook.deliveries()).filter((d) => eventOf(d).id === eventId)).toHaveLength(6);
  }, 40_000);

  it("410 disables the endpoint (audited as the system); enable turns it back on", async () => {
    const a = await createAccount("gone");
    const { hook, webhook } = await endpointOnReceiver(a.key);
    await hook.configure({ steps: [{ status: 410 }] });
    expect((await call("POST", `/v1/webhooks/${webhook.id}/test`, { key: a.key })).status).toBe(202);
    await vi.waitFor(
      async () => {
        const res = await call("GET", `/v1/webhooks/${webhook.id}`, { key: a.key });
        expect(res.body.data).toMatchObject({ enabled: false, disabled_reason: "gone" });
      },
      { timeout: 15_000, interval: 200 },
    );
    const [disabled] = await auditEntries({ accountId: a.account.id, action: "webhook.disabled" });
    expect(disabled).toMatchObject({ actor_type: "system", target_id: webhook.id });
    expect(disabled?.metadata).toMatchObject({ reason: "gone", status_code: 410 });

    // Disabled: new events create no dispatch for it. A second, live endpoint on the account makes
    // the fan-out run (with none live, events are committed already dispatched and it never would).
    const live = await endpointOnReceiver(a.key);
    await deliver(mail({ to: a.inbox.address, subject: "while gone" }), a.inbox.address);
    await live.hook.waitFor((d) => d.some((x) => eventOf(x).data.subject === "while gone"));
    const before = (await hook.deliveries()).length;
    const dispatches = async (endpointId: string) =>
      (
        await env.DB.prepare("SELECT COUNT(*) AS n FROM webhook_dispatches WHERE endpoint_id = ? AND kind = 'event'")
          .bind(endpointId)
          .first<{ n: number }>()
      )?.n;
    expect(await dispatches(webhook.id)).toBe(0);
    expect(await dispatches(live.webhook.id)).toBe(1);

    const enabled = await call("POST", `/v1/webhooks/${webhook.id}/enable`, { key: a.key });
    expect(enabled.body.data).toMatchObject({ enabled: true, disabled_reason: null });
    expect(await auditEntries({ accountId: a.account.id, action: "webhook.enabled" })).toHaveLength(1);
    await deliver(mail({ to: a.inbox.address, subject: "back" }), a.inbox.address);
    await hook.waitFor((d) => d.length > before && d.some((x) => eventOf(x).data.subject === "back"));
  }, 30_000);

  it("replay re-sends the stored event with the same id, to the endpoint or a target_url; audited", async () => {
    const a = await createAccount("replay");
    const { hook, webhook } = await endpointOnReceiver(a.key, { events: ["message.received"] });
    await deliver(mail({ to: a.inbox.address, subject: "replay me" }), a.inbox.address);
    const first = await hook.waitFor((d) => d.some((x) => eventOf(x).type === "message.received"));
    const eventId = eventOf(first.find((x) => eventOf(x).type === "message.received") as ReceivedDelivery).id;

    const replay = await call("POST", `/v1/events/${eventId}/replay`, { key: a.key, body: {} });
    expect(replay.status, replay.text).toBe(202);
    expect(replay.body.data).toEqual({ event_id: eventId, webhook_ids: [webhook.id], target_url: null });
    const again = await hook.waitFor((d) => d.filter((x) => x.headers["webhook-id"] === eventId).length === 2);
    const copies = again.filter((x) => x.headers["webhook-id"] === eventId);
    expect(copies[1]?.body).toBe(copies[0]?.body);
    expect(copies[1]?.standardwebhooks).toBe(true);

    const other = receiver();
    await other.configure({ secret: webhook.secret });
    const targeted = await call("POST", `/v1/events/${eventId}/replay`, {
      key: a.key,
      body: { target_url: other.url },
    });
    expect(targeted.status, targeted.text).toBe(202);
    const there = await other.waitFor((d) => d.length === 1);
    expect(there[0]?.headers["webhook-id"]).toBe(eventId);
    expect(there[0]?.standardwebhooks).toBe(true);

    const refused = await call("POST", `/v1/events/${eventId}/replay`, {
      key: a.key,
      body: { target_url: "https://169.254.169.254/latest/meta-data" },
    });
    expectError(refused, 422, "validation_error");
    const replayed = await auditEntries({ accountId: a.account.id, action: "webhook.replayed" });
    expect(replayed).toHaveLength(2);
    expect(replayed[1]?.metadata).toMatchObject({ target_url: other.url });
    expectError(
      await call("POST", "/v1/events/evt_00000000000000000000000000/replay", { key: a.key, body: {} }),
      404,
      "not_found",
    );
  }, 30_000);

  it("rotate-secret: new secret once, both secrets sign for 24 h; update, delete, audit", async () => {
    const a = await createAccount("rotate");
    const { hook, webhook } = await endpointOnReceiver(a.key);
    const rotated = await call("POST", `/v1/webhooks/${webhook.id}/rotate-secret`, { key: a.key });
    expect(rotated.status, rotated.text).toBe(200);
    const secret = rotated.body.data.secret as string;
    expect(secret).toMatch(/^whsec_/);
    expect(secret).not.toBe(webhook.secret);
    await hook.configure({ secret });
    await call("POST", `/v1/webhooks/${webhook.id}/test`, { key: a.key });
    const all = await hook.waitFor((d) => d.length === 2);
    const last = all[1] as ReceivedDelivery;
    expect(last.headers["webhook-signature"]?.split(" ")).toHaveLength(2);
    expect(last.headers["x-mailbot-signature"]?.split(" ")).toHaveLength(2);
    expect(last.standardwebhooks).toBe(true);
    expect(last.node).toBe(true);
    expect(await auditEntries({ accountId: a.account.id, action: "webhook.secret_rotated" })).toHaveLength(1);

    const patched = await call("PATCH", `/v1/webhooks/${webhook.id}`, {
      key: a.key,
      body: { events: ["message.received", "inbox.created"], enabled: false, inbox_id: a.inbox.id },
    });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body.data).toMatchObject({
      events: ["message.received", "inbox.created"],
      enabled: false,
      disabled_reason: "manual",
      inbox_id: a.inbox.id,
    });
    expect(await auditEntries({ accountId: a.account.id, action: "webhook.updated" })).toHaveLength(1);
    expect(await auditEntries({ accountId: a.account.id, action: "webhook.disabled" })).toHaveLength(1);

    const deleted = await call("DELETE", `/v1/webhooks/${webhook.id}`, { key: a.key });
    expect(deleted.body.data).toEqual({ id: webhook.id, deleted: true });
    expectError(await call("GET", `/v1/webhooks/${webhook.id}`, { key: a.key }), 404, "not_found");
    expect(await auditEntries({ accountId: a.account.id, action: "webhook.deleted" })).toHaveLength(1);
  });

  it("validates input, scopes and restricted keys", async () => {
    answerMadeUpHosts();
    const a = await createAccount("rules");
    const bad = await call("POST", "/v1/webhooks", {
      key: a.key,
      body: { url: "https://hooks.example.com/x", events: ["message.exploded"] },
    });
    expect(expectError(bad, 422, "validation_error").details[0].path).toBe("events.0");
    expectError(
      await call("POST", "/v1/webhooks", { key: a.key, body: { url: "https://hooks.example.com/x", events: [] } }),
      422,
      "validation_error",
    );
    expectError(await call("POST", "/v1/webhooks", { key: a.key, body: {} }), 422, "validation_error");
    setDnsResolver(staticResolver({ "hooks.example.com": { A: ["93.184.216.34"] } }));
    const noInbox = await call("POST", "/v1/webhooks", {
      key: a.key,
      body: { url: "https://hooks.example.com/x", inbox_id: "inbox_00000000000000000000000000" },
    });
    expect(expectError(noInbox, 422, "validation_error").details[0].path).toBe("inbox_id");

    const ro = (await createKey(a, { name: "ro", scopes: ["read"] })).key;
    expectError(
      await call("POST", "/v1/webhooks", { key: ro, body: { url: "https://hooks.example.com/x" } }),
      403,
      "insufficient_scope",
    );
    expect((await call("GET", "/v1/webhooks", { key: ro })).status).toBe(200);

    const rk = (await createKey(a, { name: "one inbox", inbox_ids: [a.inbox.id] })).key;
    expectError(
      await call("POST", "/v1/webhooks", { key: rk, body: { url: "https://hooks.example.com/x" } }),
      403,
      "insufficient_scope",
    );
    const own = await call("POST", "/v1/webhooks", {
      key: rk,
      body: { url: "https://hooks.example.com/x", inbox_id: a.inbox.id },
    });
    expect(own.status, own.text).toBe(201);
    const wide = await call("POST", "/v1/webhooks", { key: a.key, body: { url: "https://hooks.example.com/y" } });
    const seen = await call("GET", "/v1/webhooks", { key: rk });
    expect(seen.body.data.map((w: { id: string }) => w.id)).toEqual([own.body.data.id]);
    expectError(await call("GET", `/v1/webhooks/${wide.body.data.id}`, { key: rk }), 404, "not_found");

    // Idempotency-Key: the same create twice is one endpoint.
    const once = { key: a.key, body: { url: "https://hooks.example.com/z" }, headers: { "Idempotency-Key": "hook-1" } };
    const r1 = await call("POST", "/v1/webhooks", once);
    const r2 = await call("POST", "/v1/webhooks", once);
    expect(r2.body.data.id).toBe(r1.body.data.id);
    expect(r2.headers.get("Idempotent-Replayed")).toBe("true");
    await webhooksSettled(a.account.id);
  });

  it("refuses URLs that are, or resolve to, internal addresses (the SSRF table)", async () => {
    answerMadeUpHosts();
    const a = await createAccount("ssrf");
    setDnsResolver(
      staticResolver({
        "inside.example.com": { A: ["10.1.2.3"] },
        "meta.example.com": { A: ["169.254.169.254"] },
        "sixinside.example.com": { A: ["93.184.216.34"], AAAA: ["::1"] },
        "mapped.example.com": { AAAA: ["::ffff:192.168.0.1"] },
        "cgnat.example.com": { A: ["100.64.1.1"] },
        "flaky.example.com": "temporary_failure",
        "public.example.com": { A: ["93.184.216.34"], AAAA: ["2606:2800:220:1::1"] },
      }),
    );
    const refused = [
      "http://public.example.com/hook",
      "ftp://public.example.com/hook",
      "https://10.0.0.1/hook",
      "https://172.16.5.4/hook",
      "https://192.168.1.1/hook",
      "https://127.0.0.2/hook",
      "https://[::1]/hook",
      "https://[fe80::1]/hook",
      "https://[fd00::1]/hook",
      "https://[::ffff:127.0.0.1]/hook",
      "https://169.254.169.254/latest/meta-data",
      "https://100.64.0.1/hook",
      "https://0.0.0.0/hook",
      "https://224.0.0.1/hook",
      "http://2130706433/hook",
      "https://2130706433/hook",
      "https://0x7f.1/hook",
      "https://017700000001/hook",
      "https://127.1/hook",
      "https://localhost.localdomain/hook",
      "https://app.localhost/hook",
      "https://metadata.google.internal/computeMetadata/v1/",
      "https://user:pass@public.example.com/hook",
      "https://public.example.com@10.0.0.1/hook",
      "https://inside.example.com/hook",
      "https://meta.example.com/hook",
      "https://sixinside.example.com/hook",
      "https://mapped.example.com/hook",
      "https://cgnat.example.com/hook",
      "https://nowhere.example.com/hook",
      "https://flaky.example.com/hook",
      "not a url",
    ];
    for (const url of refused) {
      const res = await call("POST", "/v1/webhooks", { key: a.key, body: { url } });
      const error = expectError(res, 422, "validation_error");
      expect(error.details, url).toEqual([{ path: "url", message: expect.any(String) }]);
      expect(error.details[0].message.length, url).toBeGreaterThan(10);
    }
    const count = await env.DB.prepare("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE account_id = ?")
      .bind(a.account.id)
      .first<{ n: number }>();
    expect(count?.n).toBe(0);
    const inside = await call("POST", "/v1/webhooks", { key: a.key, body: { url: "https://inside.example.com/hook" } });
    expect(inside.body.error.details[0].message).toContain("10.1.2.3");

    // A public host is accepted; PATCH goes through the same guard.
    const ok = await call("POST", "/v1/webhooks", { key: a.key, body: { url: "https://public.example.com/hook" } });
    expect(ok.status, ok.text).toBe(201);
    const patch = await call("PATCH", `/v1/webhooks/${ok.body.data.id}`, {
      key: a.key,
      body: { url: "https://inside.example.com/hook" },
    });
    expectError(patch, 422, "validation_error");
    await webhooksSettled(a.account.id);
  });

  it("delivery re-checks DNS: a host that now points inside is refused and recorded as a failed attempt", async () => {
    const a = await createAccount("rebind");
    setDnsResolver(staticResolver({ "rebind.example.com": { A: ["93.184.216.34"] } }));
    const fetchSpy = answerMadeUpHosts();
    const created = await call("POST", "/v1/webhooks", {
      key: a.key,
      body: { url: "https://rebind.example.com/hook" },
    });
    expect(created.status, created.text).toBe(201);
    setDnsResolver(staticResolver({ "rebind.example.com": { A: ["127.0.0.1"] } }));
    fetchSpy.mockClear();
    const test = await call("POST", `/v1/webhooks/${created.body.data.id}/test`, { key: a.key });
    await vi.waitFor(
      async () => {
        const res = await call("GET", `/v1/webhooks/${created.body.data.id}/deliveries`, { key: a.key });
        const attempt = res.body.data.find((d: { event_id: string }) => d.event_id === test.body.data.event_id);
        expect(attempt).toMatchObject({ status_code: null, status: "retrying" });
        expect(attempt.error).toMatch(/url refused: .*127\.0\.0\.1/);
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(fetchSpy.mock.calls.some(([input]) => String(input).includes("rebind.example.com"))).toBe(false);
    // Stop its remaining retries (they would ask the real DoH resolver once this test's fake is gone).
    await call("DELETE", `/v1/webhooks/${created.body.data.id}`, { key: a.key });
  });
});
