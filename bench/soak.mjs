// Soak test (issue 17 item 7): mixed traffic against a local `wrangler dev` (scripts/local-worker.mjs)
// for a while: inbound mail through the email() handler, accepted sends (dev transport), lists,
// searches, webhooks to a receiver on 127.0.0.1 and SSE clients on /v1/events/stream. Reports
// errors (goal 0), lost events and messages (goal 0: every mail delivered is listed, every
// message.received event reaches the webhook receiver and every SSE client) and workerd's resident
// memory over time (goal: flat after warm-up). Not in CI.
// Closed loop: SOAK_CONCURRENCY clients (default 4) each run the next operation as soon as their
// last one answered, so a slow machine lowers the rate instead of piling up requests.
// Usage: npm run soak -- --minutes 10   (env SOAK_CONCURRENCY, default 4; SOAK_SSE: SSE clients,
//   default 4; SOAK_READS_ONLY=1: 200 mails first, then only lists and searches, so the local
//   state stops growing and workerd's memory can be judged apart from the simulators' storage)

import { createHmac, randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const argMinutes = process.argv.indexOf("--minutes");
const MINUTES = argMinutes > 0 ? Number(process.argv[argMinutes + 1]) : 10;
if (!(MINUTES > 0)) {
  console.error("soak: --minutes must be a positive number");
  process.exit(1);
}
const CONCURRENCY = positiveInt("SOAK_CONCURRENCY", 4);
const SSE_CLIENTS = positiveInt("SOAK_SSE", 4);
const READS_ONLY = process.env.SOAK_READS_ONLY === "1";
const SAMPLE_MS = 10_000;
const adminToken = randomBytes(24).toString("base64url");

let worker = null;
let server = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await worker?.stop();
    server?.close();
    process.exit(130);
  });
}

/**
 * The Worker isolate's JavaScript heap (MiB used), read through wrangler's inspector (the Chrome
 * DevTools protocol): RSS alone cannot tell a leak in our code from the local simulators' own
 * caches (D1's SQLite, R2's files, Durable Object storage), which live in the same process.
 * Null when the inspector does not answer (Node without a global WebSocket, a wrangler change).
 */
async function isolateHeapMiB(inspectorPort) {
  if (!inspectorPort) return null;
  try {
    // The `ws` client miniflare itself uses: wrangler's inspector proxy refuses Node's built-in
    // WebSocket (its handshake is answered without a 101).
    const WS = createRequire(join(ROOT, "node_modules/wrangler/package.json"))("ws");
    const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
    const url = targets.find((t) => t.webSocketDebuggerUrl)?.webSocketDebuggerUrl;
    if (!url) return null;
    const ws = new WS(url);
    const result = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), 5000);
      ws.onerror = () => {
        clearTimeout(timer);
        resolve(null);
      };
      ws.onopen = () => ws.send(JSON.stringify({ id: 1, method: "Runtime.getHeapUsage" }));
      ws.onmessage = (m) => {
        const msg = JSON.parse(String(m.data));
        if (msg.id !== 1) return;
        clearTimeout(timer);
        resolve(msg.result ?? null);
      };
    });
    ws.close();
    return result ? result.usedSize / 1048576 : null;
  } catch {
    return null;
  }
}

/** Bytes on disk of the local state (D1 databases, R2 objects, Durable Object storage), in MiB. */
function stateMiB(dir) {
  let bytes = 0;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else
        try {
          bytes += statSync(p).size;
        } catch {}
    }
  };
  try {
    walk(`${dir}/state`);
  } catch {}
  return bytes / 1048576;
}

/**
 * Resident memory (MiB) of the workerd processes of this soak's wrangler dev (the Worker's
 * isolates live there), not of other runs on the machine: wrangler is started detached with
 * `--persist-to <dir>/state`, so its process group is found from its command line.
 */
function workerdRssMiB(dir) {
  const pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  const read = (pid, file) => {
    try {
      return readFileSync(`/proc/${pid}/${file}`, "utf8");
    } catch {
      return "";
    }
  };
  // Field 5 of /proc/<pid>/stat is the process group (after the parenthesised command name).
  const pgrp = (pid) => read(pid, "stat").split(") ")[1]?.split(" ")[2];
  const groups = new Set(pids.filter((p) => read(p, "cmdline").includes(`${dir}/state`)).map(pgrp));
  let kib = 0;
  for (const pid of pids) {
    if (!groups.has(pgrp(pid)) || !read(pid, "cmdline").includes("workerd")) continue;
    kib += Number(/VmRSS:\s+(\d+)/.exec(read(pid, "status"))?.[1] ?? 0);
  }
  return kib / 1024;
}

function mail(to, n) {
  return [
    "From: Ada Sender <ada@sender.example.org>",
    `To: ${to}`,
    `Subject: Soak ${n} walrus`,
    `Date: ${new Date().toUTCString()}`,
    `Message-ID: <soak-${n}-${randomBytes(6).toString("hex")}@sender.example.org>`,
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "",
    `Message number ${n}. ${"Some words to index and preview. ".repeat(100)}`,
    "",
  ].join("\r\n");
}

async function main() {
  // The webhook receiver: verifies nothing but counts each event id once.
  const hooked = new Set();
  let hookSecret = "";
  let badSignatures = 0;
  server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const id = req.headers["webhook-id"];
      const ts = req.headers["webhook-timestamp"];
      const sig = String(req.headers["webhook-signature"] ?? "");
      if (hookSecret && id && ts) {
        const key = Buffer.from(hookSecret.replace(/^whsec_/, ""), "base64");
        const want = createHmac("sha256", key).update(`${id}.${ts}.`).update(body).digest("base64");
        if (!sig.split(" ").some((s) => s.endsWith(want))) badSignatures++;
      }
      try {
        const event = JSON.parse(body.toString("utf8"));
        if (event?.type === "message.received") hooked.add(event.data?.message_id);
      } catch {}
      res.writeHead(200).end("ok");
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const port = server.address().port;

  worker = await startLocalWorker({
    label: "mailbot-soak",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({
        // Deliveries over the tier's per-minute cap wait (by design): lifted, so "lost" means lost.
        sandbox: {
          requests_per_minute: 1_000_000,
          burst: 1_000_000,
          sends_per_inbox_per_day: 1_000_000,
          webhook_deliveries_per_minute: 1_000_000,
        },
      }),
      WEBHOOK_ALLOW_LOCAL: "true",
      OUTBOUND_TRANSPORT: "dev",
      MAIL_DOMAIN: "soak.mailbot.test",
    },
  });
  const base = worker.base;
  const reg = await call(base, "POST", "/v1/auth/register", {
    body: { email: `soak-${randomBytes(6).toString("hex")}@example.com` },
  });
  if (reg.status !== 201) fail(`register answered ${reg.status}: ${reg.text.slice(0, 300)}`, true);
  const { api_key: key, account, inbox } = reg.json.data;
  const lift = await call(base, "PATCH", `/v1/admin/accounts/${account.id}`, {
    token: adminToken,
    body: { new_account_until: null },
  });
  if (lift.status !== 200) fail(`lifting the send limit answered ${lift.status}`, true);
  const hook = await call(base, "POST", "/v1/webhooks", {
    token: key,
    body: { url: `http://127.0.0.1:${port}/hook`, events: ["message.received"] },
  });
  if (hook.status !== 201) fail(`create webhook answered ${hook.status}: ${hook.text.slice(0, 300)}`, true);
  hookSecret = hook.json.data.secret;

  // SSE clients: each collects the message ids of message.received events it sees.
  const streams = [];
  const aborter = new AbortController();
  for (let i = 0; i < SSE_CLIENTS; i++) {
    const seen = new Set();
    const res = await fetch(`${base}/v1/events/stream?type=message.received`, {
      headers: { authorization: `Bearer ${key}` },
      signal: aborter.signal,
    });
    if (res.status !== 200) fail(`GET /v1/events/stream answered ${res.status}`, true);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    const pump = (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let at = buf.indexOf("\n\n");
          while (at >= 0) {
            const frame = buf.slice(0, at);
            buf = buf.slice(at + 2);
            const data = frame
              .split("\n")
              .filter((l) => l.startsWith("data:"))
              .map((l) => l.slice(5).trim())
              .join("");
            if (data) {
              try {
                seen.add(JSON.parse(data).data?.message_id);
              } catch {}
            }
            at = buf.indexOf("\n\n");
          }
        }
      } catch {}
    })();
    streams.push({ seen, pump });
  }

  const errors = {};
  const counts = { inbound: 0, send: 0, list: 0, search: 0 };
  const note = (kind, status) => {
    const k = `${kind} ${status}`;
    errors[k] = (errors[k] ?? 0) + 1;
  };
  let n = 0;
  const ops = [
    async () => {
      const i = n++;
      const res = await fetch(
        `${base}/cdn-cgi/local/email?from=ada%40sender.example.org&to=${encodeURIComponent(inbox.address)}`,
        { method: "POST", body: mail(inbox.address, i) },
      );
      await res.arrayBuffer();
      if (res.ok) counts.inbound++;
      else note("inbound", res.status);
    },
    async () => {
      const r = await call(base, "POST", `/v1/inboxes/${inbox.id}/messages`, {
        token: key,
        body: { to: ["someone@example.com"], subject: `Soak send ${n++}`, body_text: "Hello from the soak." },
      });
      if (r.status === 202) counts.send++;
      else note("send", r.status);
    },
    async () => {
      const r = await call(base, "GET", `/v1/inboxes/${inbox.id}/messages?limit=20`, { token: key });
      if (r.status === 200) counts.list++;
      else note("list", r.status);
    },
    async () => {
      const r = await call(base, "GET", `/v1/inboxes/${inbox.id}/messages/search?q=walrus&limit=10`, { token: key });
      if (r.status === 200) counts.search++;
      else note("search", r.status);
    },
  ];

  // Reads only: seed the inbox, then loop over the list and the search.
  if (READS_ONLY) for (let i = 0; i < 200; i++) await ops[0]();
  const loop = READS_ONLY ? ops.slice(2) : ops;

  const sampleMemory = async (t_s) => ({
    t_s,
    workerd_rss_mib: workerdRssMiB(worker.dir),
    isolate_heap_mib: await isolateHeapMiB(worker.inspectorPort),
    state_on_disk_mib: stateMiB(worker.dir),
  });
  const memory = [await sampleMemory(0)];
  const t0 = Date.now();
  const end = t0 + MINUTES * 60_000;
  let tick = 0;
  console.log(
    `soak: ${MINUTES} min, ${CONCURRENCY} clients in a closed loop, ${SSE_CLIENTS} SSE clients, webhook on 127.0.0.1:${port}`,
  );
  const sampler = setInterval(async () => {
    const sample = await sampleMemory(Math.round((Date.now() - t0) / 1000));
    memory.push(sample);
    const heap = sample.isolate_heap_mib == null ? "n/a" : sample.isolate_heap_mib.toFixed(1);
    console.log(
      `t=${String(sample.t_s).padStart(5)} s  workerd RSS ${sample.workerd_rss_mib.toFixed(1)} MiB  isolate heap ${heap} MiB  state on disk ${sample.state_on_disk_mib.toFixed(1)} MiB  ${JSON.stringify(counts)}  errors ${Object.values(errors).reduce((s, v) => s + v, 0)}`,
    );
  }, SAMPLE_MS);
  const client = async () => {
    while (Date.now() < end) {
      const op = loop[tick++ % loop.length];
      await op().catch((err) => note("network", err.cause?.code ?? err.name));
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, client));
  clearInterval(sampler);

  // Drain: every inbound message must be listed, reach the webhook and every SSE client.
  const ids = new Set();
  for (let cursor = null; ; ) {
    const r = await call(
      base,
      "GET",
      `/v1/inboxes/${inbox.id}/messages?direction=inbound&limit=100${cursor ? `&cursor=${cursor}` : ""}`,
      { token: key },
    );
    if (r.status !== 200) fail(`listing for the check answered ${r.status}`, true);
    for (const m of r.json.data) ids.add(m.id);
    cursor = r.json.meta.next_cursor;
    if (!cursor) break;
  }
  const deadline = Date.now() + 30_000;
  const missing = () => ({
    webhook: [...ids].filter((id) => !hooked.has(id)).length,
    sse: streams.map((s) => [...ids].filter((id) => !s.seen.has(id)).length),
  });
  while (Date.now() < deadline) {
    const m = missing();
    if (m.webhook === 0 && m.sse.every((x) => x === 0)) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const lost = missing();
  aborter.abort();
  await worker.stop();
  server.close();

  const warm = memory.filter((s) => s.t_s >= 60);
  const firstWarm = warm[0]?.workerd_rss_mib ?? null;
  const lastWarm = warm.at(-1)?.workerd_rss_mib ?? null;
  const errorTotal = Object.values(errors).reduce((s, v) => s + v, 0);
  const result = {
    minutes: MINUTES,
    concurrency: CONCURRENCY,
    ops_per_s: Object.values(counts).reduce((s, v) => s + v, 0) / (MINUTES * 60),
    sse_clients: SSE_CLIENTS,
    counts,
    errors_total: errorTotal,
    errors,
    inbound_accepted: counts.inbound,
    inbound_listed: ids.size,
    lost_messages: Math.max(0, counts.inbound - ids.size),
    lost_webhook_events: lost.webhook,
    lost_sse_events: lost.sse,
    bad_signatures: badSignatures,
    memory,
    rss_after_warmup_mib: firstWarm,
    rss_end_mib: lastWarm,
    rss_growth_after_warmup_mib: firstWarm != null && lastWarm != null ? lastWarm - firstWarm : null,
    isolate_heap_after_warmup_mib: warm[0]?.isolate_heap_mib ?? null,
    isolate_heap_end_mib: warm.at(-1)?.isolate_heap_mib ?? null,
    state_on_disk_end_mib: memory.at(-1)?.state_on_disk_mib ?? null,
  };
  const f = (x) => (x == null ? "n/a" : x.toFixed(1));
  console.log(`\nsoak summary (${MINUTES} min, wrangler dev on this machine)`);
  console.log(`operations: ${JSON.stringify(counts)}`);
  console.log(`errors: ${errorTotal} (goal 0) ${errorTotal ? JSON.stringify(errors) : ""}`);
  console.log(
    `lost: messages ${result.lost_messages}, webhook events ${lost.webhook}, SSE events ${JSON.stringify(lost.sse)} (goal 0); bad signatures ${badSignatures}`,
  );
  console.log(
    `workerd RSS: start ${f(memory[0].workerd_rss_mib)} MiB, after 1 min ${f(firstWarm)} MiB, end ${f(lastWarm)} MiB (growth after warm-up ${f(result.rss_growth_after_warmup_mib)} MiB; goal: flat)`,
  );
  console.log(
    `Worker isolate JS heap: after 1 min ${f(result.isolate_heap_after_warmup_mib)} MiB, end ${f(result.isolate_heap_end_mib)} MiB; local state on disk at the end ${f(result.state_on_disk_end_mib)} MiB`,
  );
  const out = process.env.SOAK_RESULTS || fileURLToPath(new URL("./soak-results.json", import.meta.url));
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`JSON: ${out}`);
  if (errorTotal || result.lost_messages || lost.webhook || lost.sse.some((x) => x)) process.exitCode = 1;
}

try {
  await main();
} catch (err) {
  console.error(`soak: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await worker?.stop({ keepDir: true });
  server?.close();
  process.exit(1);
}
