// Latency benchmark: unauthenticated GET /health versus authenticated GET /v1/inboxes on a
// local `wrangler dev`, plus the operator counters that show how often Argon2 ran.
// Usage: npm run bench   (env BENCH_REQUESTS, default 2000; BENCH_CONCURRENCY, default 16)
// Then runs the inbound (bench/inbound.mjs), webhook (bench/webhooks.mjs) and outbound
// (bench/outbound.mjs) benches, each on a wrangler dev of its own.
// BENCH_SUITE=latency|inbound|webhooks|outbound|mcp|sender-auth|reputation|realtime|screening runs only that one (bench/mcp.mjs:
// /mcp tool calls; bench/sender-auth.mjs: gate latency, phishing scorer rates; bench/reputation.mjs: the
// latency the InboxCounter check adds to an accepted send; bench/realtime.mjs: event → SSE/WebSocket client
// latency and the cost of 100 idle streams).

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const ROUNDS = 2;
const WARMUP = 20;
const KEYS = 3;

const N = positiveInt("BENCH_REQUESTS", 2000);
const C = positiveInt("BENCH_CONCURRENCY", 16);
const adminToken = randomBytes(24).toString("base64url");

let worker = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    console.error(`bench: interrupted (${sig}); stopping wrangler`);
    await worker?.stop();
    process.exit(130);
  });
}

async function startWorker() {
  // Limits high enough that the measured load is never rate limited; registration unthrottled.
  const tierLimits = JSON.stringify({ sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000 } });
  worker = await startLocalWorker({
    label: "mailbot-bench",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: tierLimits,
    },
  });
  return worker.base;
}

async function stats(base) {
  const r = await call(base, "GET", "/v1/admin/stats", { token: adminToken });
  if (r.status !== 200 || !r.json?.data)
    fail(`GET /v1/admin/stats answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  return r.json.data;
}

/**
 * Sends n requests with c in flight at a time. Global fetch (undici) keeps connections alive,
 * and every body is read so its connection can be reused. Only 2xx answers become samples.
 */
async function load(url, tokens, n, c) {
  const samples = [];
  const statuses = {};
  let next = 0;
  let errors = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const headers = tokens ? { authorization: `Bearer ${tokens[i % tokens.length]}` } : {};
      const t0 = performance.now();
      try {
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        const ms = performance.now() - t0;
        if (res.ok) samples.push(ms);
        else {
          errors++;
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        }
      } catch (err) {
        errors++;
        const key = err.cause?.code ?? err.name;
        statuses[key] = (statuses[key] ?? 0) + 1;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(c, n) }, worker));
  return { samples, errors, statuses, ms: performance.now() - t0 };
}

const pct = (sorted, p) => sorted[Math.floor(p * (sorted.length - 1))];

function summarize(runs) {
  const sorted = runs.flatMap((r) => r.samples).sort((a, b) => a - b);
  const ms = runs.reduce((s, r) => s + r.ms, 0);
  const statuses = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  return {
    samples: sorted.length,
    p50_ms: sorted.length ? pct(sorted, 0.5) : null,
    p99_ms: sorted.length ? pct(sorted, 0.99) : null,
    // Successful requests per second of wall time, so fast error answers cannot inflate it.
    rps: sorted.length / (ms / 1000),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    error_statuses: statuses,
  };
}

async function main() {
  const base = await startWorker();
  const keys = [];
  for (let i = 1; i <= KEYS; i++) {
    const email = `bench-${i}-${randomBytes(6).toString("hex")}@example.com`;
    const r = await call(base, "POST", "/v1/auth/register", { body: { email } });
    if (r.status !== 201 || !r.json?.data?.api_key)
      fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
    keys.push(r.json.data.api_key);
  }

  const before = await stats(base);
  const endpoints = [
    { name: "GET /health", url: `${base}/health`, tokens: null },
    { name: "GET /v1/inboxes", url: `${base}/v1/inboxes`, tokens: keys },
  ];
  for (const e of endpoints) {
    const w = await load(e.url, e.tokens, WARMUP, C);
    if (w.errors)
      console.error(`bench: warning: warm-up of ${e.name} had ${w.errors} errors ${JSON.stringify(w.statuses)}`);
  }
  // Read again after warm-up, so cold-cache Argon2 work can be told apart from steady state.
  const warm = await stats(base);
  // Alternate the endpoints round by round, so slow drift (JIT, GC, SQLite cache) hits both alike.
  const runs = endpoints.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, e] of endpoints.entries()) runs[i].push(await load(e.url, e.tokens, N, C));
  }
  const after = await stats(base);
  await worker.stop();

  const [health, inboxes] = runs.map(summarize);
  const ratio = (a, b) => (a != null && b ? a / b : null);
  // Counters belong to one isolate; if it was replaced mid-run, only the new one's count is known.
  // isolate_started_at alone cannot tell (Date.now() is 0 at a Worker's global scope, so it reads
  // 1970-01-01), hence the check for counters going backwards too.
  const snaps = [before, warm, after];
  const total = (s) => s.argon2_verifications + s.key_cache_hits;
  const restarted =
    new Set(snaps.map((s) => s.isolate_started_at)).size > 1 ||
    snaps.some((s, i) => i > 0 && total(s) < total(snaps[i - 1]));
  const delta = (a, b, field) => (restarted ? b[field] : b[field] - a[field]);
  const argon2 = delta(before, after, "argon2_verifications");
  const result = {
    mode: "wrangler dev, local",
    requests_per_round: N,
    rounds: ROUNDS,
    concurrency: C,
    warmup_per_endpoint: WARMUP,
    health,
    inboxes,
    p50_ratio: ratio(inboxes.p50_ms, health.p50_ms),
    p99_ratio: ratio(inboxes.p99_ms, health.p99_ms),
    argon2_verifications: argon2,
    argon2_verifications_warmup: restarted ? null : delta(before, warm, "argon2_verifications"),
    argon2_verifications_measured: restarted ? null : delta(warm, after, "argon2_verifications"),
    key_cache_hits: delta(before, after, "key_cache_hits"),
    key_cache_hits_measured: restarted ? null : delta(warm, after, "key_cache_hits"),
    keys: KEYS,
    isolate_restarted: restarted,
  };

  const f = (x, d = 2) => (x == null ? "n/a" : x.toFixed(d));
  const line = (name, s) =>
    `${name.padEnd(17)} p50 ${f(s.p50_ms)} ms  p99 ${f(s.p99_ms)} ms  rps ${f(s.rps, 0)}  errors ${s.errors}` +
    (s.errors ? ` ${JSON.stringify(s.error_statuses)}` : "");
  console.log(`mailbot bench (wrangler dev, local) — ${N} requests x ${ROUNDS} rounds per endpoint, concurrency ${C}`);
  console.log(line("GET /health", health));
  console.log(line("GET /v1/inboxes", inboxes));
  console.log(`p50 ratio (inboxes/health): ${f(result.p50_ratio)}   (target <= 1.5)`);
  console.log(`p99 ratio (inboxes/health): ${f(result.p99_ratio)}`);
  console.log(
    `Argon2 verifications during the run: ${argon2} for ${KEYS} keys (target: one per key per isolate)` +
      (restarted
        ? "  [isolate restarted during the run: counts cover the new isolate only]"
        : `  [warm-up ${result.argon2_verifications_warmup}, measured ${result.argon2_verifications_measured}]`),
  );
  console.log(
    `Key-cache hits during the run: ${result.key_cache_hits}` +
      (restarted ? "" : `  [measured ${result.key_cache_hits_measured} of ${ROUNDS * N} authenticated requests]`),
  );
  console.log(`BENCH_JSON ${JSON.stringify(result)}`);
  if (!health.samples || !inboxes.samples) fail("an endpoint had no successful request; see the errors above");
}

const SUITE = process.env.BENCH_SUITE || "all";
if (
  ![
    "all",
    "latency",
    "inbound",
    "webhooks",
    "outbound",
    "mcp",
    "sender-auth",
    "reputation",
    "realtime",
    "screening",
  ].includes(SUITE)
) {
  console.error(
    `bench: BENCH_SUITE must be all, latency, inbound, webhooks, outbound, mcp, sender-auth, reputation, realtime or screening, got ${JSON.stringify(SUITE)}`,
  );
  process.exit(1);
}

try {
  if (SUITE === "all" || SUITE === "latency") await main();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await worker?.stop({ keepDir: true });
  console.error(`bench: FAILED${worker ? ` (wrangler log kept in ${worker.dir})` : ""}`);
  process.exit(1);
}

/** Runs another bench script in its own process (each starts its own wrangler dev). */
function runScript(name) {
  if (SUITE === "all") console.log("");
  const child = spawnSync(process.execPath, [fileURLToPath(new URL(name, import.meta.url))], { stdio: "inherit" });
  return child.status ?? 1;
}

let status = 0;
if (SUITE === "all" || SUITE === "inbound") status ||= runScript("./inbound.mjs");
if (SUITE === "all" || SUITE === "webhooks") status ||= runScript("./webhooks.mjs");
if (SUITE === "all" || SUITE === "outbound") status ||= runScript("./outbound.mjs");
if (SUITE === "all" || SUITE === "mcp") status ||= runScript("./mcp.mjs");
if (SUITE === "all" || SUITE === "sender-auth") status ||= runScript("./sender-auth.mjs");
if (SUITE === "all" || SUITE === "reputation") status ||= runScript("./reputation.mjs");
if (SUITE === "all" || SUITE === "realtime") status ||= runScript("./realtime.mjs");
if (SUITE === "all" || SUITE === "screening") status ||= runScript("./screening.mjs");
process.exit(status);
