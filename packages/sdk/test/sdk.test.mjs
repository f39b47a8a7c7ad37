// @mailbot/sdk against a real `wrangler dev` of this repo (run by `npm run test:sdk`, after the build).
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  ConflictError,
  Mailbot,
  NotFoundError,
  RateLimitError,
  verifyWebhook,
  WaitTimeoutError,
} from "../dist/index.js";
import { typesFor } from "../scripts/generate-types.mjs";
import {
  deliver,
  hasEventStream,
  register,
  sampleMail,
  sleep,
  startProxy,
  startReceiver,
  startWorker,
} from "./helpers.mjs";

let worker;
let reg;
let mb;
let streamAvailable = false;

before(async () => {
  worker = await startWorker("mailbot-sdk-test");
  reg = await register(worker.base);
  mb = new Mailbot({ apiKey: reg.api_key, baseUrl: worker.base, retryBaseMs: 50 });
  streamAvailable = await hasEventStream(worker.base, reg.api_key);
});

after(async () => {
  await worker?.stop();
});

test("the checked-in types match the Worker's /openapi.json", async () => {
  const doc = await (await fetch(`${worker.base}/openapi.json`)).json();
  const current = readFileSync(new URL("../src/openapi.d.ts", import.meta.url), "utf8");
  assert.equal(await typesFor(doc), current, "run `npm run sdk:types` and commit packages/sdk/src/openapi.d.ts");
});

describe("resources, happy paths", () => {
  let inbox;
  let received;

  test("account, info, api keys", async () => {
    const account = await mb.account.retrieve();
    assert.equal(account.id, reg.account.id);
    const renamed = await mb.account.update({ name: "Renamed by the SDK" });
    assert.equal(renamed.name, "Renamed by the SDK");
    assert.ok((await mb.info()) !== undefined);
    const key = await mb.apiKeys.create({ name: "reader", scopes: ["read"] });
    assert.match(key.key, /^mb_/);
    const listed = (await mb.apiKeys.list()).data.map((k) => k.id);
    assert.ok(listed.includes(key.id));
    const revoked = await mb.apiKeys.revoke(key.id);
    assert.ok(revoked.revoked_at);
  });

  test("inboxes: create, list across cursors, get, update, disable, enable, reputation", async () => {
    inbox = await mb.inboxes.create({ username: "support", display_name: "Support", labels: ["prod"] });
    assert.equal(inbox.username, "support");
    const ids = [];
    for await (const i of mb.inboxes.list({ limit: 1 })) ids.push(i.id);
    assert.deepEqual(ids.sort(), [inbox.id, reg.inbox.id].sort(), "two pages of one, iterated");
    const page = await mb.inboxes.list({ limit: 1 });
    assert.equal(page.data.length, 1);
    assert.ok(page.nextCursor);
    assert.equal((await mb.inboxes.retrieve(inbox.id)).address, inbox.address);
    assert.deepEqual((await mb.inboxes.update(inbox.id, { labels: ["prod", "sdk"] })).labels, ["prod", "sdk"]);
    assert.equal((await mb.inboxes.disable(inbox.id)).disabled_reason, "deactivated");
    assert.equal((await mb.inboxes.enable(inbox.id)).status, "active");
    assert.ok((await mb.inboxes.reputation(inbox.id)).status);
  });

  test("typed errors carry code, details and request_id", async () => {
    const err = await mb.inboxes.create({ username: "support" }).catch((e) => e);
    assert.ok(err instanceof ConflictError);
    assert.equal(err.status, 409);
    assert.equal(err.code, "address_taken");
    assert.match(err.requestId, /^req_/);
    const missing = await mb.inboxes.retrieve("inbox_doesnotexist").catch((e) => e);
    assert.ok(missing instanceof NotFoundError);
    const invalid = await mb.inboxes.create({ username: "Not Valid!" }).catch((e) => e);
    assert.equal(invalid.status, 422);
    assert.equal(invalid.code, "validation_error");
    assert.ok(Array.isArray(invalid.details) && invalid.details[0].path, JSON.stringify(invalid.details));
  });

  test("messages: waitFor an inbound mail, list, get, update, search, raw, attachment, send, reply", async () => {
    const since = new Date(Date.now() - 1000).toISOString();
    const waiting = mb.messages.waitFor(inbox.id, { from_address: "ada@example.com", since, timeoutMs: 30_000 });
    await sleep(200);
    const delivered = await deliver({ raw: sampleMail({ to: inbox.address }), to: inbox.address, url: worker.base });
    assert.equal(delivered.status, 200, delivered.text);
    received = await waiting;
    assert.equal(received.subject, "Notes for Thursday");

    const list = await mb.messages.list(inbox.id, { direction: "inbound" });
    assert.equal(list.data[0].id, received.id);
    const full = await mb.messages.retrieve(inbox.id, received.id);
    assert.match(full.body_text, /sort them by priority/);
    const read = await mb.messages.update(inbox.id, received.id, { remove_labels: ["unread"] });
    assert.ok(!read.labels.includes("unread"));
    assert.equal((await mb.messages.search(inbox.id, { q: "thursday" })).data[0].id, received.id);
    const raw = await mb.messages.raw(inbox.id, received.id);
    assert.match(new TextDecoder().decode(raw), /Subject: Notes for Thursday/);
    const att = await mb.messages.attachment(inbox.id, received.id, full.attachments[0].id);
    assert.match(new TextDecoder().decode(att.bytes), /ship inbound mail/);

    const sent = await mb.messages.send(inbox.id, {
      to: ["grace@example.org"],
      subject: "Hello from the SDK",
      body_text: "Hi Grace.",
    });
    assert.equal(sent.status, "queued");
    const reply = await mb.messages.reply(received.id, { body_text: "Sorted." });
    assert.equal(reply.subject, "Re: Notes for Thursday");
    assert.equal(reply.thread_id, received.thread_id);

    const none = await mb.messages.wait(inbox.id, { from_address: "nobody@example.com", timeout_ms: 0 });
    assert.equal(none, null);
    const late = await mb.messages
      .waitFor(inbox.id, { from_address: "nobody@example.com", timeoutMs: 500 })
      .catch((e) => e);
    assert.ok(late instanceof WaitTimeoutError);
    assert.equal(late.code, "wait_timeout");
  });

  test("threads", async () => {
    const threads = await mb.threads.list(inbox.id);
    assert.ok(threads.data.some((t) => t.id === received.thread_id));
    const thread = await mb.threads.retrieve(inbox.id, received.thread_id);
    assert.ok(thread.messages.length >= 2);
  });

  test("webhooks: a real delivery verifies with both schemes; a tampered body is refused", async () => {
    const deliveries = [];
    const receiver = await startReceiver({ port: 0, onDelivery: (d) => deliveries.push(d) });
    try {
      const hook = await mb.webhooks.create({ url: `${receiver.url}/hooks`, events: ["inbox.created"] });
      assert.match(hook.secret, /^whsec_/);
      for (let i = 0; i < 80 && deliveries.length === 0; i++) await sleep(250);
      const d = deliveries[0];
      assert.ok(d, "the webhook.test delivery arrived");
      assert.equal(await mb.webhooks.verify(d.headers, d.body, hook.secret), true);
      const standardOnly = Object.fromEntries(Object.entries(d.headers).filter(([k]) => !k.startsWith("x-mailbot")));
      const oursOnly = Object.fromEntries(Object.entries(d.headers).filter(([k]) => !k.startsWith("webhook-")));
      assert.deepEqual(await mb.webhooks.check(standardOnly, d.body, hook.secret), { ok: true, scheme: "standard" });
      assert.deepEqual(await mb.webhooks.check(oursOnly, d.body, hook.secret), { ok: true, scheme: "mailbot" });
      const tampered = Buffer.from(d.body.toString("utf8").replace("webhook.test", "webhook.tost"));
      assert.equal(await mb.webhooks.verify(d.headers, tampered, hook.secret), false);
      assert.equal(await mb.webhooks.verify(standardOnly, tampered, hook.secret), false);
      assert.equal(await mb.webhooks.verify(oursOnly, tampered, hook.secret), false);
      assert.equal(await mb.webhooks.verify(d.headers, d.body, "whsec_c29tZXRoaW5nIGVsc2UgZW50aXJlbHk="), false);
      const event = await mb.webhooks.unwrap(d.headers, d.body, hook.secret);
      assert.equal(event.type, "webhook.test");
      await assert.rejects(mb.webhooks.unwrap(d.headers, tampered, hook.secret), { code: "invalid_signature" });

      assert.ok((await mb.webhooks.list()).data.some((w) => w.id === hook.id));
      assert.equal((await mb.webhooks.retrieve(hook.id)).url, hook.url);
      assert.equal((await mb.webhooks.update(hook.id, { description: "sdk" })).description, "sdk");
      await mb.webhooks.test(hook.id);
      const rotated = await mb.webhooks.rotateSecret(hook.id);
      assert.notEqual(rotated.secret, hook.secret);
      const attempts = await mb.webhooks.deliveries(hook.id).toArray();
      assert.ok(attempts.length >= 1);
      await mb.webhooks.delete(hook.id);
      await assert.rejects(mb.webhooks.retrieve(hook.id), NotFoundError);
    } finally {
      await receiver.close();
    }
  });

  test("the standalone verifyWebhook checks a hand-signed body (both schemes, stale refused)", async () => {
    const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const body = '{"id":"evt_1","type":"message.received"}';
    const ts = String(Math.floor(Date.now() / 1000));
    const std = createHmac("sha256", Buffer.from(secret.slice(6), "base64"))
      .update(`evt_1.${ts}.${body}`)
      .digest("base64");
    const ours = createHmac("sha256", secret).update(`${ts}.${body}`).digest("hex");
    const rotating = { "webhook-id": "evt_1", "webhook-timestamp": ts, "webhook-signature": `v1,bm9wZQ== v1,${std}` };
    assert.equal(await verifyWebhook(rotating, body, secret), true);
    assert.equal(
      await verifyWebhook(
        new Headers({ "X-Mailbot-Timestamp": ts, "X-Mailbot-Signature": `sha256=${ours}` }),
        body,
        secret,
      ),
      true,
    );
    assert.equal(await verifyWebhook(rotating, body, secret, { now: Date.now() + 600_000 }), false);
  });

  test("events: list, get, poll, replay", async () => {
    const events = await mb.events.list({ limit: 5 });
    assert.ok(events.data.length > 0);
    const first = events.data.at(-1);
    assert.equal((await mb.events.retrieve(first.id)).id, first.id);
    const newer = await mb.events.poll({ after: first.id });
    assert.ok(newer.length >= 1 && newer.every((e) => e.id !== first.id));
    const receiver = await startReceiver({ port: 0 });
    try {
      const hook = await mb.webhooks.create({ url: `${receiver.url}/replayed` });
      const replay = await mb.events.replay(first.id, { webhook_id: hook.id });
      assert.equal(replay.event_id, first.id);
      assert.deepEqual(replay.webhook_ids, [hook.id]);
      await mb.webhooks.delete(hook.id);
    } finally {
      await receiver.close();
    }
  });

  test("domains, compliance, audit log, usage, suppressions", async () => {
    const domain = await mb.domains.create({ domain: "sdk-example.org" });
    assert.equal(domain.status, "pending");
    assert.ok((await mb.domains.list()).data.some((d) => d.id === domain.id));
    assert.equal((await mb.domains.retrieve(domain.id)).domain, "sdk-example.org");
    await mb.domains.delete(domain.id);
    const check = await mb.compliance.check(worker.vars.MAIL_DOMAIN);
    assert.equal(typeof check.send_allowed, "boolean");
    const readiness = await mb.compliance.readiness(inbox.id);
    assert.equal(typeof readiness.score, "number");
    const audit = await mb.auditLog.list({ limit: 2 });
    assert.equal(audit.data.length, 2);
    assert.equal((await mb.auditLog.verify()).ok, true);
    const usage = await mb.usage.retrieve();
    assert.ok(usage.sent >= 1);
    assert.ok(Array.isArray(await mb.usage.daily()));
    assert.ok(Array.isArray((await mb.suppressions.list()).data));
  });
});

describe("read your writes (X-Mailbot-Bookmark)", () => {
  test("the newest bookmark of an answer goes back on the next request; readYourWrites: false sends none", async () => {
    const proxy = await startProxy(worker.base);
    try {
      const client = new Mailbot({ apiKey: reg.api_key, baseUrl: proxy.url });
      assert.equal(client.bookmark, undefined);
      const created = await client.inboxes.create({ username: `bm${Date.now()}` });
      const afterWrite = client.bookmark;
      assert.match(afterWrite ?? "", /^[0-9a-f]+(-[0-9a-f]+)+$/i);
      assert.equal(proxy.requests.at(-1).headers["x-mailbot-bookmark"], undefined);
      const read = await client.inboxes.retrieve(created.id);
      assert.equal(read.id, created.id);
      assert.equal(proxy.requests.at(-1).headers["x-mailbot-bookmark"], afterWrite);
      assert.ok(client.bookmark >= afterWrite);
      // Handed to another client, it starts from there.
      const other = new Mailbot({ apiKey: reg.api_key, baseUrl: proxy.url, bookmark: client.bookmark });
      await other.inboxes.retrieve(created.id);
      assert.equal(proxy.requests.at(-1).headers["x-mailbot-bookmark"], client.bookmark);
      // An older bookmark in a later answer does not move it back.
      const held = client.bookmark;
      proxy.script = (req) =>
        req.method === "GET"
          ? { status: 200, headers: { "x-mailbot-bookmark": "00000000-00000000" }, body: { data: read } }
          : undefined;
      await client.inboxes.retrieve(created.id);
      assert.equal(client.bookmark, held);
      proxy.script = () => undefined;
      const plain = new Mailbot({ apiKey: reg.api_key, baseUrl: proxy.url, readYourWrites: false });
      await plain.inboxes.create({ username: `bmoff${Date.now()}` });
      await plain.inboxes.retrieve(created.id);
      assert.equal(proxy.requests.at(-1).headers["x-mailbot-bookmark"], undefined);
    } finally {
      await proxy.close();
    }
  });

  test("a bookmark option that is not a D1 bookmark is refused at construction, not dropped", () => {
    for (const bad of ["not-a-bookmark", "00000000-zz", "x".repeat(500), "1-2; drop table"]) {
      assert.throws(() => new Mailbot({ apiKey: reg.api_key, baseUrl: worker.base, bookmark: bad }), TypeError);
    }
    // None given (or an empty one) is none; a real one is kept.
    assert.equal(new Mailbot({ apiKey: reg.api_key, baseUrl: worker.base, bookmark: "" }).bookmark, undefined);
    const good = "00000000-00000005-00004f3a-8c1f0e2d3b4a59687766554433221100";
    assert.equal(new Mailbot({ apiKey: reg.api_key, baseUrl: worker.base, bookmark: good }).bookmark, good);
    // Read from a file or a variable with its newline: trimmed, as the server trims the header.
    assert.equal(new Mailbot({ apiKey: reg.api_key, baseUrl: worker.base, bookmark: ` ${good}\n` }).bookmark, good);
  });
});

describe("retries", () => {
  let proxy;
  let client;
  let inboxId;

  before(async () => {
    proxy = await startProxy(worker.base);
    client = new Mailbot({ apiKey: reg.api_key, baseUrl: proxy.url, retryBaseMs: 20 });
    inboxId = reg.inbox.id;
  });
  after(() => proxy.close());

  test("a request-rate 429 (Retry-After) and a 503 are retried; one Idempotency-Key for all attempts", async () => {
    proxy.requests.length = 0;
    let n = 0;
    proxy.script = (req) => {
      if (req.method !== "POST") return undefined;
      n++;
      if (n === 1)
        return {
          status: 429,
          headers: { "retry-after": "1" },
          body: { error: { code: "rate_limited", message: "slow down", request_id: "req_a" } },
        };
      if (n === 2)
        return { status: 503, body: { error: { code: "unavailable", message: "later", request_id: "req_b" } } };
      return undefined;
    };
    const created = await client.inboxes.create({ username: "retried" });
    assert.equal(created.username, "retried");
    const posts = proxy.requests.filter((r) => r.method === "POST");
    assert.equal(posts.length, 3);
    const keys = new Set(posts.map((r) => r.headers["idempotency-key"]));
    assert.equal(keys.size, 1);
    assert.ok([...keys][0]);
    const named = (await mb.inboxes.list({ limit: 100 })).data.filter((i) => i.username === "retried");
    assert.equal(named.length, 1);
  });

  test("send_limit_exceeded is never retried", async () => {
    proxy.requests.length = 0;
    proxy.script = (req) =>
      req.method === "POST"
        ? {
            status: 429,
            headers: { "retry-after": "1" },
            body: { error: { code: "send_limit_exceeded", message: "limit", request_id: "req_c" } },
          }
        : undefined;
    const err = await client.messages
      .send(inboxId, { to: ["x@example.org"], subject: "s", body_text: "t" })
      .catch((e) => e);
    assert.ok(err instanceof RateLimitError);
    assert.equal(err.code, "send_limit_exceeded");
    assert.equal(err.retryAfterSeconds, 1);
    assert.equal(proxy.requests.filter((r) => r.method === "POST").length, 1);
  });

  test("a send whose response was dropped is retried with the same key and sent once", async () => {
    proxy.requests.length = 0;
    let dropped = false;
    proxy.script = (req) => {
      if (req.method === "POST" && !dropped) {
        dropped = true;
        return "drop";
      }
      return undefined;
    };
    const subject = `Once only ${Date.now()}`;
    const sent = await client.messages.send(inboxId, { to: ["ana@example.org"], subject, body_text: "One copy." });
    const posts = proxy.requests.filter((r) => r.method === "POST");
    assert.equal(posts.length, 2, "the dropped attempt and its retry");
    assert.equal(posts[0].headers["idempotency-key"], posts[1].headers["idempotency-key"]);
    const stored = (await mb.messages.list(inboxId, { direction: "outbound", limit: 100 })).data.filter(
      (m) => m.subject === subject,
    );
    assert.equal(stored.length, 1, "one message stored");
    assert.equal(stored[0].id, sent.id);
  });
});

describe("events.stream (SSE)", () => {
  const skip = () => (streamAvailable ? false : "GET /v1/events/stream answers 404 (not merged yet)");

  test("message.received arrives on a live stream", async (t) => {
    if (skip()) return t.skip(skip());
    const inbox = await mb.inboxes.create({ username: "streamed" });
    const stream = mb.events.stream({ types: ["message.*"], inboxId: inbox.id });
    const it = stream[Symbol.asyncIterator]();
    const next = it.next();
    await sleep(500);
    await deliver({ raw: sampleMail({ to: inbox.address, subject: "Live" }), to: inbox.address, url: worker.base });
    const { value } = await next;
    stream.close();
    assert.equal(value.type, "message.received");
    assert.equal(value.data.inbox_id, inbox.id);
  });

  test("resume after a dropped connection: the next events, in order, no duplicate", async (t) => {
    if (skip()) return t.skip(skip());
    const proxy = await startProxy(worker.base);
    try {
      const client = new Mailbot({ apiKey: reg.api_key, baseUrl: proxy.url, retryBaseMs: 20 });
      const [last] = (await mb.events.list({ limit: 1 })).data;
      const stream = client.events.stream({ types: ["inbox.created"], after: last.id });
      const made = [];
      for (let i = 0; i < 3; i++) made.push(await mb.inboxes.create({ username: `resume-${i}` }));
      const seen = [];
      for await (const e of stream) {
        seen.push(e);
        if (seen.length === 1) {
          // Cut every open connection: the client must come back with Last-Event-ID.
          proxy.cut();
        }
        if (seen.length === 3) break;
      }
      stream.close();
      assert.deepEqual(
        seen.map((e) => e.data.inbox_id ?? e.data.id),
        made.map((i) => i.id),
      );
      assert.equal(new Set(seen.map((e) => e.id)).size, 3);
    } finally {
      await proxy.close();
    }
  });
});
