// Inbound benchmark on a local `wrangler dev`:
//  a) throughput of the email() pipeline for a ~50 KB message with two attachments, next to the
//     time postal-mime alone takes to parse the same bytes in workerd (a separate Worker in
//     Miniflare, the same workerd build wrangler dev runs), and the ratio of the two;
//  b) D1 rows read (X-Mailbot-D1-Rows-Read, development only, asked for with X-Mailbot-D1-Stats: 1) for the read API on an inbox of
//     100,000 messages seeded straight into the local D1.
// Usage: npm run bench (runs it after the latency bench), or node bench/inbound.mjs
//   env BENCH_INBOUND (messages, default 300), BENCH_INBOUND_CONCURRENCY (default 8),
//   BENCH_SEED (seeded messages, default 100000), BENCH_PARSES (parses timed, default 200)
//   BENCH_INBOUND_DIRECT_ONLY=1: only the in-workerd figures (bare parse, receiveMail() split into D1 / R2 /
//   Durable Object waits and the isolate's own work), no wrangler dev: the quick loop while profiling.

import { spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { localStatePath, startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");

const N = positiveInt("BENCH_INBOUND", 300);
const C = positiveInt("BENCH_INBOUND_CONCURRENCY", 8);
/** Profiled windows per side of the own-JS ratio; the median of each side is kept. */
const PROFILE_WINDOWS = 7;
const SEED = positiveInt("BENCH_SEED", 100_000);
const K = positiveInt("BENCH_PARSES", 200);
const WARMUP = 50;
const SINGLE = Math.min(60, N);
const REPEATS = 5;
const SMALL_THREAD_START = Math.floor(SEED / 2) + 1;

const MAIL_DOMAIN = "bench.mailbot.test";
const adminToken = randomBytes(24).toString("base64url");
const inboundSecret = randomBytes(24).toString("base64url");

let worker = null;
let miniflare = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    console.error(`bench: interrupted (${sig}); stopping wrangler`);
    await Promise.allSettled([worker?.stop(), miniflare?.dispose()]);
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------------
// The test message

/** Deterministic bytes that do not compress or repeat (a PDF-ish / PNG-ish payload). */
function payload(size, header, seed) {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  header.copy(out, 0);
  return out;
}

const PDF = payload(20 * 1024, Buffer.from("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "latin1"), 7);
const PNG = payload(15 * 1024, Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), 11);
const b64 = (buf) => buf.toString("base64").replace(/.{1,76}/g, "$&\r\n");
const PDF_B64 = b64(PDF);
const PNG_B64 = b64(PNG);
const PARAGRAPH =
  "Hello team, please find attached the signed quarterly report and the chart we discussed on Tuesday. " +
  "The totals on page 3 include the late invoices; let me know if anything looks off before Friday.";
const TEXT = `${Array.from({ length: 8 }, () => PARAGRAPH).join("\r\n\r\n")}\r\n\r\n-- \r\nAda Sender\r\n`;
const HTML = `<html><body>${Array.from({ length: 8 }, () => `<p>${PARAGRAPH}</p>`).join("\r\n")}<p>-- <br>Ada Sender</p></body></html>\r\n`;

/** A ~50 KB multipart/mixed message: text + html alternative, a PDF and a PNG attachment. */
function message(to, n, tag) {
  const id = `<${tag}-${n}-${randomBytes(6).toString("hex")}@sender.example.org>`;
  return Buffer.from(
    [
      "From: Ada Sender <ada@sender.example.org>",
      `To: ${to}`,
      `Subject: Quarterly report ${tag} ${n}`,
      `Date: ${new Date().toUTCString()}`,
      `Message-ID: ${id}`,
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="mixed-b1"',
      "",
      "--mixed-b1",
      'Content-Type: multipart/alternative; boundary="alt-b2"',
      "",
      "--alt-b2",
      "Content-Type: text/plain; charset=utf-8",
      "Content-Transfer-Encoding: 8bit",
      "",
      TEXT,
      "--alt-b2",
      "Content-Type: text/html; charset=utf-8",
      "Content-Transfer-Encoding: 8bit",
      "",
      HTML,
      "--alt-b2--",
      "",
      "--mixed-b1",
      'Content-Type: application/pdf; name="report.pdf"',
      'Content-Disposition: attachment; filename="report.pdf"',
      "Content-Transfer-Encoding: base64",
      "",
      PDF_B64,
      "--mixed-b1",
      'Content-Type: image/png; name="chart.png"',
      'Content-Disposition: attachment; filename="chart.png"',
      "Content-Transfer-Encoding: base64",
      "",
      PNG_B64,
      "--mixed-b1--",
      "",
    ].join("\r\n"),
  );
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

async function register(base, tag) {
  const email = `bench-${tag}-${randomBytes(6).toString("hex")}@example.com`;
  const r = await call(base, "POST", "/v1/auth/register", { body: { email, name: `bench ${tag}` } });
  const d = r.json?.data;
  if (r.status !== 201 || !d?.api_key || !d?.inbox?.address)
    fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  return { key: d.api_key, accountId: d.account.id, inboxId: d.inbox.id, address: d.inbox.address };
}

/** Through the email() handler, as Email Routing would call it (wrangler's local endpoint). */
function viaEmail(base, to) {
  return (raw) =>
    fetch(
      `${base}/cdn-cgi/local/email?from=${encodeURIComponent("ada@sender.example.org")}&to=${encodeURIComponent(to)}`,
      {
        method: "POST",
        body: raw,
      },
    );
}

/** Through the signed relay webhook (the same receiveMail, without wrangler's email harness). */
function viaRelay(base, to) {
  return (raw) => {
    const ts = String(Math.floor(Date.now() / 1000));
    const sig = `sha256=${createHmac("sha256", inboundSecret).update(`${ts}.`).update(raw).digest("hex")}`;
    return fetch(`${base}/webhooks/inbound/raw?to=${encodeURIComponent(to)}&from=ada%40sender.example.org`, {
      method: "POST",
      headers: {
        "content-type": "message/rfc822",
        "x-mailbot-timestamp": ts,
        "x-mailbot-signature": sig,
        // Development only: the relay's answer then carries the D1 statements it ran.
        "x-mailbot-d1-stats": "1",
      },
      body: raw,
    });
  };
}

/**
 * Sends n messages with c in flight, message i to targets[i % targets.length]; `ok` decides which
 * statuses count. Also sums the D1 headers (relay answers carry them) and the server's CPU time.
 */
async function deliverMany(targets, tag, n, c, ok = (s) => s >= 200 && s < 300) {
  const raws = Array.from({ length: n }, (_, i) => message(targets[i % targets.length].address, i, tag));
  const samples = [];
  const statuses = {};
  const d1 = { responses: 0, queries: 0, queries_max: 0, rows_read: 0, rows_written: 0 };
  let next = 0;
  let errors = 0;
  let firstError = null;
  const loop = async () => {
    for (let i = next++; i < n; i = next++) {
      const t0 = performance.now();
      try {
        const res = await targets[i % targets.length].send(raws[i]);
        const text = await res.text();
        const ms = performance.now() - t0;
        if (ok(res.status)) samples.push(ms);
        else {
          errors++;
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          firstError ??= `${res.status} ${text.slice(0, 200)}`;
        }
        const queries = res.headers.get("x-mailbot-d1-queries");
        if (queries !== null) {
          d1.responses++;
          d1.queries += Number(queries);
          d1.queries_max = Math.max(d1.queries_max, Number(queries));
          d1.rows_read += Number(res.headers.get("x-mailbot-d1-rows-read"));
          d1.rows_written += Number(res.headers.get("x-mailbot-d1-rows-written"));
        }
      } catch (err) {
        errors++;
        const key = err.cause?.code ?? err.name;
        statuses[key] = (statuses[key] ?? 0) + 1;
        firstError ??= String(err);
      }
    }
  };
  const cpu0 = serverCpuMs();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(c, n) }, loop));
  const ms = performance.now() - t0;
  const cpu1 = serverCpuMs();
  samples.sort((a, b) => a - b);
  const pct = (p) => (samples.length ? samples[Math.floor(p * (samples.length - 1))] : null);
  const per = (x) => (d1.responses ? x / d1.responses : null);
  return {
    n,
    concurrency: c,
    accounts: targets.length,
    ok: samples.length,
    errors,
    statuses,
    firstError,
    wall_ms: ms,
    msg_per_s: samples.length / (ms / 1000),
    p50_ms: pct(0.5),
    p99_ms: pct(0.99),
    server_cpu_ms_per_msg: cpu0 && cpu1 ? (cpu1.total - cpu0.total) / n : null,
    server_cpu_split_ms_per_msg:
      cpu0 && cpu1 ? { node: (cpu1.node - cpu0.node) / n, workerd: (cpu1.workerd - cpu0.workerd) / n } : null,
    d1_per_msg: d1.responses
      ? {
          queries: per(d1.queries),
          queries_max: d1.queries_max,
          rows_read: per(d1.rows_read),
          rows_written: per(d1.rows_written),
        }
      : null,
  };
}

/** Every process of this machine (Linux /proc): name, parent, group, CPU ms so far (user + system). */
function processes() {
  const out = new Map();
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const text = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
      out.set(pid, {
        comm: text.slice(text.indexOf("(") + 1, text.lastIndexOf(")")),
        ppid: f[1],
        pgrp: f[2],
        ms: (Number(f[11]) + Number(f[12])) * 10, // USER_HZ is 100 on Linux
      });
    } catch {}
  }
  return out;
}

/**
 * CPU time (user + system, ms) used so far by the running `wrangler dev` (node) and its workerd,
 * found by the state directory on wrangler's command line (it leads its own process group), as
 * { total, node, workerd }. Linux only; null elsewhere.
 */
function serverCpuMs() {
  if (!worker) return null;
  try {
    const procs = processes();
    const state = localStatePath(worker.dir);
    let group = null;
    for (const [pid, p] of procs) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
        if (cmd.includes(state) && cmd.includes("\0dev\0")) group = p.pgrp;
      } catch {}
    }
    if (!group) return null;
    const cpu = { total: 0, node: 0, workerd: 0 };
    for (const p of procs.values()) {
      if (p.pgrp !== group) continue;
      cpu.total += p.ms;
      if (p.comm.startsWith("workerd")) cpu.workerd += p.ms;
      else cpu.node += p.ms;
    }
    return cpu;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// postal-mime alone, in workerd

function wranglerRequire() {
  return createRequire(join(ROOT, "node_modules/wrangler/package.json"));
}

/**
 * Bundles `entry` (bench/*-worker.mjs) with the esbuild wrangler uses and starts it in the
 * Miniflare wrangler uses, so it runs on the same workerd build as `wrangler dev`; state in memory.
 */
async function startBareWorker(entry, bindings = {}, inspectorPort = undefined) {
  const req = wranglerRequire();
  const esbuildMod = await import(req.resolve("esbuild"));
  const esbuild = esbuildMod.build ? esbuildMod : esbuildMod.default;
  const { Miniflare, convertV4MiniflareOptions } = await import(req.resolve("miniflare"));
  const built = await esbuild.build({
    entryPoints: [join(ROOT, entry)],
    bundle: true,
    format: "esm",
    platform: "neutral",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["module", "main"],
    external: ["node:*", "cloudflare:*"],
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  const compatibilityDate = /^compatibility_date\s*=\s*"([^"]+)"/m.exec(
    readFileSync(join(ROOT, "wrangler.toml"), "utf8"),
  )?.[1];
  const options = {
    modules: true,
    script: built.outputFiles[0].text,
    compatibilityDate,
    compatibilityFlags: ["nodejs_compat"],
    ...bindings,
  };
  const converted = convertV4MiniflareOptions ? convertV4MiniflareOptions(options) : options;
  miniflare = new Miniflare(inspectorPort ? { ...converted, inspectorPort } : converted);
  miniflare.bundle = built.outputFiles[0].text;
  return miniflare;
}

/** A free TCP port on 127.0.0.1 (for the inspector of a bare worker). */
async function freePort() {
  const { createServer } = await import("node:net");
  return new Promise((ok, no) => {
    const server = createServer();
    server.once("error", no);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/**
 * CPU time (ms, all threads; Linux /proc) so far of the workerd processes this bench started
 * (descendants of this process: the bare Miniflare's), or null. Other workerd processes on the
 * machine (another checkout's `wrangler dev`, a soak) are not counted. In one workerd process the
 * Worker, its Durable Objects and the D1 / R2 simulators share one thread, so this is the whole
 * machine cost of the work, not the isolate's alone.
 */
function workerdCpuMs() {
  try {
    const procs = processes();
    const ours = (pid) => {
      for (let p = pid, hops = 0; p && p !== "0" && hops < 64; p = procs.get(p)?.ppid, hops++) {
        if (p === String(process.pid)) return true;
      }
      return false;
    };
    let total = 0;
    for (const [pid, p] of procs) if (p.comm.startsWith("workerd") && ours(pid)) total += p.ms;
    return total;
  } catch {
    return null;
  }
}

/**
 * The JavaScript of the worker's own bundle (our code and the libraries it bundles: drizzle,
 * postal-mime, hono, zod), by the V8 CPU profiler, while `work` runs: samples in the bundle,
 * outside the bench harness module, and in native code the bundle called, split by module.
 * Not counted: the platform's binding JavaScript (cloudflare-internal:*), idle, and GC (reported
 * apart). The isolate also runs the Durable Objects here (one workerd): their code counts as
 * pipeline work, which is conservative. Why a profiler: performance.now() in
 * workerd advances in whole milliseconds, too coarse to take a dozen sub-millisecond I/O waits
 * out of a ~15 ms message (the figure this bench printed before, "wall minus I/O waits", moved
 * by a millisecond whenever the number of awaits changed). The profiler itself slows
 * fine-grained JS down, so only ratios of two profiled runs mean something.
 */
async function profileOwnJs(mf, port, harness, work) {
  if (typeof WebSocket !== "function") fail("the CPU profile needs Node 22 (run it with `npm run bench`)");
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const user = targets.filter((t) => /core:user/.test(t.title));
  if (user.length !== 1)
    fail(`expected one core:user inspector target, found: ${targets.map((t) => t.title).join(" | ") || "none"}`);
  const ws = new WebSocket(user[0].webSocketDebuggerUrl);
  await new Promise((ok, no) => {
    ws.onopen = ok;
    ws.onerror = () => no(new BenchError("the inspector socket did not open"));
  });
  let nextId = 0;
  const waiting = new Map();
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    const pending = msg.id && waiting.get(msg.id);
    if (!pending) return;
    waiting.delete(msg.id);
    if (msg.error) pending.no(new BenchError(`inspector: ${JSON.stringify(msg.error)}`));
    else pending.ok(msg.result);
  };
  ws.onclose = () => {
    for (const pending of waiting.values()) pending.no(new BenchError("the inspector socket closed"));
    waiting.clear();
  };
  const cdp = (method, params = {}) =>
    new Promise((ok, no) => {
      const id = ++nextId;
      const timer = setTimeout(() => {
        waiting.delete(id);
        no(new BenchError(`inspector: ${method} got no answer in 60 s`));
      }, 60_000);
      waiting.set(id, {
        ok: (v) => {
          clearTimeout(timer);
          ok(v);
        },
        no: (e) => {
          clearTimeout(timer);
          no(e);
        },
      });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await cdp("Profiler.enable");
  await cdp("Profiler.setSamplingInterval", { interval: 100 });
  await cdp("Profiler.start");
  const units = await work();
  const { profile } = await cdp("Profiler.stop");
  ws.onclose = null;
  ws.close();
  const starts = [];
  mf.bundle.split("\n").forEach((line, i) => {
    const m = /^\/\/ (\S+\.(?:[cm]?[jt]sx?|json))$/.exec(line);
    if (m) starts.push([i, m[1]]);
  });
  const moduleAt = (line) => {
    let lo = 0;
    let hi = starts.length - 1;
    let found = "?";
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid][0] <= line) {
        found = starts[mid][1];
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found;
  };
  const group = (path) =>
    path.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)?.[1] ??
    path.match(/src\/(durable-objects|features\/[^/]+|mail|db|lib)/)?.[1] ??
    path;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const inBundle = (frame) => /^script-\d+/.test(frame.url.split("/").pop() ?? "");
  // A sample stands for one sampling period of this isolate in that frame. Not its timeDelta:
  // the time since the previous sample also holds whatever the thread did in between in other
  // isolates (the D1 and R2 simulators share the thread), so right after an I/O wait a delta
  // reached 3-10 ms. Summed, the deltas charged our code with the simulators' work: splitHtml
  // came to 0.69 ms per mail by deltas, 0.02 ms by samples (Node runs it in 0.02 ms), and the
  // bare parse, with few waits, was barely affected. The period is the median delta, the
  // profiler's actual pace (slower than the 100 µs asked for, as sampling has a cost).
  const deltas = [...profile.timeDeltas].sort((a, b) => a - b);
  const period = (deltas[deltas.length >> 1] ?? 0) / 1000;
  const byModule = {};
  let own = 0;
  let ownByDeltas = 0;
  let ownCapped = 0;
  let gc = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = nodes.get(profile.samples[i]);
    const ms = period;
    const name = node.callFrame.functionName;
    if (name === "(garbage collector)") {
      gc += ms;
      continue;
    }
    // A sample in the bundle counts for its module; one in native code (a builtin, TextDecoder,
    // crypto.subtle, the base64 / hex codecs, a binding's argument marshalling) counts for the
    // bundle module that called it, so moving work into native code is not counted as removing it.
    // Samples under the platform's own JavaScript (cloudflare-internal:*) or the harness do not count.
    let frame = node.callFrame;
    let native = false;
    for (let id = node.id; frame.url === "" && parent.has(id); ) {
      native = true;
      id = parent.get(id);
      frame = nodes.get(id).callFrame;
    }
    if (!inBundle(frame)) continue;
    const module = moduleAt(frame.lineNumber);
    if (module.includes(harness)) continue;
    own += ms;
    ownByDeltas += (profile.timeDeltas[i] ?? 0) / 1000;
    // A second estimator, to show how much the choice matters: each delta, but at most two periods.
    ownCapped += Math.min((profile.timeDeltas[i] ?? 0) / 1000, 2 * period);
    const key = group(module) + (native ? " (native calls)" : "");
    byModule[key] = (byModule[key] ?? 0) + ms;
  }
  const perUnit = Object.fromEntries(
    Object.entries(byModule)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 14)
      .map(([k, v]) => [k, +(v / units).toFixed(3)]),
  );
  return {
    own_js_ms: own / units,
    gc_ms: gc / units,
    by_module_ms: perUnit,
    units,
    sampling_period_ms: +period.toFixed(4),
    // The old figure (sum of deltas), for comparison with earlier notes only.
    own_js_ms_by_deltas: +(ownByDeltas / units).toFixed(3),
    own_js_ms_capped: +(ownCapped / units).toFixed(3),
  };
}

/** The median of profiled windows (by own JS per unit), with every window's figure beside it. */
function medianWindow(windows) {
  const sorted = [...windows].sort((a, b) => a.own_js_ms - b.own_js_ms);
  return { ...sorted[(sorted.length - 1) >> 1], windows: windows.map((x) => +x.own_js_ms.toFixed(3)) };
}

async function stopBareWorker() {
  await miniflare?.dispose();
  miniflare = null;
}

/** postal-mime (and mailbot's parseMail) parsing `sample` K times in one request, in workerd. */
async function parseAlone(sample) {
  const port = await freePort();
  const mf = await startBareWorker("bench/parse-worker.mjs", {}, port);
  const run = async (k, mode) => {
    const t0 = performance.now();
    const res = await mf.dispatchFetch(`http://parse.local/?k=${k}&mode=${mode}`, { method: "POST", body: sample });
    const json = await res.json();
    const outside = performance.now() - t0;
    if (res.status !== 200 || (k > 0 && json.attachments !== 2))
      fail(`parse worker answered ${res.status}: ${JSON.stringify(json)}`);
    return { ...json, outside_ms: outside };
  };
  const result = {};
  for (const mode of ["postal-mime", "parseMail"]) {
    await run(Math.max(20, Math.floor(K / 5)), mode); // warm-up (JIT)
    const empty = await run(0, mode);
    const cpu0 = workerdCpuMs();
    const timed = await run(K, mode);
    const cpu1 = workerdCpuMs();
    result[mode] = {
      k: K,
      ms_per_parse: timed.ms / K,
      // Cross-check from outside workerd: round trip of k parses minus a round trip of none.
      ms_per_parse_outside: (timed.outside_ms - empty.outside_ms) / K,
      workerd_cpu_ms_per_parse: cpu0 == null || cpu1 == null ? null : (cpu1 - cpu0) / K,
    };
  }
  await stopBareWorker();
  return result;
}

/** receiveMail() called directly in workerd, one message at a time, split into D1 / R2 / the rest. */
async function pipelineDirect(n) {
  const port = await freePort();
  const mf = await startBareWorker(
    "bench/pipeline-worker.mjs",
    {
      d1Databases: ["DB"],
      r2Buckets: ["MAIL_BUCKET"],
      // config() refuses to run without the shared domain (src/config.ts).
      // development: the audit key is derived (production refuses to run without AUDIT_HMAC_KEY).
      bindings: { MAIL_DOMAIN, ENVIRONMENT: "development" },
      // SQLite-backed, as wrangler.toml declares them (the hub and the anchor use storage.sql / kv).
      durableObjects: {
        AUDIT_ANCHOR: { className: "AuditAnchor", useSQLite: true },
        EVENT_HUB: { className: "EventHub", useSQLite: true },
        INBOX_COUNTER: { className: "InboxCounter", useSQLite: true },
      },
    },
    port,
  );
  const dirPath = join(ROOT, "migrations");
  const migrations = readdirSync(dirPath)
    .filter((f) => /^\d+.*\.sql$/.test(f))
    .sort()
    .flatMap((f) => readFileSync(join(dirPath, f), "utf8").split("--> statement-breakpoint"))
    .filter((sql) => sql.replace(/^\s*--.*$/gm, "").trim());
  const address = `direct@${MAIL_DOMAIN}`;
  const init = await mf.dispatchFetch("http://pipeline.local/init", {
    method: "POST",
    body: JSON.stringify({ migrations, address }),
  });
  if (init.status !== 200) fail(`pipeline worker /init answered ${init.status}: ${(await init.text()).slice(0, 500)}`);
  const one = async (i, tag) => {
    const res = await mf.dispatchFetch(`http://pipeline.local/receive?to=${encodeURIComponent(address)}`, {
      method: "POST",
      body: message(address, i, tag),
    });
    const json = await res.json().catch(() => null);
    if (res.status !== 200 || json?.outcome !== "stored")
      fail(`pipeline worker answered ${res.status}: ${JSON.stringify(json)}`);
    return json;
  };
  for (let i = 0; i < WARMUP; i++) await one(i, "direct-warm");
  const runs = [];
  const cpu0 = workerdCpuMs();
  for (let i = 0; i < n; i++) runs.push(await one(i, "direct"));
  // The audit chaining of the last messages runs in the background: let it finish in the window.
  await new Promise((r) => setTimeout(r, 300));
  const cpu1 = workerdCpuMs();
  // The ratio's two sides, profiled in the same isolate, in alternating windows: a bare postal-mime
  // parse (parseMail's options) of a message like the pipeline's, then receiveMail() of such
  // messages. Measured in separate workerd instances, the bare parse moved by a third from one
  // instance to the next (JIT and heap state), which moved the ratio as much as the work did.
  const parseOne = async (i) => {
    const res = await mf.dispatchFetch("http://pipeline.local/parse", {
      method: "POST",
      body: message(address, i, "bare"),
    });
    const json = await res.json().catch(() => null);
    if (res.status !== 200 || json?.attachments !== 2)
      fail(`pipeline worker /parse answered ${res.status}: ${JSON.stringify(json)}`);
  };
  for (let i = 0; i < WARMUP; i++) await parseOne(i);
  const per = Math.ceil(n / 2);
  const bareWindows = [];
  const windows = [];
  for (let w = 0; w < PROFILE_WINDOWS; w++) {
    bareWindows.push(
      await profileOwnJs(mf, port, "bench/pipeline-worker.mjs", async () => {
        // More parses than messages per window: a parse is a tenth of a message's work.
        for (let i = 0; i < 3 * per; i++) await parseOne(w * 3 * per + i);
        return 3 * per;
      }),
    );
    windows.push(
      await profileOwnJs(mf, port, "bench/pipeline-worker.mjs", async () => {
        for (let i = 0; i < per; i++) await one(w * per + i, "profiled");
        // The audit chaining of the last messages runs in the background: inside this window.
        await new Promise((r) => setTimeout(r, 300));
        return per;
      }),
    );
  }
  const profiled = medianWindow(windows);
  const bareProfiled = medianWindow(bareWindows);
  // The ratio of each pair of neighbouring windows, then the median: a drift of the machine
  // during the run lands on both sides of a pair.
  const pairMedian = (side) =>
    median(windows.map((w, i) => side(w) / side(bareWindows[i])).filter((r) => Number.isFinite(r)));
  const ratios = {
    own_js: pairMedian((w) => w.own_js_ms),
    own_js_with_gc: pairMedian((w) => w.own_js_ms + w.gc_ms),
    own_js_capped_deltas: pairMedian((w) => w.own_js_ms_capped),
    own_js_by_deltas: pairMedian((w) => w.own_js_ms_by_deltas),
  };
  await stopBareWorker();
  const mean = (key) => runs.reduce((s, r) => s + r[key], 0) / runs.length;
  const ms = mean("ms");
  const d1 = mean("d1_ms");
  const r2 = mean("r2_ms");
  return {
    n,
    ms_per_msg: ms,
    d1_ms: d1,
    r2_ms: r2,
    do_ms: mean("do_ms"),
    d1_calls: mean("d1_calls"),
    r2_calls: mean("r2_calls"),
    do_calls: mean("do_calls"),
    p50_ms: median(runs.map((r) => r.ms)),
    workerd_cpu_ms_per_msg: cpu0 == null || cpu1 == null ? null : (cpu1 - cpu0) / n,
    profiled,
    bare_parse_profiled: bareProfiled,
    ratios,
  };
}

// ---------------------------------------------------------------------------------------------
// Seeding D1 directly

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

/** src/lib/ids.ts encodeTime: 10 Crockford base32 chars of a ms timestamp. */
function encodeTime(ms) {
  let out = "";
  let t = ms;
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[t % 32] + out;
    t = Math.floor(t / 32);
  }
  return out;
}

/** The same encoding as a SQL expression over the integer expression `t`. */
function encodeTimeSql(t) {
  return Array.from({ length: 10 }, (_, k) => `substr('${ALPHABET}', ((${t}) >> ${5 * (9 - k)} & 31) + 1, 1)`).join(
    " || ",
  );
}

const sqlText = (s) => `'${String(s).replace(/'/g, "''")}'`;

function seedSql({ accountId, inboxId, address }, t0) {
  const thread = (j) => `thr_${encodeTime(t0)}${String(j).padStart(16, "0")}`;
  const small = thread(99);
  // Message i (1..SEED, sent at t0 + i minutes) is in the ten-message thread (99) or in bulk thread i % 10.
  const inSmall = (i) => i >= SMALL_THREAD_START && i < SMALL_THREAD_START + 10;
  const threads = new Map();
  for (let i = 1; i <= SEED; i++) {
    const j = inSmall(i) ? 99 : i % 10;
    const t = threads.get(j) ?? { count: 0, last: 0 };
    threads.set(j, { count: t.count + 1, last: t0 + i * 60_000 });
  }
  const threadRows = [...threads].map(([j, { count, last }]) => {
    const subject = j === 99 ? "Ten-message thread" : `Bulk thread ${j}`;
    return `(${sqlText(thread(j))}, ${sqlText(accountId)}, ${sqlText(inboxId)}, ${sqlText(subject)}, ${sqlText(subject.toLowerCase())}, '["ada@sender.example.org"]', ${count}, ${last}, '["unread"]', ${t0}, ${t0})`;
  });
  const body = "Seeded message body: the quarterly numbers look fine, see you on Friday.";
  return `
INSERT INTO threads (id, account_id, inbox_id, subject, subject_key, participants, message_count, last_message_at, labels, created_at, updated_at)
VALUES ${threadRows.join(",\n  ")};
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${SEED}),
  m(i, t) AS (SELECT i, ${t0} + i * 60000 FROM n)
INSERT INTO messages (id, account_id, inbox_id, thread_id, direction, status, from_address, from_name, "to", cc, bcc,
  subject, body_text, headers, headers_truncated, rfc_message_id, "references", labels, attachments, size, raw_key,
  dedupe_key, search_text, search_addresses, envelope_from, envelope_to, created_at, updated_at, received_at)
SELECT 'msg_' || ${encodeTimeSql("t")} || printf('%016d', i), ${sqlText(accountId)}, ${sqlText(inboxId)},
  CASE WHEN i BETWEEN ${SMALL_THREAD_START} AND ${SMALL_THREAD_START + 9} THEN ${sqlText(small)}
       ELSE 'thr_${encodeTime(t0)}' || printf('%016d', i % 10) END,
  'inbound', 'received', 'ada@sender.example.org', 'Ada Sender', ${sqlText(JSON.stringify([address]))}, '[]', '[]',
  'Seeded message ' || i, ${sqlText(body)}, '{}', 0, '<seed-' || i || '@sender.example.org>', '[]', '["unread"]', '[]',
  1200, 'seed/' || i, '<seed-' || i || '@sender.example.org>', ${sqlText(body)}, 'Ada Sender ada@sender.example.org',
  'ada@sender.example.org', ${sqlText(address)}, t, t, t
FROM m;
`;
}

function wranglerEnv() {
  return {
    ...process.env,
    PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ""}`,
    CI: "true",
    WRANGLER_SEND_METRICS: "false",
  };
}

/** `wrangler d1 execute mailbot --local` on the bench worker's state; returns the parsed --json output. */
function d1Execute(dir, args) {
  const r = spawnSync(
    WRANGLER,
    ["d1", "execute", "mailbot", "--local", "--persist-to", localStatePath(dir), "--json", ...args],
    { cwd: ROOT, env: wranglerEnv(), encoding: "utf8", timeout: 600_000, maxBuffer: 64 * 1024 * 1024 },
  );
  if (r.status !== 0)
    fail(
      `wrangler d1 execute failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr || r.stdout).slice(-800)}`,
    );
  try {
    return JSON.parse(r.stdout);
  } catch {
    fail(`wrangler d1 execute printed no JSON: ${r.stdout.slice(0, 500)}`);
  }
}

function queryRows(dir, sql) {
  return d1Execute(dir, ["--command", sql]).flatMap((r) => r.results ?? []);
}

// ---------------------------------------------------------------------------------------------

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

async function rowsRead(base, key, path) {
  const samples = [];
  let last = null;
  for (let i = 0; i < REPEATS; i++) {
    const r = await call(base, "GET", path, { token: key, headers: { "x-mailbot-d1-stats": "1" } });
    if (r.status !== 200) fail(`GET ${path} answered ${r.status}: ${r.text.slice(0, 300)}`, true);
    const read = r.headers.get("x-mailbot-d1-rows-read");
    if (read === null) fail(`GET ${path} has no X-Mailbot-D1-Rows-Read header (is ENVIRONMENT=development?)`);
    samples.push({
      rows_read: Number(read),
      queries: Number(r.headers.get("x-mailbot-d1-queries")),
      unmetered: Number(r.headers.get("x-mailbot-d1-unmetered") ?? 0),
    });
    last = r.json;
  }
  return {
    rows_read: median(samples.map((s) => s.rows_read)),
    queries: median(samples.map((s) => s.queries)),
    unmetered: Math.max(...samples.map((s) => s.unmetered)),
    samples: samples.map((s) => s.rows_read),
    body: last,
  };
}

function plan(dir, sql) {
  return queryRows(dir, `EXPLAIN QUERY PLAN ${sql}`)
    .map((r) => r.detail)
    .join(" / ");
}

async function main() {
  const vars = {
    REGISTRATION: "open",
    ENVIRONMENT: "development",
    ADMIN_TOKEN: adminToken,
    REGISTRATIONS_PER_HOUR: "0",
    MAIL_DOMAIN,
    INBOUND_SECRET: inboundSecret,
    OUTBOUND_TRANSPORT: "dev",
    TIER_LIMITS: JSON.stringify({ sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000 } }),
  };
  const sample = message(`probe@${MAIL_DOMAIN}`, 0, "probe");
  const sizeKb = sample.byteLength / 1024;

  // a) postal-mime alone, in workerd, before wrangler dev starts (nothing else on the CPU).
  const parse = await parseAlone(sample);
  const direct = await pipelineDirect(Math.min(N, 150));
  if (process.env.BENCH_INBOUND_DIRECT_ONLY) {
    // Profiling aid: the in-workerd figures only (no wrangler dev), then stop.
    const parseMs = parse["postal-mime"].ms_per_parse;
    console.log(
      JSON.stringify(
        {
          parse,
          direct,
          ratio_direct: direct.ms_per_msg / parseMs,
          ratio_own_js: direct.ratios.own_js,
          ratios: direct.ratios,
        },
        null,
        1,
      ),
    );
    return;
  }

  // a) the pipeline.
  worker = await startLocalWorker({ label: "mailbot-bench-inbound", vars });
  const base0 = worker.base;
  const mail = await register(base0, "inbound");
  const relay = await register(base0, "relay");
  const seeded = await register(base0, "seeded");
  const spread = [];
  for (let i = 0; i < C; i++) spread.push(await register(base0, `spread${i}`));
  const email = (t) => ({ address: t.address, send: viaEmail(base0, t.address) });
  const relayTo = (t) => ({ address: t.address, send: viaRelay(base0, t.address) });
  const w = await deliverMany([email(mail)], "warm", WARMUP, C);
  if (w.errors) fail(`warm-up deliveries failed: ${JSON.stringify(w.statuses)} ${w.firstError}`, true);
  const single = await deliverMany([email(mail)], "single", SINGLE, 1);
  const pipeline = await deliverMany([email(mail)], "load", N, C);
  const spreadRun = await deliverMany(spread.map(email), "spread", N, C);
  const relaySingle = await deliverMany([relayTo(relay)], "relay1", SINGLE, 1);
  const relayed = await deliverMany([relayTo(relay)], "relay", N, C);
  if (!relayed.d1_per_msg)
    fail("the relay's answers carried no X-Mailbot-D1-* headers (asked with X-Mailbot-D1-Stats)");
  const nobody = { address: `nobody@${MAIL_DOMAIN}` };
  const floor = await deliverMany([email(nobody)], "reject", N, C, (s) => s === 400);
  await worker.stop({ keepDir: true });
  const dir = worker.dir;

  const counts = Object.fromEntries(
    queryRows(
      dir,
      `SELECT inbox_id, count(*) AS n, sum(json_array_length(attachments)) AS att FROM messages WHERE inbox_id IN (${sqlText(mail.inboxId)}, ${sqlText(relay.inboxId)}) GROUP BY inbox_id`,
    ).map((r) => [r.inbox_id, r]),
  );
  const stored = counts[mail.inboxId]?.n ?? 0;
  const expected = WARMUP + SINGLE + N;
  if (stored !== expected) fail(`the email() pipeline stored ${stored} messages, expected ${expected}`);
  if (counts[mail.inboxId].att !== 2 * expected)
    fail(`attachments stored: ${counts[mail.inboxId].att}, expected ${2 * expected}`);
  if ((counts[relay.inboxId]?.n ?? 0) !== SINGLE + N)
    fail(`the relay stored ${counts[relay.inboxId]?.n ?? 0} messages, expected ${SINGLE + N}`);

  // b) seed 100k messages into the third account's inbox, straight into the local D1.
  const t0 = Date.now() - (SEED + 60) * 60_000;
  const seedFile = join(dir, "seed.sql");
  writeFileSync(seedFile, seedSql(seeded, t0));
  const seedStart = performance.now();
  d1Execute(dir, ["--file", seedFile]);
  const seedMs = performance.now() - seedStart;
  const [{ n: seededCount }] = queryRows(
    dir,
    `SELECT count(*) AS n FROM messages WHERE inbox_id = ${sqlText(seeded.inboxId)}`,
  );
  if (seededCount !== SEED) fail(`seeded ${seededCount} messages, expected ${SEED}`);

  const smallThread = `thr_${encodeTime(t0)}${"99".padStart(16, "0")}`;
  const oneMessage = `msg_${encodeTime(t0 + (SEED - 5) * 60_000)}${String(SEED - 5).padStart(16, "0")}`;
  const [acct, inbox] = [sqlText(seeded.accountId), sqlText(seeded.inboxId)];
  const plans = {
    list: plan(
      dir,
      `SELECT * FROM messages WHERE inbox_id = ${inbox} AND account_id = ${acct} ORDER BY id DESC LIMIT 21`,
    ),
    get: plan(
      dir,
      `SELECT * FROM messages WHERE id = ${sqlText(oneMessage)} AND account_id = ${acct} AND inbox_id = ${inbox}`,
    ),
    thread: plan(
      dir,
      `SELECT * FROM messages WHERE thread_id = ${sqlText(smallThread)} AND account_id = ${acct} ORDER BY id ASC LIMIT 200`,
    ),
  };

  // b) the read API on the seeded inbox, with the rows-read header.
  worker = await startLocalWorker({ label: "mailbot-bench-inbound", vars, dir });
  const base = worker.base;
  const inboxPath = `/v1/inboxes/${seeded.inboxId}`;
  // First request of a fresh isolate: verifies the key (Argon2 + D1). Measured separately.
  const cold = await rowsRead(base, seeded.key, `${inboxPath}/messages?limit=1`);
  const list = await rowsRead(base, seeded.key, `${inboxPath}/messages?limit=20`);
  const newest = list.body?.data ?? [];
  if (
    newest.length !== 20 ||
    newest[0]?.id !== `msg_${encodeTime(t0 + SEED * 60_000)}${String(SEED).padStart(16, "0")}`
  )
    fail(
      `the list did not return the newest 20 seeded messages: ${JSON.stringify(newest.map((m) => m.id)).slice(0, 300)}`,
    );
  const get = await rowsRead(base, seeded.key, `${inboxPath}/messages/${oneMessage}`);
  if (get.body?.data?.id !== oneMessage) fail(`GET message returned ${JSON.stringify(get.body).slice(0, 300)}`);
  const thread = await rowsRead(base, seeded.key, `${inboxPath}/threads/${smallThread}`);
  if (thread.body?.data?.messages?.length !== 10)
    fail(`GET thread returned ${thread.body?.data?.messages?.length} messages, expected 10`);
  await worker.stop();
  worker = null;

  // Report.
  const f = (x, d = 1) => (x == null || !Number.isFinite(x) ? "n/a" : x.toFixed(d));
  const parseMs = parse["postal-mime"].ms_per_parse;
  const perMessage = 1000 / pipeline.msg_per_s;
  const ratio = perMessage / parseMs;
  const ratioSingle = single.p50_ms / parseMs;
  const ratioSpread = 1000 / spreadRun.msg_per_s / parseMs;
  const ratioRelay = 1000 / relayed.msg_per_s / parseMs;
  const ownJsRatio = direct.ratios.own_js;
  const targets = { list: 50, get: 10, thread: 30 };
  const result = {
    mode: "wrangler dev, local",
    message_bytes: sample.byteLength,
    attachments: 2,
    messages: N,
    concurrency: C,
    pipeline_email: pipeline,
    pipeline_email_single_stream: single,
    pipeline_email_spread_accounts: spreadRun,
    pipeline_relay_single_stream: relaySingle,
    pipeline_relay: relayed,
    email_harness_floor: floor,
    receive_mail_direct: direct,
    ratio_direct: direct.ms_per_msg / parse["postal-mime"].ms_per_parse,
    ratio_own_js: ownJsRatio,
    parse,
    ratio_concurrent: ratio,
    ratio_single_stream: ratioSingle,
    ratio_spread_accounts: ratioSpread,
    ratio_relay: ratioRelay,
    seed: { messages: SEED, ms: seedMs },
    rows_read: {
      cold_first_request: cold.samples[0],
      list_newest_20: list,
      get_message: get,
      get_thread_10: thread,
    },
    plans,
  };
  for (const k of ["list_newest_20", "get_message", "get_thread_10"]) delete result.rows_read[k].body;

  const errs = (r) => (r.errors ? `  errors ${r.errors} ${JSON.stringify(r.statuses)}` : "  errors 0");
  const cpu = (r) =>
    r.server_cpu_ms_per_msg == null
      ? ""
      : `  server CPU ${f(r.server_cpu_ms_per_msg)} ms/msg (workerd ${f(r.server_cpu_split_ms_per_msg.workerd)}, wrangler node ${f(r.server_cpu_split_ms_per_msg.node)})`;
  const d1 = (r) =>
    r.d1_per_msg
      ? `  D1 per msg: ${f(r.d1_per_msg.queries)} statements (max ${r.d1_per_msg.queries_max}), ${f(r.d1_per_msg.rows_read)} rows read, ${f(r.d1_per_msg.rows_written)} written`
      : "";
  const line = (label, r, note = "") =>
    console.log(
      `${label}: ${f(r.msg_per_s)} msg/s  p50 ${f(r.p50_ms)} ms  p99 ${f(r.p99_ms)} ms${errs(r)}${cpu(r)}${d1(r)}${note}`,
    );
  console.log(
    `mailbot inbound bench (wrangler dev, local) — ${N} messages of ${f(sizeKb)} KB (text + html, 2 attachments), concurrency ${C}`,
  );
  console.log(
    `inbound pipeline: ${f(pipeline.msg_per_s)} msg/s (${f(sizeKb)} KB, 2 attachments, concurrency ${C})  p50 ${f(pipeline.p50_ms)} ms  p99 ${f(pipeline.p99_ms)} ms${errs(pipeline)}${cpu(pipeline)}  [email() via /cdn-cgi/local/email, one inbox]`,
  );
  line(`  single stream (${SINGLE} messages, concurrency 1)`, single);
  line(`  spread over ${C} accounts (concurrency ${C})`, spreadRun, "  [no contention on one account's audit chain]");
  line(`  relay webhook, single stream`, relaySingle);
  line(
    `  relay webhook (concurrency ${C})`,
    relayed,
    "  [POST /webhooks/inbound/raw: same receiveMail, no wrangler email harness]",
  );
  line(
    "  email harness floor (unknown recipient)",
    floor,
    "  [refused after one D1 lookup; wrangler still parses + captures the mail]",
  );
  console.log(
    `postal-mime parse alone: ${f(parseMs, 2)} ms/parse = ${f(1000 / parseMs)} msg/s  (workerd via Miniflare, single stream, ${K} parses; timed outside: ${f(parse["postal-mime"].ms_per_parse_outside, 2)} ms)`,
  );
  console.log(
    `  mailbot parseMail (postal-mime + header shaping): ${f(parse.parseMail.ms_per_parse, 2)} ms/parse = ${f(1000 / parse.parseMail.ms_per_parse)} msg/s`,
  );
  console.log(
    `receiveMail() called directly in workerd: ${f(direct.ms_per_msg, 2)} ms/msg = ${f(1000 / direct.ms_per_msg)} msg/s (single stream, ${direct.n} messages, no HTTP / harness / proxy) — D1 ${f(direct.d1_ms, 2)} ms in ${f(direct.d1_calls)} calls, R2 ${f(direct.r2_ms, 2)} ms in ${f(direct.r2_calls)} calls, Durable Objects ${f(direct.do_ms, 2)} ms in ${f(direct.do_calls)} calls (waits on a 1 ms clock); workerd CPU ${f(direct.workerd_cpu_ms_per_msg, 2)} ms/msg (Worker + simulators, one thread) vs ${f(parse["postal-mime"].workerd_cpu_ms_per_parse, 2)} ms per bare parse`,
  );
  console.log(
    `  own JS (CPU profile, the bundle's code: ours + drizzle, postal-mime, …): ${f(direct.profiled.own_js_ms, 2)} ms/msg vs ${f(direct.bare_parse_profiled.own_js_ms, 2)} ms per bare parse (same isolate, alternating windows); median of the windows' pair ratios ${f(ownJsRatio, 2)}x (target <= 3x); with GC ${f(direct.ratios.own_js_with_gc, 2)}x, deltas capped at two periods ${f(direct.ratios.own_js_capped_deltas, 2)}x, raw deltas (the old figure) ${f(direct.ratios.own_js_by_deltas, 2)}x; GC ${f(direct.profiled.gc_ms, 2)} vs ${f(direct.bare_parse_profiled.gc_ms, 2)} ms apart; by module: ${JSON.stringify(direct.profiled.by_module_ms)}`,
  );
  console.log(
    `ratio: ${f(ratio)}x (target <= 3x) — pipeline wall time per message at concurrency ${C}, one inbox (1/throughput = ${f(perMessage, 2)} ms) / single-stream postal-mime parse (${f(parseMs, 2)} ms)`,
  );
  console.log(
    `  single stream: ${f(ratioSingle)}x (p50 latency, incl. HTTP + wrangler's harness) | spread over ${C} accounts: ${f(ratioSpread)}x | relay webhook: ${f(ratioRelay)}x | receiveMail direct: ${f(result.ratio_direct)}x (its own JS: ${f(ownJsRatio)}x)`,
  );
  console.log(
    `seeded ${SEED} messages + ${Math.min(SEED, 11)} threads straight into local D1 in ${f(seedMs / 1000)} s`,
  );
  const rr = (label, r, target, planText) =>
    console.log(
      `rows_read ${label}: ${r.rows_read} (target <= ${target})  [${r.queries} queries${r.unmetered ? `, ${r.unmetered} unmetered` : ""}; samples ${r.samples.join(",")}]${r.rows_read > target ? `  OVER TARGET — plan: ${planText}` : ""}`,
    );
  rr(`list newest 20 of ${SEED}`, list, targets.list, plans.list);
  rr("get one message", get, targets.get, plans.get);
  rr("get 10-message thread", thread, targets.thread, plans.thread);
  console.log(`rows_read first request of a fresh isolate (key verification included): ${cold.samples[0]}`);
  console.log(`plans: list: ${plans.list} | get: ${plans.get} | thread: ${plans.thread}`);
  console.log(`BENCH_INBOUND_JSON ${JSON.stringify(result)}`);
  if ([single, pipeline, spreadRun, relaySingle, relayed, floor].some((r) => r.errors))
    fail("some deliveries failed; see the errors above");
}

try {
  await main();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await miniflare?.dispose().catch(() => {});
  await worker?.stop({ keepDir: true });
  console.error(`bench: FAILED${worker ? ` (wrangler log kept in ${worker.dir})` : ""}`);
  process.exit(1);
}
