// Sender-authentication benchmark:
//  1. what the pre-send policy (SPF/DKIM/DMARC gate + phishing scorer + recent-send lookup) adds
//     to an accepted send (POST /v1/inboxes/:id/messages, 202). Three `wrangler dev` instances run
//     side by side and are measured in alternating rounds: policy off (the Outbound issue's send
//     figure), policy on with a warm DNS cache (answers from memory), and policy on with a cold
//     cache (every lookup waits BENCH_DNS_DELAY_MS, default 20 ms, as a DoH round trip would).
//     Target: warm p50 - off p50 < 5 ms.
//  2. the phishing scorer on the labelled set (test/fixtures/phishing): detection rate, false
//     positives (targets >= 95 %, <= 2 %) and time per message (in Node, same code as the Worker).
// Usage: npm run bench (BENCH_SUITE=sender-auth for this one only); BENCH_SENDS (per round and
// variant, default 200), BENCH_CONCURRENCY (default 1: latency, not throughput), BENCH_DNS_DELAY_MS.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { scorePhishing } from "../src/features/sender-auth/phishing.ts";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const N = positiveInt("BENCH_SENDS", 200);
const C = positiveInt("BENCH_CONCURRENCY", 1);
const DELAY_MS = positiveInt("BENCH_DNS_DELAY_MS", 20);
const ROUNDS = 2;
const WARMUP = 20;
const adminToken = randomBytes(24).toString("base64url");

const workers = [];

async function start(label, vars) {
  const w = await startLocalWorker({
    label: `mailbot-bench-${label}`,
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      REGISTRATIONS_PER_HOUR: "0",
      OUTBOUND_TRANSPORT: "dev",
      TIER_LIMITS: JSON.stringify({
        sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000, sends_per_inbox_per_day: 1_000_000 },
      }),
      ...vars,
    },
  });
  workers.push(w);
  return w.base;
}

/** One account with the new-account send limit lifted, and its sandbox inbox. */
async function sender(base) {
  const r = await call(base, "POST", "/v1/auth/register", {
    body: { email: `bench-sa-${randomBytes(4).toString("hex")}@example.com` },
  });
  if (r.status !== 201) fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  const lift = await call(base, "PATCH", `/v1/admin/accounts/${r.json.data.account.id}`, {
    token: adminToken,
    body: { new_account_until: null },
  });
  if (lift.status !== 200) fail(`lifting the send limit answered ${lift.status}`, true);
  return { base, key: r.json.data.api_key, inbox: r.json.data.inbox };
}

let sendSeq = 0;
const send = (s) => {
  const i = sendSeq++;
  return fetch(`${s.base}/v1/inboxes/${s.inbox.id}/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${s.key}`, "content-type": "application/json" },
    body: JSON.stringify({
      to: [`reader${i}@example.org`],
      subject: `Bench ${i}`,
      body_text: `Message ${i}: the report is at https://reports.example.com/${i}\n${"lorem ipsum ".repeat(40)}`,
    }),
  });
};

/** n sends, c in flight; only 202 answers become samples. */
async function load(s, n, c) {
  const samples = [];
  const statuses = {};
  let next = 0;
  const run = async () => {
    for (let i = next++; i < n; i = next++) {
      const t0 = performance.now();
      const res = await send(s);
      await res.arrayBuffer();
      if (res.status === 202) samples.push(performance.now() - t0);
      else statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, c) }, run));
  return { samples, statuses };
}

const pct = (sorted, p) => sorted[Math.floor(p * (sorted.length - 1))];

function summary(runs) {
  const sorted = runs.flatMap((r) => r.samples).sort((a, b) => a - b);
  const errors = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.statuses)) errors[k] = (errors[k] ?? 0) + v;
  return { samples: sorted.length, p50_ms: pct(sorted, 0.5), p99_ms: pct(sorted, 0.99), errors };
}

function phishingBench() {
  const { messages } = JSON.parse(readFileSync(new URL("../test/fixtures/phishing/labelled.json", import.meta.url)));
  const input = (m) => ({
    subject: m.subject,
    text: m.text ?? null,
    html: m.html ?? null,
    attachments: m.attachments ?? [],
  });
  const phish = messages.filter((m) => m.label === "phish");
  const ham = messages.filter((m) => m.label === "ham");
  const detected = phish.filter((m) => scorePhishing(input(m)).blocked).length;
  const falsePositives = ham.filter((m) => scorePhishing(input(m)).blocked).length;
  const inputs = messages.map(input);
  for (let i = 0; i < 200; i++) for (const x of inputs) scorePhishing(x);
  const passes = 2000;
  const t0 = performance.now();
  for (let i = 0; i < passes; i++) for (const x of inputs) scorePhishing(x);
  const perMessageUs = ((performance.now() - t0) * 1000) / (passes * inputs.length);
  return {
    messages: messages.length,
    phishing: phish.length,
    ordinary: ham.length,
    detection_rate: detected / phish.length,
    false_positive_rate: falsePositives / ham.length,
    us_per_message: perMessageUs,
  };
}

async function main() {
  const phishing = phishingBench();

  const [offBase, warmBase, coldBase] = await Promise.all([
    start("policy-off", { BENCH_SEND_POLICY: "off" }),
    start("policy-warm", {}),
    start("policy-cold", { BENCH_DNS_DELAY_MS: String(DELAY_MS) }),
  ]);
  const variants = [
    { name: "policy off (outbound send figure)", s: await sender(offBase), runs: [] },
    { name: "gate + scorer, warm DNS cache", s: await sender(warmBase), runs: [] },
    { name: `gate + scorer, cold DNS (${DELAY_MS} ms/lookup)`, s: await sender(coldBase), runs: [] },
  ];
  for (const v of variants) await load(v.s, WARMUP, 1);
  // Alternate round by round, so drift (JIT, GC, SQLite cache, other load) hits every variant alike.
  for (let round = 0; round < ROUNDS; round++) {
    for (const v of variants) v.runs.push(await load(v.s, N, C));
  }
  await Promise.all(workers.map((w) => w.stop()));
  workers.length = 0;

  const [off, warm, cold] = variants.map((v) => ({ name: v.name, ...summary(v.runs) }));
  const f = (x, d = 2) => (x == null ? "n/a" : x.toFixed(d));
  const result = {
    mode: "wrangler dev, local, OUTBOUND_TRANSPORT=dev, shared MAIL_DOMAIN (records from configuration)",
    sends_per_round: N,
    rounds: ROUNDS,
    concurrency: C,
    dns_delay_ms: DELAY_MS,
    policy_off: off,
    warm,
    cold,
    added_p50_warm_ms: warm.p50_ms - off.p50_ms,
    added_p50_cold_ms: cold.p50_ms - off.p50_ms,
    phishing,
  };
  console.log(
    `mailbot sender-auth bench (wrangler dev, local) — ${N} sends x ${ROUNDS} rounds per variant, concurrency ${C}`,
  );
  for (const v of [off, warm, cold]) {
    console.log(
      `${v.name.padEnd(42)} p50 ${f(v.p50_ms)} ms  p99 ${f(v.p99_ms)} ms  errors ${JSON.stringify(v.errors)}`,
    );
  }
  console.log(`added p50, warm cache: ${f(result.added_p50_warm_ms)} ms   (target < 5 ms)`);
  console.log(`added p50, cold cache: ${f(result.added_p50_cold_ms)} ms   (lookups run in parallel)`);
  console.log(
    `phishing scorer on ${phishing.messages} labelled messages: detection ${f(phishing.detection_rate * 100, 1)} % ` +
      `(target >= 95), false positives ${f(phishing.false_positive_rate * 100, 1)} % (target <= 2), ` +
      `${f(phishing.us_per_message, 1)} µs per message`,
  );
  console.log(`BENCH_JSON ${JSON.stringify(result)}`);
  if (!off.samples || !warm.samples || !cold.samples) fail("a variant had no accepted send; see the errors above");
}

try {
  await main();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  for (const w of workers) {
    if (err?.showLog) console.error(`--- last 60 lines of ${w.logPath} ---\n${w.tail()}`);
    await w.stop({ keepDir: true });
  }
  process.exit(1);
}
