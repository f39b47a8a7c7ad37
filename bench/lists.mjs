// List benchmark (issue 17 item 5) on a local `wrangler dev`: an inbox holding 20 messages of
// ~51 KB each (text part), then GET /v1/inboxes/{id} (one inbox: the goal's yardstick), the lean
// list GET /v1/inboxes/{id}/messages?limit=20 (previews) and the same list with ?include=body
// (the bodies read and shipped, as every list did before), at concurrency 1 and 16.
// Usage: npm run bench (part of it), BENCH_SUITE=lists npm run bench, or node bench/lists.mjs
//   env BENCH_LIST_REQUESTS (per endpoint and concurrency, default 400)

import { randomBytes } from "node:crypto";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";
import { load, message, summarize } from "./list-load.mjs";

const N = positiveInt("BENCH_LIST_REQUESTS", 400);
const MESSAGES = 20;
const WARMUP = 20;

let worker = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await worker?.stop();
    process.exit(130);
  });
}

async function main() {
  worker = await startLocalWorker({
    label: "mailbot-bench-lists",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({ sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000 } }),
    },
  });
  const base = worker.base;
  const r = await call(base, "POST", "/v1/auth/register", {
    body: { email: `bench-lists-${randomBytes(6).toString("hex")}@example.com` },
  });
  const d = r.json?.data;
  if (r.status !== 201 || !d?.api_key) fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  const { api_key: key, inbox } = d;
  for (let i = 0; i < MESSAGES; i++) {
    const raw = message(inbox.address, i);
    const res = await fetch(
      `${base}/cdn-cgi/local/email?from=${encodeURIComponent("ada@sender.example.org")}&to=${encodeURIComponent(inbox.address)}`,
      { method: "POST", body: raw },
    );
    await res.arrayBuffer();
    if (!res.ok) fail(`delivering mail ${i} answered ${res.status}`, true);
  }
  const check = await call(base, "GET", `/v1/inboxes/${inbox.id}/messages?limit=20&include=body`, { token: key });
  const bodyBytes = (check.json?.data ?? []).map((m) => Buffer.byteLength(m.body_text ?? ""));
  if (bodyBytes.length !== MESSAGES) fail(`expected ${MESSAGES} messages, the list has ${bodyBytes.length}`, true);

  const endpoints = [
    { name: "GET /v1/inboxes/{id}", url: `${base}/v1/inboxes/${inbox.id}` },
    { name: "list 20 (preview)", url: `${base}/v1/inboxes/${inbox.id}/messages?limit=20` },
    { name: "list 20 ?include=body", url: `${base}/v1/inboxes/${inbox.id}/messages?limit=20&include=body` },
  ];
  const result = {
    suite: "lists",
    mode: "wrangler dev, local",
    messages: MESSAGES,
    body_bytes_avg: Math.round(bodyBytes.reduce((s, b) => s + b, 0) / bodyBytes.length),
    requests: N,
    by_concurrency: {},
  };
  for (const c of [1, 16]) {
    for (const e of endpoints) await load(e.url, key, WARMUP, c);
    // Two rounds, alternating the endpoints so drift hits all alike.
    const runs = endpoints.map(() => []);
    for (let round = 0; round < 2; round++) {
      for (const [i, e] of endpoints.entries()) runs[i].push(await load(e.url, key, N / 2, c));
    }
    const [inboxGet, lean, full] = runs.map(summarize);
    result.by_concurrency[c] = {
      inbox_get: inboxGet,
      list: lean,
      list_with_bodies: full,
      list_over_inbox_get_p50: lean.p50_ms / inboxGet.p50_ms,
    };
  }
  await worker.stop();

  const f = (x, d = 2) => (x == null ? "n/a" : x.toFixed(d));
  console.log(
    `mailbot list bench (wrangler dev, local) — ${MESSAGES} messages of ~${f(result.body_bytes_avg / 1000, 1)} KB text, ${N} requests per endpoint`,
  );
  for (const [c, r] of Object.entries(result.by_concurrency)) {
    for (const [name, s] of [
      ["GET inbox", r.inbox_get],
      ["list 20 (preview)", r.list],
      ["list 20 include=body", r.list_with_bodies],
    ]) {
      console.log(
        `c=${String(c).padEnd(3)} ${name.padEnd(21)} p50 ${f(s.p50_ms)} ms  p99 ${f(s.p99_ms)} ms  ${f(s.response_bytes / 1000, 1)} KB  errors ${s.errors}`,
      );
    }
    console.log(`c=${String(c).padEnd(3)} list p50 / GET inbox p50: ${f(r.list_over_inbox_get_p50)}`);
  }
  console.log(`BENCH_JSON ${JSON.stringify(result)}`);
}

try {
  await main();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await worker?.stop({ keepDir: true });
  process.exit(1);
}
