// Side-by-side list bench against a peer (issue 17 item 5): cfagentmail
// (github.com/saram-io/cfagentmail), run from a checkout of its own that is NOT part of this
// repo. Both Workers run under this repo's wrangler (the same workerd; the peer's own wrangler 3
// has no local email endpoint to deliver mail with), each on a fresh temp state dir, and each gets
// one inbox holding the same 20 plain-text mails of ~51 KB, delivered through its email() handler
// (/cdn-cgi/local/email) the way Email Routing would. Then, with the same client code as
// bench/lists.mjs (bench/list-load.mjs) and the same request counts, rounds alternating between
// the endpoints of both so drift hits them alike:
//   mailbot GET /v1/inboxes/{id}                (the yardstick: a list should cost about this)
//   mailbot GET /v1/inboxes/{id}/messages?limit=20
//   peer    GET /v1/inboxes/{id}                (for reference)
//   peer    GET /v1/inboxes/{id}/messages?limit=20
// at concurrency 1 and 16, each side with an API key of its own (the peer's inbox-scoped key).
// Goal: mailbot list p50 <= 0.2 x the peer's at both concurrencies.
//
// Usage: PEER_DIR=/path/to/cfagentmail node bench/peer-lists.mjs   (or --peer-dir <path>)
//   The peer dir needs its dependencies (`npm ci` in it). PEER_URL=http://127.0.0.1:<port> uses an
//   already running peer instead (it must be a wrangler dev that takes /cdn-cgi/local/email).
//   Without a peer it prints a skip line and exits 0, so `npm run bench` does not need one.
//   env BENCH_LIST_REQUESTS (per endpoint and concurrency, default 400), BENCH_PEER_RESULTS (JSON
//   output, default bench/peer-results.json). Ports come from 8791-8799.

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";
import { load, message, summarize } from "./list-load.mjs";

const N = positiveInt("BENCH_LIST_REQUESTS", 400);
const MESSAGES = 20;
const WARMUP = 20;
const GOAL = 0.2;
const PORT_RANGE = [8791, 8799];
const SENDER = "ada@sender.example.org";

function option(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}
const peerDirArg = option("--peer-dir") ?? process.env.PEER_DIR;
const peerUrl = process.env.PEER_URL?.replace(/\/+$/, "");

const workers = [];
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    await Promise.all(workers.map((w) => w.stop()));
    process.exit(130);
  });
}

function skip(why) {
  console.log(`peer-lists: skipped — ${why}`);
  process.exit(0);
}

/** The peer's wrangler config file in `dir`, or null. */
function peerConfig(dir) {
  for (const f of ["wrangler.jsonc", "wrangler.json", "wrangler.toml"]) {
    if (existsSync(join(dir, f))) return join(dir, f);
  }
  return null;
}

/** Free ports from 8791-8799 (the range this bench may use), lowest first. */
async function portsInRange(count) {
  const free = (port) =>
    new Promise((ok) => {
      const srv = createServer().once("error", () => ok(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => ok(true)));
    });
  const out = [];
  for (let p = PORT_RANGE[0]; p <= PORT_RANGE[1] && out.length < count; p++) if (await free(p)) out.push(p);
  if (out.length < count) fail(`needs ${count} free ports in ${PORT_RANGE.join("-")}, found ${out.length}`);
  return out;
}

function deliver(base, to, raw) {
  return fetch(`${base}/cdn-cgi/local/email?from=${encodeURIComponent(SENDER)}&to=${encodeURIComponent(to)}`, {
    method: "POST",
    body: raw,
  });
}

async function seedMailbot(base) {
  const r = await call(base, "POST", "/v1/auth/register", {
    body: { email: `bench-peer-lists-${randomBytes(6).toString("hex")}@example.com` },
  });
  const d = r.json?.data;
  if (r.status !== 201 || !d?.api_key) fail(`mailbot: register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  const { api_key: key, inbox } = d;
  for (let i = 0; i < MESSAGES; i++) {
    const res = await deliver(base, inbox.address, message(inbox.address, i));
    await res.arrayBuffer();
    if (!res.ok) fail(`mailbot: delivering mail ${i} answered ${res.status}`, true);
  }
  const check = await call(base, "GET", `/v1/inboxes/${inbox.id}/messages?limit=20&include=body`, { token: key });
  const sizes = (check.json?.data ?? []).map((m) => Buffer.byteLength(m.body_text ?? ""));
  if (sizes.length !== MESSAGES) fail(`mailbot: expected ${MESSAGES} messages, the list has ${sizes.length}`, true);
  return {
    key,
    inboxUrl: `${base}/v1/inboxes/${inbox.id}`,
    listUrl: `${base}/v1/inboxes/${inbox.id}/messages?limit=20`,
    bodyBytes: Math.round(sizes.reduce((s, b) => s + b, 0) / sizes.length),
  };
}

/**
 * The peer as its users run it: create an inbox, an inbox-scoped API key, then mail arrives
 * through its email() handler (which swallows its own errors, hence the count check after).
 */
async function seedPeer(base) {
  const username = `bench-${randomBytes(6).toString("hex")}`;
  const created = await call(base, "POST", "/v1/inboxes", { body: { username } });
  const inboxId = created.json?.inbox_id ?? created.json?.id;
  const address = created.json?.email;
  if (created.status !== 201 || !inboxId || !address)
    fail(`peer: POST /v1/inboxes answered ${created.status}: ${created.text.slice(0, 300)}`, true);
  const id = encodeURIComponent(inboxId);
  const k = await call(base, "POST", `/v1/inboxes/${id}/api-keys`, { body: { name: "bench" } });
  const key = k.json?.api_key;
  if (k.status !== 201 || !key) fail(`peer: POST api-keys answered ${k.status}: ${k.text.slice(0, 300)}`, true);
  for (let i = 0; i < MESSAGES; i++) {
    const res = await deliver(base, address, message(address, i));
    await res.arrayBuffer();
    if (!res.ok) fail(`peer: delivering mail ${i} answered ${res.status}`, true);
  }
  const list = await call(base, "GET", `/v1/inboxes/${id}/messages?limit=20`, { token: key });
  const items = list.json?.messages ?? [];
  if (items.length !== MESSAGES) fail(`peer: expected ${MESSAGES} messages, the list has ${items.length}`, true);
  const one = await call(base, "GET", `/v1/inboxes/${id}/messages/${encodeURIComponent(items[0].id)}`, {
    token: key,
  });
  const text = one.json?.text ?? one.json?.message?.text ?? "";
  return {
    key,
    inboxUrl: `${base}/v1/inboxes/${id}`,
    listUrl: `${base}/v1/inboxes/${id}/messages?limit=20`,
    bodyBytes: Buffer.byteLength(text),
  };
}

function gitHead(dir) {
  const r = spawnSync("git", ["-C", dir, "rev-parse", "HEAD"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : null;
}

async function main() {
  let peerDir = null;
  if (!peerUrl) {
    if (!peerDirArg) skip("no peer given (PEER_DIR=/path/to/cfagentmail, --peer-dir <path>, or PEER_URL)");
    peerDir = resolve(peerDirArg);
    if (!peerConfig(peerDir)) skip(`no wrangler config in ${peerDir}`);
    if (!existsSync(join(peerDir, "node_modules"))) skip(`${peerDir} has no node_modules (run npm ci in it)`);
  }
  const cfg = peerDir ? readFileSync(peerConfig(peerDir), "utf8") : "";
  const database = /"?database_name"?\s*[:=]\s*"([^"]+)"/.exec(cfg)?.[1] ?? "cfagentmail-db";

  const ports = await portsInRange(peerDir ? 4 : 2);
  const mailbot = await startLocalWorker({
    label: "mailbot-bench-peer-lists",
    ports: ports.slice(0, 2),
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({ sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000 } }),
    },
  });
  workers.push(mailbot);
  let peerBase = peerUrl;
  if (peerDir) {
    const peer = await startLocalWorker({
      label: "peer-bench-lists",
      ports: ports.slice(2, 4),
      cwd: peerDir,
      database,
      healthPath: "/v1/health",
      vars: {},
    });
    workers.push(peer);
    peerBase = peer.base;
  }

  const m = await seedMailbot(mailbot.base);
  const p = await seedPeer(peerBase);

  const endpoints = [
    { name: "mailbot_inbox_get", url: m.inboxUrl, key: m.key },
    { name: "mailbot_list", url: m.listUrl, key: m.key },
    { name: "peer_inbox_get", url: p.inboxUrl, key: p.key },
    { name: "peer_list", url: p.listUrl, key: p.key },
  ];
  const result = {
    suite: "peer-lists",
    mode: "wrangler dev, local, both under this repo's wrangler",
    at: new Date().toISOString(),
    peer: peerDir ? { dir: peerDir, commit: gitHead(peerDir) } : { url: peerUrl },
    messages: MESSAGES,
    body_bytes_avg: { mailbot: m.bodyBytes, peer: p.bodyBytes },
    requests: N,
    goal: `mailbot list p50 <= ${GOAL} x peer list p50`,
    by_concurrency: {},
  };
  for (const c of [1, 16]) {
    for (const e of endpoints) await load(e.url, e.key, WARMUP, c);
    const runs = endpoints.map(() => []);
    for (let round = 0; round < 2; round++) {
      for (const [i, e] of endpoints.entries()) runs[i].push(await load(e.url, e.key, N / 2, c));
    }
    const r = Object.fromEntries(endpoints.map((e, i) => [e.name, summarize(runs[i])]));
    r.list_p50_mailbot_over_peer = r.mailbot_list.p50_ms / r.peer_list.p50_ms;
    r.list_p99_mailbot_over_peer = r.mailbot_list.p99_ms / r.peer_list.p99_ms;
    r.goal_met = r.list_p50_mailbot_over_peer <= GOAL;
    result.by_concurrency[c] = r;
  }
  await Promise.all(workers.map((w) => w.stop()));

  const f = (x, d = 2) => (x == null || !Number.isFinite(x) ? "n/a" : x.toFixed(d));
  console.log(
    `mailbot vs peer list bench (wrangler dev, local) — ${MESSAGES} messages of ~${f(m.bodyBytes / 1000, 1)} KB (peer ~${f(p.bodyBytes / 1000, 1)} KB) text, ${N} requests per endpoint`,
  );
  for (const [c, r] of Object.entries(result.by_concurrency)) {
    for (const [name, s] of [
      ["mailbot GET inbox", r.mailbot_inbox_get],
      ["mailbot list 20", r.mailbot_list],
      ["peer GET inbox", r.peer_inbox_get],
      ["peer list 20", r.peer_list],
    ]) {
      console.log(
        `c=${String(c).padEnd(3)} ${name.padEnd(18)} p50 ${f(s.p50_ms).padStart(7)} ms  p99 ${f(s.p99_ms).padStart(7)} ms  ${f(s.response_bytes / 1000, 1).padStart(6)} KB  errors ${s.errors}`,
      );
    }
    console.log(
      `c=${String(c).padEnd(3)} list p50 mailbot / peer: ${f(r.list_p50_mailbot_over_peer)}  (goal <= ${GOAL}: ${r.goal_met ? "met" : "NOT met"})   p99: ${f(r.list_p99_mailbot_over_peer)}`,
    );
  }
  const out = process.env.BENCH_PEER_RESULTS || fileURLToPath(new URL("./peer-results.json", import.meta.url));
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`JSON: ${out}`);
  console.log(`BENCH_JSON ${JSON.stringify(result)}`);
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
