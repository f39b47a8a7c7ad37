import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { runBatch } from "../../src/db/compiled";
import { eventStatement } from "../../src/features/events/events.service";
import { createAccount, createKey } from "../helpers/accounts";
import { ADMIN_TOKEN, call, expectError } from "../helpers/api";
import { serviceContext } from "../helpers/db";
import { deliver, mail } from "../helpers/mail";

describe("/v1/inboxes", () => {
  it("creates an inbox on the shared domain, audited in the same batch", async () => {
    const a = await createAccount();
    const res = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "Support.Team", display_name: "Support", labels: ["prod"] },
    });
    expect(res.status, res.text).toBe(201);
    expect(res.body.data).toMatchObject({
      id: expect.stringMatching(/^inbox_[0-9a-z]{26}$/),
      username: "support.team",
      domain: "mailbot.test",
      address: `support.team--${a.account.short_id}@mailbot.test`,
      display_name: "Support",
      status: "active",
      disabled_reason: null,
      labels: ["prod"],
    });
    const row = await env.DB.prepare("SELECT address, account_id FROM inboxes WHERE id = ?")
      .bind(res.body.data.id)
      .first();
    expect(row).toEqual({ address: res.body.data.address, account_id: a.account.id });
    const audit = await env.DB.prepare(
      "SELECT actor_type, actor_id, request_id, inbox_id FROM audit_log WHERE action = 'inbox.created' AND target_id = ?",
    )
      .bind(res.body.data.id)
      .first();
    expect(audit).toEqual({
      actor_type: "api_key",
      actor_id: expect.stringMatching(/^key_/),
      request_id: res.headers.get("X-Request-Id"),
      inbox_id: res.body.data.id,
    });
  });

  it("is 409 on a taken address and writes nothing", async () => {
    const a = await createAccount();
    expect((await call("POST", "/v1/inboxes", { key: a.key, body: { username: "twice" } })).status).toBe(201);
    const count = async () =>
      (
        await env.DB.prepare("SELECT COUNT(*) AS n FROM audit_log WHERE account_id = ?")
          .bind(a.account.id)
          .first<{ n: number }>()
      )?.n;
    const before = await count();
    const dup = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "TWICE" } });
    expect(expectError(dup, 409, "address_taken").details.address).toBe(`twice--${a.account.short_id}@mailbot.test`);
    expect(await count()).toBe(before);
  });

  it("validates usernames, domains, labels and unknown fields", async () => {
    const a = await createAccount();
    const bad = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "no spaces!", labels: ["x".repeat(65)], color: "red" },
    });
    const paths = expectError(bad, 422, "validation_error").details.map((d: { path: string }) => d.path);
    expect(paths).toEqual(expect.arrayContaining(["username", "labels.0"]));
    expectError(
      await call("POST", "/v1/inboxes", { key: a.key, body: { username: "x".repeat(65) } }),
      422,
      "validation_error",
    );
    expectError(await call("POST", "/v1/inboxes", { key: a.key, body: {} }), 422, "validation_error");
    const domain = await call("POST", "/v1/inboxes", {
      key: a.key,
      body: { username: "ok", domain: "unverified.example" },
    });
    expect(expectError(domain, 422, "validation_error").details[0].path).toBe("domain");
    expectError(
      await call("PATCH", `/v1/inboxes/${a.inbox.id}`, { key: a.key, body: { username: "rename" } }),
      422,
      "validation_error",
    );
  });

  it("lists newest first with cursor pagination", async () => {
    const a = await createAccount();
    for (const name of ["p1", "p2", "p3"]) await call("POST", "/v1/inboxes", { key: a.key, body: { username: name } });
    const first = await call("GET", "/v1/inboxes?limit=2", { key: a.key });
    expect(first.body.data.map((i: { username: string }) => i.username)).toEqual(["p3", "p2"]);
    expect(first.body.meta).toEqual({ limit: 2, next_cursor: expect.any(String) });
    const second = await call("GET", `/v1/inboxes?limit=2&cursor=${first.body.meta.next_cursor}`, { key: a.key });
    expect(second.body.data.map((i: { username: string }) => i.username)).toEqual(["p1", "sandbox"]);
    expect(second.body.meta.next_cursor).toBeNull();
    expectError(await call("GET", "/v1/inboxes?limit=0", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/inboxes?limit=101", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/inboxes?cursor=%%%", { key: a.key }), 400, "invalid_cursor");
  });

  it("gets, patches, deactivates and re-enables, with audit entries", async () => {
    const a = await createAccount();
    const id = a.inbox.id;
    expect((await call("GET", `/v1/inboxes/${id}`, { key: a.key })).body.data.id).toBe(id);
    expectError(await call("GET", "/v1/inboxes/inbox_missing", { key: a.key }), 404, "not_found");

    const patched = await call("PATCH", `/v1/inboxes/${id}`, {
      key: a.key,
      body: { display_name: "Agent", labels: ["a", "b"] },
    });
    expect(patched.body.data).toMatchObject({ display_name: "Agent", labels: ["a", "b"] });

    const off = await call("DELETE", `/v1/inboxes/${id}`, { key: a.key });
    expect(off.status).toBe(200);
    expect(off.body.data).toMatchObject({ status: "disabled", disabled_reason: "deactivated" });
    // Soft: the row and its data stay.
    expect((await call("GET", `/v1/inboxes/${id}`, { key: a.key })).body.data.display_name).toBe("Agent");

    const on = await call("POST", `/v1/inboxes/${id}/enable`, { key: a.key });
    expect(on.body.data).toMatchObject({ status: "active", disabled_reason: null });

    const actions = await env.DB.prepare("SELECT action FROM audit_log WHERE target_id = ? ORDER BY seq")
      .bind(id)
      .all();
    expect(actions.results.map((r) => r.action)).toEqual([
      "inbox.created",
      "inbox.updated",
      "inbox.deactivated",
      "inbox.enabled",
    ]);
  });

  it("enforces the tier's inbox limit", async () => {
    const a = await createAccount();
    await call("PATCH", `/v1/admin/accounts/${a.account.id}`, { key: ADMIN_TOKEN, body: { tier: "tight" } });
    expect((await call("POST", "/v1/inboxes", { key: a.key, body: { username: "second" } })).status).toBe(201);
    expectError(
      await call("POST", "/v1/inboxes", { key: a.key, body: { username: "third" } }),
      403,
      "inbox_limit_reached",
    );
  });
});

type Wire = { id: string; type: string; created_at: string; account_id: string; data: Record<string, unknown> };

const list = async (key: string, query = "") => {
  const res = await call("GET", `/v1/events${query}`, { key });
  expect(res.status, res.text).toBe(200);
  return res.body as { data: Wire[]; meta: { limit: number; next_cursor: string | null } };
};

describe("the event log", () => {
  it("inbox changes and received mail are events, with the wire shape of API.md", async () => {
    const a = await createAccount("log");
    const created = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "support" } });
    const inboxId = created.body.data.id as string;
    await call("DELETE", `/v1/inboxes/${inboxId}`, { key: a.key });
    await call("POST", `/v1/inboxes/${inboxId}/enable`, { key: a.key });
    await deliver(
      mail({
        to: created.body.data.address,
        subject: "With a file",
        contentType: 'multipart/mixed; boundary="b1"',
        body: [
          "--b1",
          "Content-Type: text/html; charset=utf-8",
          "",
          "<p>Hello <b>there</b></p>",
          "--b1",
          'Content-Type: text/csv; name="a.csv"',
          'Content-Disposition: attachment; filename="a.csv"',
          "",
          "x,y",
          "--b1--",
          "",
        ].join("\r\n"),
      }),
      created.body.data.address,
    );

    const { data, meta } = await list(a.key);
    expect(data.map((e) => e.type)).toEqual([
      "message.received",
      "inbox.enabled",
      "inbox.disabled",
      "inbox.created",
      "inbox.created", // the sandbox inbox of the registration
    ]);
    expect(meta).toEqual({ limit: 20, next_cursor: null });
    for (const e of data) {
      expect(Object.keys(e).sort()).toEqual(["account_id", "created_at", "data", "id", "type"]);
      expect(e.id).toMatch(/^evt_/);
      expect(e.account_id).toBe(a.account.id);
      expect(new Date(e.created_at).toISOString()).toBe(e.created_at);
    }
    expect(data[1]?.data).toEqual({
      inbox_id: inboxId,
      address: created.body.data.address,
      status: "active",
      disabled_reason: null,
    });
    expect(data[2]?.data).toMatchObject({ inbox_id: inboxId, status: "disabled", disabled_reason: "deactivated" });
    const received = data[0] as Wire;
    expect(received.data).toMatchObject({
      message_id: expect.stringMatching(/^msg_/),
      inbox_id: inboxId,
      thread_id: expect.stringMatching(/^thr_/),
      from_address: "ana@example.org",
      to: [created.body.data.address],
      subject: "With a file",
      body_html: expect.stringContaining("<b>there</b>"),
      attachments: [
        {
          id: expect.stringMatching(/^att_/),
          filename: "a.csv",
          content_type: "text/csv",
          size: expect.any(Number),
          content_id: null,
          disposition: "attachment",
        },
      ],
    });
    expect(received.data).toHaveProperty("body_text");

    // The audit entries name their events.
    const audit = await call("GET", "/v1/audit-log?action=inbox.created", { key: a.key });
    expect(audit.body.data[0].metadata.event_id).toBe(data[3]?.id);

    const one = await call("GET", `/v1/events/${received.id}`, { key: a.key });
    expect(one.body.data).toEqual(received);
    expectError(await call("GET", "/v1/events/evt_00000000000000000000000000", { key: a.key }), 404, "not_found");
  });

  it("filters by type, inbox and thread, and pages newest first with a cursor", async () => {
    const a = await createAccount("filters");
    const other = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "other" } });
    await deliver(mail({ to: a.inbox.address, subject: "one" }), a.inbox.address);
    await deliver(mail({ to: a.inbox.address, subject: "two" }), a.inbox.address);
    await deliver(mail({ to: other.body.data.address, subject: "three" }), other.body.data.address);

    const received = await list(a.key, "?type=message.received");
    expect(received.data.map((e) => e.data.subject)).toEqual(["three", "two", "one"]);
    const inSandbox = await list(a.key, `?inbox_id=${a.inbox.id}&type=message.received`);
    expect(inSandbox.data.map((e) => e.data.subject)).toEqual(["two", "one"]);
    const threadId = inSandbox.data[1]?.data.thread_id as string;
    expect((await list(a.key, `?thread_id=${threadId}`)).data.map((e) => e.data.subject)).toEqual(["one"]);

    const page1 = await list(a.key, "?limit=2");
    expect(page1.data).toHaveLength(2);
    expect(page1.meta.next_cursor).not.toBeNull();
    const page2 = await list(a.key, `?limit=2&cursor=${page1.meta.next_cursor}`);
    const page3 = await list(a.key, `?limit=2&cursor=${page2.meta.next_cursor}`);
    const all = [...page1.data, ...page2.data, ...page3.data].map((e) => e.id);
    expect(all).toEqual([...all].sort().reverse());
    expect(new Set(all).size).toBe(5);
    expect(page3.meta.next_cursor).toBeNull();

    expectError(await call("GET", "/v1/events?type=message.exploded", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/events?wait=31", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/events?after=msg_1", { key: a.key }), 422, "validation_error");
    expectError(await call("GET", "/v1/events?cursor=!!", { key: a.key }), 400, "invalid_cursor");
  });

  it("after= pages forward oldest first, by commit order even when ids were minted out of order", async () => {
    const a = await createAccount("forward");
    const start = (await list(a.key)).data[0] as Wire;
    await deliver(mail({ to: a.inbox.address, subject: "m1" }), a.inbox.address);
    await deliver(mail({ to: a.inbox.address, subject: "m2" }), a.inbox.address);
    const forward = await list(a.key, `?after=${start.id}`);
    expect(forward.data.map((e) => e.data.subject)).toEqual(["m1", "m2"]);

    // A change that began earlier (its event id is older) but committed later is still "after".
    const ctx = serviceContext(a.account.id, { now: () => Date.now() - 60_000 });
    const late = eventStatement(ctx, "inbox.enabled", { inboxId: a.inbox.id }, { inbox_id: a.inbox.id });
    await runBatch(ctx.db, [late.statement]);
    const last = forward.data.at(-1) as Wire;
    expect(late.id < last.id).toBe(true);
    const next = await list(a.key, `?after=${last.id}`);
    expect(next.data.map((e) => e.id)).toEqual([late.id]);
    expect((await list(a.key, `?after=${late.id}`)).data).toEqual([]);
  });

  it("wait= long-polls: answers as soon as a newer event exists, else an empty list", async () => {
    const a = await createAccount("poll");
    const last = (await list(a.key)).data[0] as Wire;
    const empty = await list(a.key, `?after=${last.id}&wait=1`);
    expect(empty.data).toEqual([]);

    const polling = list(a.key, `?after=${last.id}&wait=20&type=message.received`);
    await new Promise((r) => setTimeout(r, 300));
    await deliver(mail({ to: a.inbox.address, subject: "wake up" }), a.inbox.address);
    const woke = await polling;
    expect(woke.data.map((e) => e.data.subject)).toEqual(["wake up"]);
  });

  it("a restricted key sees only its inboxes' events; scopes apply", async () => {
    const a = await createAccount("restricted");
    const other = await call("POST", "/v1/inboxes", { key: a.key, body: { username: "elsewhere" } });
    await deliver(mail({ to: other.body.data.address, subject: "not yours" }), other.body.data.address);
    await deliver(mail({ to: a.inbox.address, subject: "yours" }), a.inbox.address);
    const rk = (await createKey(a, { name: "sandbox only", inbox_ids: [a.inbox.id], scopes: ["read"] })).key;
    const seen = await list(rk);
    expect(seen.data.every((e) => e.data.inbox_id === a.inbox.id)).toBe(true);
    expect(JSON.stringify(seen)).not.toContain("not yours");
    const hidden = (await list(a.key, "?type=message.received")).data.find((e) => e.data.subject === "not yours");
    expectError(await call("GET", `/v1/events/${hidden?.id}`, { key: rk }), 404, "not_found");
    expectError(
      await call("POST", `/v1/events/${seen.data[0]?.id}/replay`, { key: rk, body: {} }),
      403,
      "insufficient_scope",
    );

    const sendOnly = await createKey(a, { name: "send", scopes: ["send"] });
    expectError(await call("GET", "/v1/events", { key: sendOnly.key }), 403, "insufficient_scope");
    expectError(await call("GET", "/v1/events"), 401, "missing_api_key");
  });
});
