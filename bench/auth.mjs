// Auth overhead benchmark (issue 17 item 2) on a local `wrangler dev`: p50 of an authenticated
// list (GET /v1/inboxes) divided by p50 of GET /health, at concurrency 1 and 16, once as is and
// once with every Durable Object call delayed by BENCH_DO_DELAY_MS (default 50 ms, the
// development-only switch of src/lib/bench.ts): with no object on a read's path the ratio
// should not move. Goal: ≤ 1.3 in all four cells.
// Usage: BENCH_SUITE=auth npm run bench, or node bench/auth.mjs
// (BENCH_AUTH_REQUESTS per cell, default 1000)

import { randomBytes } from "node:crypto";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const N = positiveInt("BENCH_AUTH_REQUESTS", 1000);
const DELAY = positiveInt("BENCH_DO_DELAY_MS", 50);
const GOAL = 1.3;
const adminToken = randomBytes(24).toString("base64url");

let worker = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    console.error(`bench: interrupted (${sig}); stopping wrangler`);
    await worker?.stop();
    process.exit(130);
  });
}

async function load(url, token, n, c) {
  const samples = [];
  let next = 0;
  let errors = 0;
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const run = async () => {
    for (let i = next++; i < n; i = next++) {
      const t0 = performance.now();
      try {
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        if (res.ok) samples.push(performance.now() - t0);
        else errors++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: c }, run));
  return { samples, errors };
}

function quantiles(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const q = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
  return { p50: q(0.5), p99: q(0.99) };
}

/**
 * /health and the list measured in alternation: at concurrency 1 request by request, at 16 in
 * four rounds of a block of each. Measured one after the other, a drift of the machine (another
 * process, a GC, the local simulators' background work) lands on one side only; on this 2-core
 * machine that moved /health's p50 between runs by more than the difference being measured.
 */
async function alternate(base, token, n, c) {
  const rounds = c === 1 ? n : 4;
  const block = Math.ceil(n / rounds);
  const health = { samples: [], errors: 0 };
  const list = { samples: [], errors: 0 };
  for (let r = 0; r < rounds; r++) {
    for (const [into, url, key] of [
      [health, `${base}/health`, null],
      [list, `${base}/v1/inboxes`, token],
    ]) {
      const got = await load(url, key, block, c);
      into.samples.push(...got.samples);
      into.errors += got.errors;
    }
  }
  return {
    health: { ...quantiles(health.samples), errors: health.errors },
    list: { ...quantiles(list.samples), errors: list.errors },
  };
}

async function measure(doDelayMs) {
  worker = await startLocalWorker({
    label: "mailbot-bench-auth",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({ sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000 } }),
      BENCH_DO_DELAY_MS: String(doDelayMs),
    },
  });
  const base = worker.base;
  const reg = await call(base, "POST", "/v1/auth/register", {
    body: { email: `bench-auth-${Date.now()}@example.com`, name: "bench auth" },
  });
  if (reg.status !== 201) fail(`register answered ${reg.status}: ${reg.text.slice(0, 300)}`, true);
  const token = reg.json.data.api_key;
  const rows = [];
  for (const c of [1, 16]) {
    // Warm-up: the key verified and cached, its guard snapshot taken, both routes compiled.
    await load(`${base}/health`, null, 50, c);
    await load(`${base}/v1/inboxes`, token, 100, c);
    const { health, list } = await alternate(base, token, N, c);
    rows.push({
      do_delay_ms: doDelayMs,
      concurrency: c,
      health_p50_ms: +health.p50.toFixed(2),
      list_p50_ms: +list.p50.toFixed(2),
      list_p99_ms: +list.p99.toFixed(2),
      ratio: +(list.p50 / health.p50).toFixed(2),
      errors: health.errors + list.errors,
    });
  }
  await worker.stop();
  worker = null;
  return rows;
}

try {
  const rows = [...(await measure(0)), ...(await measure(DELAY))];
  console.log(`Auth overhead: authenticated list p50 ÷ /health p50 (goal ≤ ${GOAL}), ${N} requests per cell`);
  console.log("DO delay  conc  /health p50  list p50  list p99  ratio  errors");
  for (const r of rows) {
    console.log(
      `${String(r.do_delay_ms).padStart(5)} ms  ${String(r.concurrency).padStart(4)}  ${r.health_p50_ms.toFixed(2).padStart(8)} ms  ${r.list_p50_ms.toFixed(2).padStart(5)} ms  ${r.list_p99_ms.toFixed(2).padStart(5)} ms  ${r.ratio.toFixed(2).padStart(5)}  ${r.errors}${r.ratio <= GOAL ? "" : "  (over goal)"}`,
    );
  }
  console.log(`BENCH_JSON ${JSON.stringify({ suite: "auth", goal_ratio: GOAL, rows })}`);
  if (rows.some((r) => r.errors > 0)) fail("some requests failed; see the errors column");
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await worker?.stop({ keepDir: true });
  process.exit(1);
}
