// Reputation benchmark against `wrangler dev` (local, no network): the latency the per-inbox
// InboxCounter check adds to an accepted send (POST /v1/inboxes/:id/messages, 202).
// The warning-header middleware asks the Durable Object while the send runs and reports, in
// `Server-Timing`, how long the lookup took (`reputation`) and how long the response waited for
// it after the handler was done (`reputation-wait`: the latency actually added). Two phases: a
// fresh inbox (no warning), then the same inbox pushed to a bounce-rate warning through the
// relay events receiver (headers present on every send).
// Usage: npm run bench (BENCH_SUITE=reputation for this one only); BENCH_SENDS (default 400),
// BENCH_CONCURRENCY (default 16), BENCH_ACCOUNTS (senders, default 4: one audit hash chain each,
// as in bench/outbound.mjs; one inbox each, so 4 counters).

import { createHmac, randomBytes } from "node:crypto";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const N = positiveInt("BENCH_SENDS", 400);
const C = positiveInt("BENCH_CONCURRENCY", 16);
const ACCOUNTS = positiveInt("BENCH_ACCOUNTS", 4);
const adminToken = randomBytes(24).toString("base64url");
const inboundSecret = randomBytes(24).toString("base64url");

let worker = null;

const pct = (sorted, p) => (sorted.length ? sorted[Math.floor(p * (sorted.length - 1))] : null);
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { p50_ms: pct(s, 0.5), p99_ms: pct(s, 0.99) };
};

function timing(header, name) {
  const m = new RegExp(`(?:^|,\\s*)${name};dur=([0-9.]+)`).exec(header ?? "");
  return m ? Number(m[1]) : null;
}

/** n sends, c in flight; 202s become samples (end-to-end, lookup, added wait, warning seen). */
async function sends(base, accts, n, c, label) {
  const out = { total: [], lookup: [], wait: [], warned: 0, errors: {} };
  let next = 0;
  const run = async () => {
    for (let i = next++; i < n; i = next++) {
      const acct = accts[i % accts.length];
      const t0 = performance.now();
      const res = await fetch(`${base}/v1/inboxes/${acct.inbox.id}/messages`, {
        method: "POST",
        headers: { authorization: `Bearer ${acct.key}`, "content-type": "application/json" },
        body: JSON.stringify({ to: [`reader-${label}-${i}@example.org`], subject: `Bench ${i}`, body_text: "hello" }),
      });
      await res.arrayBuffer();
      if (res.status !== 202) {
        out.errors[res.status] = (out.errors[res.status] ?? 0) + 1;
        continue;
      }
      out.total.push(performance.now() - t0);
      const st = res.headers.get("server-timing");
      const lookup = timing(st, "reputation");
      const wait = timing(st, "reputation-wait");
      if (lookup === null || wait === null) fail(`a 202 without the reputation Server-Timing: ${st}`);
      out.lookup.push(lookup);
      out.wait.push(wait);
      if (res.headers.get("x-mailbot-warning")) out.warned++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, c) }, run));
  return {
    samples: out.total.length,
    send: stats(out.total),
    do_lookup: stats(out.lookup),
    added_wait: stats(out.wait),
    with_warning_header: out.warned,
    errors: out.errors,
  };
}

/** Waits until the consumer (dev transport) has sent every accepted message of the inbox. */
async function settled(base, acct) {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const out = await outbound(base, acct);
    if (out.every((m) => m.status !== "queued" && m.status !== "sending")) {
      const r = await call(base, "GET", `/v1/inboxes/${acct.inbox.id}/reputation`, { token: acct.key });
      return { messages: out, reputation: r.json.data };
    }
    if (Date.now() > deadline) fail("the messages did not leave the queue within 5 minutes", true);
    await new Promise((ok) => setTimeout(ok, 500));
  }
}

async function outbound(base, acct) {
  const all = [];
  let cursor = null;
  do {
    const q = `direction=outbound&limit=100${cursor ? `&cursor=${cursor}` : ""}`;
    const r = await call(base, "GET", `/v1/inboxes/${acct.inbox.id}/messages?${q}`, { token: acct.key });
    if (r.status !== 200) fail(`listing messages answered ${r.status}`, true);
    all.push(...r.json.data);
    cursor = r.json.meta.next_cursor;
  } while (cursor);
  return all;
}

async function relayBounces(base, messageIds) {
  const events = messageIds.map((m) => ({ type: "bounce", message_id: m.id, recipient: m.to[0] }));
  for (let i = 0; i < events.length; i += 100) {
    const body = JSON.stringify({ events: events.slice(i, i + 100) });
    const ts = String(Math.floor(Date.now() / 1000));
    const sig = createHmac("sha256", inboundSecret).update(`${ts}.${body}`).digest("hex");
    const res = await fetch(`${base}/webhooks/inbound/events`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-mailbot-timestamp": ts,
        "x-mailbot-signature": `sha256=${sig}`,
      },
      body,
    });
    if (res.status !== 202) fail(`relay events answered ${res.status}: ${(await res.text()).slice(0, 300)}`, true);
    await res.arrayBuffer();
  }
}

async function main() {
  worker = await startLocalWorker({
    label: "mailbot-bench-reputation",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      BENCH_SERVER_TIMING: "on",
      ADMIN_TOKEN: adminToken,
      INBOUND_SECRET: inboundSecret,
      OUTBOUND_TRANSPORT: "dev",
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({
        sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000, sends_per_inbox_per_day: 1_000_000 },
      }),
    },
  });
  const base = worker.base;
  const accts = [];
  for (let i = 0; i < ACCOUNTS; i++) {
    const r = await call(base, "POST", "/v1/auth/register", {
      body: { email: `bench-rep-${i}-${randomBytes(4).toString("hex")}@example.com` },
    });
    if (r.status !== 201) fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
    const lift = await call(base, "PATCH", `/v1/admin/accounts/${r.json.data.account.id}`, {
      token: adminToken,
      body: { new_account_until: null },
    });
    if (lift.status !== 200) fail(`lifting the send limit answered ${lift.status}`, true);
    accts.push({ key: r.json.data.api_key, inbox: r.json.data.inbox });
  }

  await sends(base, accts, 20, 4, "warmup");
  const fresh = await sends(base, accts, N, C, "fresh");
  // Push every inbox to a bounce-rate warning (about 9 % of its counted sends: at least 1/15, not
  // above 1/10). The sends of the next phase dilute it, so the header count is reported, not required.
  const reps = [];
  for (const acct of accts) {
    const { messages } = await settled(base, acct);
    const sent = messages.filter((m) => m.status === "sent");
    const bounces = Math.floor(sent.length / 11);
    await relayBounces(base, sent.slice(0, bounces));
    const r = await call(base, "GET", `/v1/inboxes/${acct.inbox.id}/reputation`, { token: acct.key });
    if (r.json.data.status !== "warning") fail(`inbox not in warning: ${JSON.stringify(r.json.data)}`);
    reps.push(r.json.data);
  }
  const warned = await sends(base, accts, N, C, "warned");
  const rep = { data: reps[0] };
  await worker.stop();
  worker = null;

  const result = {
    mode: "wrangler dev, local",
    sends_per_phase: N,
    concurrency: C,
    fresh,
    warned,
    accounts: ACCOUNTS,
    reputation_of_first_inbox: rep.data,
  };
  const f = (x) => (x == null ? "n/a" : x.toFixed(2));
  console.log("reputation (InboxCounter check on an accepted send, wrangler dev):");
  for (const [name, p] of [
    ["no warning", fresh],
    ["warning", warned],
  ]) {
    console.log(
      `  ${name.padEnd(10)} send p50 ${f(p.send.p50_ms)} ms p99 ${f(p.send.p99_ms)} ms | DO lookup p50 ${f(p.do_lookup.p50_ms)} ms p99 ${f(p.do_lookup.p99_ms)} ms | added wait p50 ${f(p.added_wait.p50_ms)} ms p99 ${f(p.added_wait.p99_ms)} ms | ${p.with_warning_header}/${p.samples} with X-Mailbot-Warning ${JSON.stringify(p.errors)}`,
    );
  }
  console.log(`BENCH_JSON ${JSON.stringify(result)}`);
  if (warned.with_warning_header === 0) fail("no send of the warning phase had X-Mailbot-Warning");
}

try {
  await main();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await worker?.stop({ keepDir: true });
  console.error(`bench: FAILED${worker ? ` (wrangler log kept in ${worker.dir})` : ""}`);
  process.exit(1);
}
