// Audit chain benchmark against `wrangler dev` (local, no network): 200 audited writes fired at
// once on ONE account (BENCH_SENDS sends, BENCH_CREATES inbox creates, BENCH_INBOUND inbound
// mails through the signed relay), the way issue 17 measured the per-account chain contention.
// Prints the failures by status, the write latencies, how many entries were still unlinked when
// the last write answered (read from the local D1 file), and how long `GET /v1/audit-log/verify`
// takes to cover the whole chain.
// Usage: npm run bench (BENCH_SUITE=audit for this one only); BENCH_SENDS (default 100),
// BENCH_CREATES (default 50), BENCH_INBOUND (default 50), BENCH_ROUNDS (default 3, each on a
// fresh account of the same worker).

import { spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { localStatePath, startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const SENDS = positiveInt("BENCH_SENDS", 100);
const CREATES = positiveInt("BENCH_CREATES", 50);
const INBOUND = positiveInt("BENCH_INBOUND", 50);
const ROUNDS = positiveInt("BENCH_ROUNDS", 3);
const adminToken = randomBytes(24).toString("base64url");
const inboundSecret = randomBytes(24).toString("base64url");
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

let worker = null;

const pct = (sorted, p) => (sorted.length ? sorted[Math.floor(p * (sorted.length - 1))] : null);

/** One SQL answer from the local D1 file wrangler dev is using (null when the query fails, e.g. before 0017). */
function localSql(sql) {
  const r = spawnSync(
    process.execPath,
    [
      join(ROOT, "node_modules/wrangler/bin/wrangler.js"),
      "d1",
      "execute",
      "mailbot",
      "--local",
      "--persist-to",
      localStatePath(worker.dir),
      "--json",
      "--command",
      sql,
    ],
    { cwd: ROOT, encoding: "utf8", env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false" } },
  );
  try {
    return JSON.parse(r.stdout)[0].results;
  } catch {
    return null;
  }
}

async function timed(fn) {
  const t0 = performance.now();
  const status = await fn().catch(() => "network");
  return { status, ms: performance.now() - t0 };
}

async function post(url, headers, body) {
  const res = await fetch(url, { method: "POST", headers, body });
  await res.arrayBuffer();
  return res.status;
}

async function round(base, i) {
  const r = await call(base, "POST", "/v1/auth/register", {
    body: { email: `bench-audit-${i}-${randomBytes(4).toString("hex")}@example.com` },
  });
  if (r.status !== 201) fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
  const { api_key: key, inbox, account } = r.json.data;
  const lift = await call(base, "PATCH", `/v1/admin/accounts/${account.id}`, {
    token: adminToken,
    body: { new_account_until: null },
  });
  if (lift.status !== 200) fail(`lifting the send limit answered ${lift.status}`, true);
  // Warm the key cache first: 150 cold requests would each run Argon2 and measure that instead.
  const warm = await call(base, "GET", "/v1/inboxes", { token: key });
  if (warm.status !== 200) fail(`GET /v1/inboxes answered ${warm.status}`, true);
  const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const stamp = randomBytes(3).toString("hex");
  const jobs = [];
  for (let n = 0; n < SENDS; n++) {
    const body = JSON.stringify({ to: [`peer-${n}@example.org`], subject: `Bench ${n}`, body_text: "hello" });
    jobs.push(["send", 202, () => post(`${base}/v1/inboxes/${inbox.id}/messages`, auth, body)]);
  }
  for (let n = 0; n < CREATES; n++) {
    const body = JSON.stringify({ username: `b${stamp}${n}` });
    jobs.push(["inbox_create", 201, () => post(`${base}/v1/inboxes`, auth, body)]);
  }
  for (let n = 0; n < INBOUND; n++) {
    const raw = `From: Ana <ana@example.org>\r\nTo: ${inbox.address}\r\nSubject: in ${n}\r\nMessage-ID: <b${stamp}.${n}@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHi ${n}.\r\n`;
    const ts = String(Math.floor(Date.now() / 1000));
    const sig = createHmac("sha256", inboundSecret).update(`${ts}.${raw}`).digest("hex");
    const url = `${base}/webhooks/inbound/raw?to=${encodeURIComponent(inbox.address)}&from=ana%40example.org`;
    const headers = { "x-mailbot-timestamp": ts, "x-mailbot-signature": `sha256=${sig}` };
    jobs.push(["inbound", 202, () => post(url, headers, raw)]);
  }
  const t0 = performance.now();
  const results = await Promise.all(jobs.map(([kind, ok, fn]) => timed(fn).then((x) => ({ kind, ok, ...x }))));
  const burstMs = performance.now() - t0;
  const failures = {};
  for (const x of results.filter((x) => x.status !== x.ok)) {
    const k = `${x.kind}:${x.status}`;
    failures[k] = (failures[k] ?? 0) + 1;
  }
  const lat = results.map((x) => x.ms).sort((a, b) => a - b);
  // Entries committed but not linked yet when the last write answered (no audit_chain before 0017).
  const unlinked = localSql(
    `SELECT COUNT(*) AS n FROM audit_log l WHERE l.account_id = '${account.id}' AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.account_id = l.account_id AND c.seq = l.seq)`,
  );
  const v0 = performance.now();
  const verify = await call(base, "GET", "/v1/audit-log/verify", { token: key });
  const verifyMs = performance.now() - v0;
  return {
    writes: jobs.length,
    failed: results.filter((x) => x.status !== x.ok).length,
    failures,
    burst_ms: burstMs,
    write_p50_ms: pct(lat, 0.5),
    write_p99_ms: pct(lat, 0.99),
    unlinked_after_burst: unlinked?.[0]?.n ?? null,
    verify: verify.json?.data ?? { status: verify.status },
    verify_ms: verifyMs,
  };
}

async function main() {
  worker = await startLocalWorker({
    label: "mailbot-bench-audit",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      INBOUND_SECRET: inboundSecret,
      OUTBOUND_TRANSPORT: "dev",
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({
        sandbox: {
          requests_per_minute: 1_000_000,
          burst: 1_000_000,
          sends_per_inbox_per_day: 1_000_000,
          max_inboxes: 1_000_000,
        },
      }),
    },
  });
  const rounds = [];
  for (let i = 0; i < ROUNDS; i++) rounds.push(await round(worker.base, i));
  await worker.stop();
  worker = null;

  const f = (x) => (x == null ? "n/a" : x.toFixed(1));
  console.log(
    `audit chain (${SENDS} sends + ${CREATES} inbox creates + ${INBOUND} inbound mails at once on one account, wrangler dev):`,
  );
  for (const [i, r] of rounds.entries()) {
    console.log(
      `  round ${i + 1}: failed ${r.failed}/${r.writes} ${JSON.stringify(r.failures)} | burst ${f(r.burst_ms)} ms, write p50 ${f(r.write_p50_ms)} ms p99 ${f(r.write_p99_ms)} ms | unlinked after the burst ${r.unlinked_after_burst ?? "n/a"} | verify ${JSON.stringify(r.verify)} in ${f(r.verify_ms)} ms`,
    );
  }
  console.log(`BENCH_JSON ${JSON.stringify({ mode: "wrangler dev, local", rounds })}`);
  if (rounds.some((r) => r.failed > 0 || r.verify.ok !== true)) fail("a write failed or the chain did not verify");
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
