import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createDb } from "../../src/db/client";
import { webhookDispatches } from "../../src/db/schema";
import { getAccountById } from "../../src/features/accounts/accounts.service";
import { CreateInboxInput } from "../../src/features/inboxes/inboxes.schemas";
import { createInbox } from "../../src/features/inboxes/inboxes.service";
import { attemptDispatch, readPrefix } from "../../src/features/webhooks/attempt";
import { newDispatch, sweepWebhooks } from "../../src/features/webhooks/dispatch";
import { systemContext } from "../../src/lib/context";
import { type DnsType, type ResolveOptions, type Resolver, setDnsResolver, staticResolver } from "../../src/lib/dns";
import { createAccount } from "../helpers/accounts";
import { call, expectError } from "../helpers/api";
import { auditEntries, countRows, jobContext, serviceContext } from "../helpers/db";
import { endpointOnReceiver, receiver } from "../helpers/webhooks";

afterEach(() => {
  setDnsResolver(null);
  vi.restoreAllMocks();
});

const liveEndpoints = (accountId: string) =>
  countRows("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE account_id = ? AND deleted_at IS NULL", accountId);

describe("14. webhook fan-out is bounded", () => {
  it("sandbox accounts get at most 10 endpoints (403 webhook_limit_reached), exactly, even when created at once", async () => {
    const a = await createAccount("hook-cap");
    const hook = receiver();
    const create = () => call("POST", "/v1/webhooks", { key: a.key, body: { url: hook.url, events: ["*"] } });
    for (let i = 0; i < 7; i++) expect((await create()).status).toBe(201);
    // Six more at once with three places left: check-then-insert would let them all in.
    const burst = await Promise.all(Array.from({ length: 6 }, create));
    const statuses = burst.map((r) => r.status).sort();
    expect(statuses).toEqual([201, 201, 201, 403, 403, 403]);
    const refused = burst.find((r) => r.status === 403);
    if (refused) expectError(refused, 403, "webhook_limit_reached");
    expect(refused?.body.error.details).toEqual({ max_webhooks: 10 });
    expect(await liveEndpoints(a.account.id)).toBe(10);
    expect(await auditEntries({ accountId: a.account.id, action: "webhook.created" })).toHaveLength(10);
    // A deleted endpoint frees its place.
    const list = await call("GET", "/v1/webhooks?limit=1", { key: a.key });
    expect((await call("DELETE", `/v1/webhooks/${list.body.data[0].id}`, { key: a.key })).status).toBe(200);
    expect((await create()).status).toBe(201);
    expectError(await create(), 403, "webhook_limit_reached");
    // The account shows its caps.
    const account = await call("GET", "/v1/account", { key: a.key });
    expect(account.body.data.limits).toMatchObject({ max_webhooks: 10, webhook_deliveries_per_minute: 300 });
  });

  it("deliveries per account per minute: over the budget a dispatch waits, without using an attempt", async () => {
    const a = await createAccount("hook-budget");
    const { webhook } = await endpointOnReceiver(a.key); // its test delivery takes one slot
    const testEvent = await env.DB.prepare(
      "SELECT event_id FROM webhook_dispatches WHERE endpoint_id = ? AND kind = 'test'",
    )
      .bind(webhook.id)
      .first<{ event_id: string }>();
    const db = createDb(env.DB);
    const rows = [0, 1].map(() =>
      newDispatch(
        { accountId: a.account.id, endpointId: webhook.id, eventId: testEvent?.event_id ?? "", kind: "replay" },
        Date.now(),
      ),
    );
    for (const row of rows) await db.insert(webhookDispatches).values(row).run();
    const budget = JSON.stringify({ sandbox: { webhook_deliveries_per_minute: 2 } });
    const ctx = systemContext({ ...env, TIER_LIMITS: budget });
    const [first, second] = rows as [(typeof rows)[0], (typeof rows)[0]];
    expect(await attemptDispatch(ctx, first.id)).toEqual({ done: true });
    const waited = await attemptDispatch(ctx, second.id);
    expect(waited).toMatchObject({ done: false });
    expect((waited as { retryInSeconds: number }).retryInSeconds).toBeGreaterThan(0);
    const row = await env.DB.prepare("SELECT attempts, status FROM webhook_dispatches WHERE id = ?")
      .bind(second.id)
      .first<{ attempts: number; status: string }>();
    expect(row).toEqual({ attempts: 0, status: "pending" });
  });

  it("the sweep isolates a failing account's fan-out and keeps going for the others", async () => {
    const bad = await createAccount("sweep-bad");
    const good = await createAccount("sweep-good");
    // An endpoint row the fan-out cannot read (corrupt JSON): this account's fan-out throws.
    const now = Date.now();
    await env.DB.prepare(
      "INSERT INTO webhook_endpoints (id, account_id, url, events, enabled, secret, created_at, updated_at) VALUES (?, ?, 'https://x.example.com/h', 'not json', 1, 's', ?, ?)",
    )
      .bind(`whk_broken${crypto.randomUUID().replace(/-/g, "").slice(0, 16)}`, bad.account.id, now, now)
      .run();
    for (const id of [bad.account.id, good.account.id]) {
      await env.DB.prepare(
        "UPDATE events SET dispatched_at = NULL, created_at = created_at - 600000 WHERE account_id = ?",
      )
        .bind(id)
        .run();
    }
    const result = await sweepWebhooks(jobContext());
    expect(result.events).toBeGreaterThanOrEqual(1);
    const pending = (id: string) =>
      countRows("SELECT COUNT(*) AS n FROM events WHERE account_id = ? AND dispatched_at IS NULL", id);
    expect(await pending(good.account.id)).toBe(0);
    expect(await pending(bad.account.id)).toBeGreaterThan(0);
    // Clean up so later sweeps in this file do not meet the broken row.
    await env.DB.prepare("DELETE FROM webhook_endpoints WHERE account_id = ?").bind(bad.account.id).run();
  });
});

describe("15. a receiver's response body is read only as far as it is kept", () => {
  it("reads at most the limit from an endless body, then cancels it", async () => {
    let pulled = 0;
    let cancelled = false;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(new TextEncoder().encode("x".repeat(1024)));
      },
      cancel() {
        cancelled = true;
      },
    });
    const text = await readPrefix(new Response(endless, { status: 500 }), 300);
    expect(text).toBe("x".repeat(300));
    expect(cancelled).toBe(true);
    expect(pulled).toBeLessThanOrEqual(3);
  });
});

describe("16. DNS is resolved again, fresh, at every delivery attempt", () => {
  it("a host that rebinds to a private address after it was saved is refused at delivery", async () => {
    const asked: { name: string; type: DnsType; fresh: boolean }[] = [];
    let answer = "93.184.216.34";
    const rebinding: Resolver = {
      async resolve(name: string, type: DnsType, options?: ResolveOptions) {
        asked.push({ name, type, fresh: options?.fresh === true });
        return staticResolver({ [name]: { A: [answer], AAAA: [] } }).resolve(name, type, options);
      },
    };
    setDnsResolver(rebinding);
    const fetched: string[] = [];
    const real = globalThis.fetch;
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      if (url.hostname.endsWith(".example.com")) {
        fetched.push(url.hostname);
        return new Response("ok");
      }
      return real(input, init);
    });
    const a = await createAccount("rebind");
    const host = `rebind-${crypto.randomUUID().slice(0, 8)}.example.com`;
    const created = await call("POST", "/v1/webhooks", { key: a.key, body: { url: `https://${host}/hook` } });
    expect(created.status, created.text).toBe(201);
    await vi.waitFor(() => expect(fetched).toContain(host), { timeout: 10_000 }); // the test event went out
    const db = createDb(env.DB);
    const event = await env.DB.prepare("SELECT event_id FROM webhook_dispatches WHERE endpoint_id = ?")
      .bind(created.body.data.id)
      .first<{ event_id: string }>();
    const replay = newDispatch(
      { accountId: a.account.id, endpointId: created.body.data.id, eventId: event?.event_id ?? "", kind: "replay" },
      Date.now(),
    );
    await db.insert(webhookDispatches).values(replay).run();
    answer = "10.0.0.7"; // the attacker's DNS now points the name inside
    asked.length = 0;
    const before = fetched.length;
    await attemptDispatch(jobContext(), replay.id);
    expect(fetched.length).toBe(before); // nothing was sent
    expect(asked.filter((q) => q.name === host).every((q) => q.fresh)).toBe(true);
    expect(asked.some((q) => q.name === host)).toBe(true);
    const delivery = await env.DB.prepare("SELECT error FROM webhook_deliveries WHERE dispatch_id = ?")
      .bind(replay.id)
      .first<{ error: string }>();
    expect(delivery?.error).toMatch(/url refused: .*10\.0\.0\.7/);
  });
});

describe("18. an InboxCounter is not created for inbox ids nobody owns", () => {
  it("requests naming another account's or a made-up inbox leave no Durable Object storage", async () => {
    const a = await createAccount("counter-owner");
    const b = await createAccount("counter-prober");
    const madeUp = `inbox_${"0123456789abcdefghjkmnpqrs".slice(0, 26)}`;
    for (const id of [madeUp, a.inbox.id]) {
      expectError(await call("GET", `/v1/inboxes/${id}/messages`, { key: b.key }), 404, "not_found");
      expectError(await call("GET", `/v1/inboxes/${id}/reputation`, { key: b.key }), 404, "not_found");
    }
    const tables = await runInDurableObject(env.INBOX_COUNTER.getByName(madeUp), async (_instance, state) =>
      state.storage.sql
        .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%'")
        .toArray()
        .map((r) => r.name),
    );
    expect(tables).toEqual([]);
    // The owner still reads its reputation.
    const own = await call("GET", `/v1/inboxes/${a.inbox.id}/reputation`, { key: a.key });
    expect(own.status, own.text).toBe(200);
  });
});

describe("19. the tier's inbox limit is exact under concurrency", () => {
  it("twelve concurrent creates with nine places left make exactly nine inboxes", async () => {
    const a = await createAccount("inbox-race");
    const account = await getAccountById(createDb(env.DB), a.account.id);
    const ctx = serviceContext(a.account.id, { actor: { type: "api_key", id: a.keyId } });
    const results = await Promise.allSettled(
      Array.from({ length: 12 }, (_, i) =>
        createInbox(ctx, account, CreateInboxInput.parse({ username: `race${i}-${crypto.randomUUID().slice(0, 4)}` })),
      ),
    );
    const made = results.filter((r) => r.status === "fulfilled").length;
    const refusals = results.flatMap((r) => (r.status === "rejected" ? [r.reason as { code: string }] : []));
    expect(made).toBe(9);
    expect(refusals.map((e) => e.code)).toEqual(["inbox_limit_reached", "inbox_limit_reached", "inbox_limit_reached"]);
    expect(await countRows("SELECT COUNT(*) AS n FROM inboxes WHERE account_id = ?", a.account.id)).toBe(10);
    expect(await auditEntries({ accountId: a.account.id, action: "inbox.created" })).toHaveLength(10);
  });
});

describe("20. verified domains are released", () => {
  type Table = Record<string, Partial<Record<DnsType, string[]>>>;
  const published = (records: { type: DnsType; name: string; value: string }[]): Table => {
    const table: Table = {};
    for (const r of records) {
      const entry = table[r.name] ?? {};
      entry[r.type] = [...(entry[r.type] ?? []), r.value];
      table[r.name] = entry;
    }
    return table;
  };
  async function claim(name: string) {
    const a = await createAccount("domain-claim");
    const added = await call("POST", "/v1/domains", { key: a.key, body: { domain: name } });
    expect(added.status, added.text).toBe(201);
    setDnsResolver(staticResolver(published(added.body.data.dns_records)));
    const verified = await call("POST", `/v1/domains/${added.body.data.id}/verify`, { key: a.key });
    expect(verified.status, verified.text).toBe(200);
    return { ...a, domainId: added.body.data.id as string, verify: verified.body.data };
  }

  it("closing an account releases its verified domains, audited, so a new owner can verify them", async () => {
    const name = `closing-${crypto.randomUUID().slice(0, 6)}.example`;
    const old = await claim(name);
    expect(old.verify.status).toBe("verified");
    expect((await call("DELETE", "/v1/account", { key: old.key })).status).toBe(200);
    const row = await env.DB.prepare("SELECT status FROM domains WHERE id = ?")
      .bind(old.domainId)
      .first<{ status: string }>();
    expect(row?.status).toBe("pending");
    const [released] = await auditEntries({ accountId: old.account.id, action: "domain.released" });
    expect(released?.metadata).toMatchObject({ domain: name, reason: "account_closed" });
    const next = await claim(name);
    expect(next.verify.status).toBe("verified");
  });

  it("a fresh DNS proof by a new owner wins over a stale claim, audited on both accounts", async () => {
    const name = `sold-${crypto.randomUUID().slice(0, 6)}.example`;
    const old = await claim(name);
    expect(old.verify.status).toBe("verified");
    // The domain changed hands; the new owner publishes its own records (its own DKIM key).
    const next = await claim(name);
    expect(next.verify.status).toBe("verified");
    const oldRow = await call("GET", `/v1/domains/${old.domainId}`, { key: old.key });
    expect(oldRow.body.data).toMatchObject({ status: "pending", dkim_verified: false });
    const [released] = await auditEntries({ accountId: old.account.id, action: "domain.released" });
    expect(released?.metadata).toMatchObject({ domain: name, reason: "fresh_proof_by_another_account" });
    const [won] = await auditEntries({ accountId: next.account.id, action: "domain.verified" });
    expect(won?.metadata).toMatchObject({ replaced_stale_claim: true });
    // The old holder cannot take it back without the DNS: its records are gone.
    const back = await call("POST", `/v1/domains/${old.domainId}/verify`, { key: old.key });
    expect(back.body.data.status).toBe("pending");
  });
});
