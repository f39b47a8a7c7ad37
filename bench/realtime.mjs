// Realtime benchmark on a local `wrangler dev`:
//  a) event → client latency: BENCH_REALTIME_MAILS mails, one at a time, through the email()
//     handler (/cdn-cgi/local/email), with one SSE client (GET /v1/events/stream) and one WebSocket
//     client (GET /v1/events/ws) listening; for each `message.received`, the time from sending the
//     mail to its arrival at each client, and from the event's `created_at` (stamped by the Worker
//     before it commits; same clock locally) to its arrival, p50/p99;
//     the same for events from the API (an inbox deactivated and re-enabled, alternately): the time
//     from sending the request to the event's arrival, and from receiving its answer (the Worker
//     publishes before it answers, so that one is often negative);
//  b) 100 idle streams on one account (BENCH_REALTIME_IDLE, SSE and WebSocket runs apart): the
//     server's resident memory (wrangler's node + workerd) and CPU before and after opening them,
//     and its CPU over an idle window of BENCH_REALTIME_IDLE_SECONDS (heartbeats included).
// Usage: BENCH_SUITE=realtime npm run bench, or node bench/realtime.mjs

import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { localStatePath, startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const MAILS = positiveInt("BENCH_REALTIME_MAILS", 100);
const IDLE = positiveInt("BENCH_REALTIME_IDLE", 100);
const IDLE_SECONDS = positiveInt("BENCH_REALTIME_IDLE_SECONDS", 30);
const adminToken = randomBytes(24).toString("base64url");

let worker = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    console.error(`bench: interrupted (${sig}); stopping wrangler`);
    await worker?.stop();
    process.exit(130);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (sorted, p) => (sorted.length ? sorted[Math.floor(p * (sorted.length - 1))] : null);

/** An SSE client over fetch: calls onEvent(event JSON, arrival ms) per `data:` frame. */
async function openSse(base, key, onEvent) {
  const ctrl = new AbortController();
  const res = await fetch(`${base}/v1/events/stream`, {
    headers: { authorization: `Bearer ${key}` },
    signal: ctrl.signal,
  });
  if (res.status !== 200) fail(`GET /v1/events/stream answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  const state = { buffer: "", frames: 0, comments: 0 };
  (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        const at = performance.now();
        state.buffer += decoder.decode(value, { stream: true });
        for (let end = state.buffer.indexOf("\n\n"); end >= 0; end = state.buffer.indexOf("\n\n")) {
          const frame = state.buffer.slice(0, end);
          state.buffer = state.buffer.slice(end + 2);
          const data = frame.split("\n").find((l) => l.startsWith("data: "));
          if (data) {
            state.frames++;
            onEvent?.(JSON.parse(data.slice(6)), at);
          } else state.comments++;
        }
      }
    } catch {}
  })();
  return { state, close: () => ctrl.abort() };
}

/** A WebSocket client (Node 22's global WebSocket), the key offered as a subprotocol like a browser. */
function openWs(base, key, onEvent) {
  return new Promise((ok, ko) => {
    const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/events/ws`, ["mailbot", key]);
    ws.onmessage = (m) => onEvent?.(JSON.parse(m.data), performance.now());
    ws.onopen = () => ok(ws);
    ws.onerror = (e) => ko(new BenchError(`WebSocket failed: ${e.message ?? e.type}`));
  });
}

/** Resident memory (KiB) and CPU (ms) of the wrangler process group (node + workerd). Linux only. */
function serverUsage() {
  const state = localStatePath(worker.dir);
  const pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  const stat = (pid) => {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return {
      comm: text.slice(text.indexOf("(") + 1, text.lastIndexOf(")")),
      pgrp: f[2],
      cpuMs: (Number(f[11]) + Number(f[12])) * 10,
    };
  };
  let group = null;
  for (const pid of pids) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (cmd.includes(state) && cmd.includes("\0dev\0")) group = stat(pid).pgrp;
    } catch {}
  }
  if (!group) return null;
  const usage = { rssKiB: 0, workerdRssKiB: 0, cpuMs: 0, workerdCpuMs: 0 };
  for (const pid of pids) {
    try {
      const s = stat(pid);
      if (s.pgrp !== group) continue;
      const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
      usage.rssKiB += rss;
      usage.cpuMs += s.cpuMs;
      if (s.comm.startsWith("workerd")) {
        usage.workerdRssKiB += rss;
        usage.workerdCpuMs += s.cpuMs;
      }
    } catch {}
  }
  return usage;
}

async function register(base, tag) {
  const email = `bench-rt-${tag}-${randomBytes(4).toString("hex")}@example.com`;
  const r = await call(base, "POST", "/v1/auth/register", { body: { email } });
  const d = r.json?.data;
  if (r.status !== 201 || !d?.api_key) fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  return { key: d.api_key, address: d.inbox.address, accountId: d.account.id };
}

function rawMail(to, n) {
  return [
    "From: Ada <ada@sender.example.org>",
    `To: ${to}`,
    `Subject: realtime ${n}`,
    `Message-ID: <rt${n}.${randomBytes(6).toString("hex")}@sender.example.org>`,
    "Date: Mon, 23 Nov 2026 10:00:00 +0000",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "",
    `Hello ${n}.`,
    "",
  ].join("\r\n");
}

async function latency(base) {
  const acct = await register(base, "latency");
  const arrivals = { sse: new Map(), ws: new Map() };
  const created = new Map();
  const note = (kind) => (event, at) => {
    if (event.type !== "message.received") return;
    arrivals[kind].set(event.data.subject, { at, wall: Date.now(), createdAt: Date.parse(event.created_at) });
    created.set(event.data.subject, Date.parse(event.created_at));
  };
  const sse = await openSse(base, acct.key, note("sse"));
  const ws = await openWs(base, acct.key, note("ws"));
  await sleep(500); // both joined the hub
  const samples = { sse: [], ws: [], sseFromCommit: [], wsFromCommit: [] };
  let lost = 0;
  for (let i = 0; i < MAILS + 5; i++) {
    const subject = `realtime ${i}`;
    const t0 = performance.now();
    const res = await fetch(
      `${base}/cdn-cgi/local/email?from=${encodeURIComponent("ada@sender.example.org")}&to=${encodeURIComponent(acct.address)}`,
      { method: "POST", body: rawMail(acct.address, i) },
    );
    await res.arrayBuffer();
    const deadline = Date.now() + 5_000;
    while ((!arrivals.sse.has(subject) || !arrivals.ws.has(subject)) && Date.now() < deadline) await sleep(1);
    const s = arrivals.sse.get(subject);
    const w = arrivals.ws.get(subject);
    if (!s || !w) {
      lost++;
      continue;
    }
    if (i < 5) continue; // warm-up
    samples.sse.push(s.at - t0);
    samples.ws.push(w.at - t0);
    samples.sseFromCommit.push(s.wall - s.createdAt);
    samples.wsFromCommit.push(w.wall - w.createdAt);
  }
  // The same clients, events from a fast producer: deactivating and re-enabling an inbox over the
  // API (inbox.disabled / inbox.enabled). The Worker publishes before it answers, so "request sent
  // → arrival" bounds the event → client time from above without the mail pipeline's parse and R2 work.
  const api = { sse: [], ws: [], afterAnswer: { sse: [], ws: [] } };
  const seen = { sse: new Set(), ws: new Set() };
  const r0 = await call(base, "GET", "/v1/inboxes", { token: acct.key });
  const inboxId = r0.json?.data?.[0]?.id;
  if (!inboxId) fail(`GET /v1/inboxes answered ${r0.status}: ${r0.text.slice(0, 200)}`);
  let waiting = null;
  const onApi = (kind) => (event, at) => {
    if (!event.type.startsWith("inbox.") || seen[kind].has(event.id)) return;
    seen[kind].add(event.id);
    waiting?.[kind]?.(at);
  };
  const sse2 = await openSse(base, acct.key, onApi("sse"));
  const ws2 = await openWs(base, acct.key, onApi("ws"));
  await sleep(300);
  for (let i = 0; i < MAILS + 5; i++) {
    const arrived = {};
    const both = new Promise((ok) => {
      waiting = {
        sse: (at) => {
          arrived.sse = at;
          if (arrived.ws) ok();
        },
        ws: (at) => {
          arrived.ws = at;
          if (arrived.sse) ok();
        },
      };
    });
    const t0 = performance.now();
    const r =
      i % 2 === 0
        ? await call(base, "DELETE", `/v1/inboxes/${inboxId}`, { token: acct.key })
        : await call(base, "POST", `/v1/inboxes/${inboxId}/enable`, { token: acct.key });
    const t1 = performance.now();
    if (r.status !== 200) fail(`inbox toggle answered ${r.status}: ${r.text.slice(0, 200)}`);
    const ok = await Promise.race([both.then(() => true), sleep(5_000).then(() => false)]);
    if (!ok) {
      lost++;
      continue;
    }
    if (i < 5) continue;
    api.sse.push(arrived.sse - t0);
    api.ws.push(arrived.ws - t0);
    api.afterAnswer.sse.push(arrived.sse - t1);
    api.afterAnswer.ws.push(arrived.ws - t1);
  }
  sse2.close();
  ws2.close();
  sse.close();
  ws.close();
  const sum = (xs) => {
    const sorted = [...xs].sort((a, b) => a - b);
    return { n: sorted.length, p50_ms: pct(sorted, 0.5), p99_ms: pct(sorted, 0.99), max_ms: sorted.at(-1) ?? null };
  };
  return {
    sse_from_mail: sum(samples.sse),
    ws_from_mail: sum(samples.ws),
    sse_from_created_at: sum(samples.sseFromCommit),
    ws_from_created_at: sum(samples.wsFromCommit),
    sse_from_api_request: sum(api.sse),
    ws_from_api_request: sum(api.ws),
    sse_after_api_answer: sum(api.afterAnswer.sse),
    ws_after_api_answer: sum(api.afterAnswer.ws),
    lost,
  };
}

async function idle(base, kind) {
  const acct = await register(base, `idle-${kind}`);
  await sleep(1_000);
  const before = serverUsage();
  const clients = [];
  let received = 0;
  for (let i = 0; i < IDLE; i++) {
    if (kind === "sse") clients.push(await openSse(base, acct.key, () => received++));
    else clients.push(await openWs(base, acct.key, () => received++));
  }
  await sleep(2_000);
  const opened = serverUsage();
  await sleep(IDLE_SECONDS * 1000);
  const after = serverUsage();
  // One event to prove they are all live after the idle window.
  const res = await fetch(
    `${base}/cdn-cgi/local/email?from=${encodeURIComponent("ada@sender.example.org")}&to=${encodeURIComponent(acct.address)}`,
    { method: "POST", body: rawMail(acct.address, `idle-${kind}`) },
  );
  await res.arrayBuffer();
  const deadline = Date.now() + 10_000;
  while (received < IDLE && Date.now() < deadline) await sleep(10);
  for (const c of clients) kind === "sse" ? c.close() : c.close(1000);
  const heartbeats = kind === "sse" ? clients.reduce((n, c) => n + c.state.comments, 0) : null;
  if (!before || !opened || !after) return { kind, streams: IDLE, received, usage: null };
  return {
    kind,
    streams: IDLE,
    received_after_idle: received,
    rss_before_mib: before.rssKiB / 1024,
    rss_open_mib: opened.rssKiB / 1024,
    rss_delta_per_stream_kib: (opened.rssKiB - before.rssKiB) / IDLE,
    workerd_rss_delta_mib: (opened.workerdRssKiB - before.workerdRssKiB) / 1024,
    open_cpu_ms: opened.cpuMs - before.cpuMs,
    idle_seconds: IDLE_SECONDS,
    idle_cpu_ms: after.cpuMs - opened.cpuMs,
    idle_cpu_percent: ((after.cpuMs - opened.cpuMs) / (IDLE_SECONDS * 1000)) * 100,
    idle_workerd_cpu_ms: after.workerdCpuMs - opened.workerdCpuMs,
    sse_comment_frames: heartbeats,
  };
}

async function main() {
  worker = await startLocalWorker({
    label: "mailbot-bench-realtime",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({
        sandbox: {
          requests_per_minute: 1_000_000,
          burst: 1_000_000,
          stream_connections: 1_000,
          stream_connections_per_account: 1_000,
        },
      }),
    },
  });
  const base = worker.base;
  const lat = await latency(base);
  const idleSse = await idle(base, "sse");
  const idleWs = await idle(base, "ws");
  await worker.stop();

  const f = (x, d = 1) => (x == null ? "n/a" : x.toFixed(d));
  const line = (name, s) => `${name.padEnd(36)} p50 ${f(s.p50_ms)} ms  p99 ${f(s.p99_ms)} ms  max ${f(s.max_ms)} ms`;
  console.log(
    `mailbot realtime bench (wrangler dev, local) — ${MAILS} mails, one at a time, one SSE + one WebSocket client`,
  );
  console.log(line("mail sent → SSE client", lat.sse_from_mail));
  console.log(line("mail sent → WebSocket client", lat.ws_from_mail));
  console.log(line("event created_at → SSE client", lat.sse_from_created_at));
  console.log(line("event created_at → WebSocket client", lat.ws_from_created_at));
  console.log(line("API request sent → SSE client", lat.sse_from_api_request));
  console.log(line("API request sent → WebSocket client", lat.ws_from_api_request));
  console.log(line("API answer received → SSE client", lat.sse_after_api_answer));
  console.log(line("API answer received → WS client", lat.ws_after_api_answer));
  if (lat.lost) console.log(`events that never arrived within 5 s: ${lat.lost}`);
  for (const r of [idleSse, idleWs]) {
    if (!r.rss_before_mib) {
      console.log(`${r.streams} idle ${r.kind} streams: usage not measurable here (Linux /proc needed)`);
      continue;
    }
    console.log(
      `${r.streams} idle ${r.kind.toUpperCase()} streams, one account: RSS ${f(r.rss_before_mib)} → ${f(r.rss_open_mib)} MiB ` +
        `(${f(r.rss_delta_per_stream_kib)} KiB per stream, workerd +${f(r.workerd_rss_delta_mib)} MiB), ` +
        `CPU to open ${r.open_cpu_ms} ms, idle ${r.idle_cpu_ms} ms over ${r.idle_seconds} s (${f(r.idle_cpu_percent, 2)} %, workerd ${r.idle_workerd_cpu_ms} ms)` +
        `; ${r.received_after_idle}/${r.streams} got the event after the idle window`,
    );
  }
  console.log(
    `BENCH_JSON ${JSON.stringify({ mode: "wrangler dev, local", mails: MAILS, latency: lat, idle: [idleSse, idleWs] })}`,
  );
  if (lat.sse_from_mail.n === 0 || lat.ws_from_mail.n === 0) fail("no event reached a client; see the log");
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
