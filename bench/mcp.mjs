// MCP benchmark on a local `wrangler dev`: what a tool call costs over /mcp (a fresh MCP server
// and transport per request, JSON-RPC parsing, zod validation) next to the same read over /v1.
//  a) GET /v1/inboxes/{id}/messages?limit=20 versus tools/call list_messages (same inbox, same
//     messages: 10 sent to itself, so up to 20 once delivered), BENCH_MCP_REQUESTS each, concurrency BENCH_MCP_CONCURRENCY, p50/p99 and rps;
//  b) tools/list alone (schemas are built once per isolate).
// Usage: BENCH_SUITE=mcp npm run bench, or node bench/mcp.mjs

import { randomBytes } from "node:crypto";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const N = positiveInt("BENCH_MCP_REQUESTS", 500);
const C = positiveInt("BENCH_MCP_CONCURRENCY", 8);
const WARMUP = 20;

let worker = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    console.error(`bench: interrupted (${sig}); stopping wrangler`);
    await worker?.stop();
    process.exit(130);
  });
}

const MCP_HEADERS = { "content-type": "application/json", accept: "application/json, text/event-stream" };

/** n requests made by `make(i)` with c in flight; only 2xx answers without a JSON-RPC error count. */
async function load(make, n, c) {
  const samples = [];
  let errors = 0;
  let next = 0;
  const run = async () => {
    for (let i = next++; i < n; i = next++) {
      const t0 = performance.now();
      try {
        const res = await make(i);
        const text = await res.text();
        const ms = performance.now() - t0;
        if (res.ok && !/"error":\{"code":-/.test(text) && !/"isError":true/.test(text)) samples.push(ms);
        else errors++;
      } catch {
        errors++;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(c, n) }, run));
  const ms = performance.now() - t0;
  samples.sort((a, b) => a - b);
  const pct = (p) => (samples.length ? samples[Math.floor(p * (samples.length - 1))] : null);
  return { samples: samples.length, p50_ms: pct(0.5), p99_ms: pct(0.99), rps: samples.length / (ms / 1000), errors };
}

async function main() {
  worker = await startLocalWorker({
    label: "mailbot-bench-mcp",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      REGISTRATIONS_PER_HOUR: "0",
      OUTBOUND_TRANSPORT: "dev",
      TIER_LIMITS: JSON.stringify({ sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000 } }),
    },
  });
  const base = worker.base;
  const reg = await call(base, "POST", "/v1/auth/register", {
    body: { email: `bench-mcp-${randomBytes(6).toString("hex")}@example.com` },
  });
  if (reg.status !== 201) fail(`register answered ${reg.status}: ${reg.text.slice(0, 300)}`, true);
  const key = reg.json.data.api_key;
  const inbox = reg.json.data.inbox;
  // 20 messages to list (sends to another address of this deployment land as inbound mail too).
  for (let i = 0; i < 10; i++) {
    const r = await call(base, "POST", `/v1/inboxes/${inbox.id}/messages`, {
      token: key,
      body: { to: [inbox.address], subject: `Bench ${i}`, body_text: `Message ${i} of the MCP bench.` },
    });
    if (r.status !== 202) fail(`send answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  }
  const auth = { authorization: `Bearer ${key}` };
  const http = () => fetch(`${base}/v1/inboxes/${inbox.id}/messages?limit=20`, { headers: auth });
  const rpc = (body) => () =>
    fetch(`${base}/mcp`, { method: "POST", headers: { ...auth, ...MCP_HEADERS }, body: JSON.stringify(body) });
  const listMessages = rpc({
    jsonrpc: "2.0",
    id: 1,
    method: "tools/call",
    params: { name: "list_messages", arguments: { inbox_id: inbox.id, limit: 20 } },
  });
  const listTools = rpc({ jsonrpc: "2.0", id: 1, method: "tools/list" });

  await load(http, WARMUP, 4);
  await load(listMessages, WARMUP, 4);
  const httpRun = await load(http, N, C);
  const mcpRun = await load(listMessages, N, C);
  const toolsRun = await load(listTools, N, C);
  const f = (r) =>
    `p50 ${r.p50_ms?.toFixed(1)} ms  p99 ${r.p99_ms?.toFixed(1)} ms  ${r.rps.toFixed(0)} req/s  (${r.samples} ok, ${r.errors} errors)`;
  console.log(`MCP bench: ${N} requests each, concurrency ${C}, wrangler dev on this machine`);
  console.log(`GET /v1/inboxes/{id}/messages?limit=20   ${f(httpRun)}`);
  console.log(`/mcp tools/call list_messages (limit 20) ${f(mcpRun)}`);
  console.log(`/mcp tools/list                          ${f(toolsRun)}`);
  console.log(
    `BENCH_JSON ${JSON.stringify({ suite: "mcp", requests: N, concurrency: C, http: httpRun, mcp_list_messages: mcpRun, mcp_tools_list: toolsRun })}`,
  );
  if (!httpRun.samples || !mcpRun.samples) fail("a run had no successful request", true);
}

try {
  await main();
  await worker?.stop();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err instanceof BenchError && err.showLog && worker) console.error(worker.tail(40));
  await worker?.stop({ keepDir: true });
  process.exit(1);
}
