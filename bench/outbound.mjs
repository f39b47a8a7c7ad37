// Outbound benchmark against `wrangler dev` (local, no network):
//  1. p50/p99 of an accepted send (POST /v1/inboxes/:id/messages, 202) versus GET /v1/inboxes/:id,
//     alternated round by round in the same run (target: send p50 <= 2 x GET p50);
//  2. messages per second through the queue consumer to the `dev` transport, and to a real SMTP
//     server (npm smtp-server) started here on 127.0.0.1, measured from the messages' sent_at.
// Usage: npm run bench (BENCH_SUITE=outbound for this one only); BENCH_SENDS (default 400),
// BENCH_CONCURRENCY (default 16), BENCH_DRAIN (messages per transport, default 300),
// BENCH_ACCOUNTS (senders, default 4: each account has one audit hash chain to append to).

import { randomBytes } from "node:crypto";
import { SMTPServer } from "smtp-server";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const N = positiveInt("BENCH_SENDS", 400);
const C = positiveInt("BENCH_CONCURRENCY", 16);
const DRAIN = positiveInt("BENCH_DRAIN", 300);
const ACCOUNTS = positiveInt("BENCH_ACCOUNTS", 4);
const ROUNDS = 2;
const adminToken = randomBytes(24).toString("base64url");

let worker = null;
let smtp = null;

async function start(vars) {
  worker = await startLocalWorker({
    label: "mailbot-bench-outbound",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({
        sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000, sends_per_inbox_per_day: 1_000_000 },
      }),
      ...vars,
    },
  });
  return worker.base;
}

/** Accounts with the new-account send limit lifted (an operator action), one inbox each. */
async function accounts(base) {
  const out = [];
  for (let i = 0; i < ACCOUNTS; i++) {
    const r = await call(base, "POST", "/v1/auth/register", {
      body: { email: `bench-out-${i}-${randomBytes(4).toString("hex")}@example.com` },
    });
    if (r.status !== 201) fail(`register answered ${r.status}: ${r.text.slice(0, 300)}`, true);
    const { api_key: key, account, inbox } = r.json.data;
    const lift = await call(base, "PATCH", `/v1/admin/accounts/${account.id}`, {
      token: adminToken,
      body: { new_account_until: null },
    });
    if (lift.status !== 200) fail(`lifting the send limit answered ${lift.status}: ${lift.text.slice(0, 300)}`, true);
    out.push({ key, inbox });
  }
  return out;
}

const pct = (sorted, p) => sorted[Math.floor(p * (sorted.length - 1))];

/** n requests, c in flight; only 2xx answers become samples. */
async function load(n, c, request) {
  const samples = [];
  const statuses = {};
  let next = 0;
  const run = async () => {
    for (let i = next++; i < n; i = next++) {
      const t0 = performance.now();
      const res = await request(i);
      await res.arrayBuffer();
      if (res.ok) samples.push(performance.now() - t0);
      else statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, c) }, run));
  return { samples, statuses };
}

function summary(runs) {
  const sorted = runs.flatMap((r) => r.samples).sort((a, b) => a - b);
  const statuses = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
  return { samples: sorted.length, p50_ms: pct(sorted, 0.5), p99_ms: pct(sorted, 0.99), errors: statuses };
}

const send = (base, acct, i, to) =>
  fetch(`${base}/v1/inboxes/${acct.inbox.id}/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${acct.key}`, "content-type": "application/json" },
    body: JSON.stringify({
      to: [to ?? `reader${i}@example.org`],
      subject: `Bench ${i}`,
      body_text: `Message ${i}\n${"lorem ipsum ".repeat(40)}`,
    }),
  });

/** Every outbound message of the accounts, read back through the API. */
async function outbound(base, accts) {
  const all = [];
  for (const a of accts) {
    let cursor = null;
    do {
      const q = `direction=outbound&limit=100${cursor ? `&cursor=${cursor}` : ""}`;
      const r = await call(base, "GET", `/v1/inboxes/${a.inbox.id}/messages?${q}`, { token: a.key });
      if (r.status !== 200) fail(`listing messages answered ${r.status}`, true);
      all.push(...r.json.data);
      cursor = r.json.meta.next_cursor;
    } while (cursor);
  }
  return all;
}

/** Sends `count` messages and waits until the consumer has sent them all; rate from sent_at. */
async function drain(base, accts, count, to) {
  const t0 = Date.now();
  const res = await load(count, C, (i) => send(base, accts[i % accts.length], i, to));
  if (res.samples.length !== count)
    fail(`only ${res.samples.length} of ${count} sends accepted ${JSON.stringify(res.statuses)}`, true);
  const deadline = Date.now() + 300_000;
  for (;;) {
    const mine = (await outbound(base, accts)).filter((m) => Date.parse(m.created_at) >= t0 - 1000);
    const done = mine.filter((m) => m.status === "sent" || m.status === "failed");
    if (done.length >= count) {
      const failed = done.filter((m) => m.status === "failed").length;
      const sentAt = done.map((m) => Date.parse(m.sent_at ?? m.updated_at)).sort((a, b) => a - b);
      const createdAt = done.map((m) => Date.parse(m.created_at)).sort((a, b) => a - b);
      const spanS = (sentAt.at(-1) - createdAt[0]) / 1000;
      return { messages: count, failed, seconds: spanS, per_second: count / spanS };
    }
    if (Date.now() > deadline) fail(`only ${done.length} of ${count} messages left the queue within 5 minutes`, true);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function waitAllDone(base, accts) {
  const deadline = Date.now() + 600_000;
  for (;;) {
    const all = await outbound(base, accts);
    if (all.every((m) => m.status === "sent" || m.status === "failed")) return;
    if (Date.now() > deadline) fail("the latency phase's messages did not leave the queue within 10 minutes", true);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function startSmtp() {
  let received = 0;
  smtp = new SMTPServer({
    secure: false,
    disabledCommands: ["STARTTLS"],
    authOptional: true,
    logger: false,
    onData(stream, _session, cb) {
      stream.on("data", () => {});
      stream.on("end", () => {
        received++;
        cb(null, "Ok");
      });
    },
  });
  await new Promise((ok) => smtp.listen(0, "127.0.0.1", ok));
  return { port: smtp.server.address().port, count: () => received };
}

async function main() {
  // 1 + 2a: the dev transport.
  let base = await start({ OUTBOUND_TRANSPORT: "dev" });
  let accts = await accounts(base);
  const sendRuns = [];
  const getRuns = [];
  for (let i = 0; i < 20; i++) await (await send(base, accts[i % ACCOUNTS], i)).arrayBuffer();
  for (let round = 0; round < ROUNDS; round++) {
    sendRuns.push(await load(N, C, (i) => send(base, accts[i % ACCOUNTS], i)));
    getRuns.push(
      await load(N, C, (i) => {
        const a = accts[i % ACCOUNTS];
        return fetch(`${base}/v1/inboxes/${a.inbox.id}`, { headers: { authorization: `Bearer ${a.key}` } });
      }),
    );
  }
  const sends = summary(sendRuns);
  const gets = summary(getRuns);
  // Let the consumer finish the latency phase's backlog, so the drain below starts from empty.
  await waitAllDone(base, accts);
  const devDrain = await drain(base, accts, DRAIN);
  await worker.stop();
  worker = null;

  // 2b: a real SMTP server on loopback, plain text (as in the tests).
  const server = await startSmtp();
  base = await start({
    OUTBOUND_TRANSPORT: "smtp",
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: String(server.port),
    SMTP_SECURITY: "none",
  });
  accts = await accounts(base);
  const smtpDrain = await drain(base, accts, DRAIN);
  await worker.stop();
  worker = null;
  smtp.close();

  const f = (x, d = 2) => (x == null ? "n/a" : x.toFixed(d));
  const result = {
    mode: "wrangler dev, local",
    sends_per_round: N,
    rounds: ROUNDS,
    concurrency: C,
    send: sends,
    get_inbox: gets,
    p50_ratio: sends.p50_ms / gets.p50_ms,
    p99_ratio: sends.p99_ms / gets.p99_ms,
    consumer_dev: devDrain,
    consumer_smtp: { ...smtpDrain, smtp_server_received: server.count() },
  };
  console.log(`mailbot outbound bench (wrangler dev, local) — ${N} x ${ROUNDS} per endpoint, concurrency ${C}`);
  console.log(
    `POST …/messages (202)  p50 ${f(sends.p50_ms)} ms  p99 ${f(sends.p99_ms)} ms  errors ${JSON.stringify(sends.errors)}`,
  );
  console.log(
    `GET /v1/inboxes/:id    p50 ${f(gets.p50_ms)} ms  p99 ${f(gets.p99_ms)} ms  errors ${JSON.stringify(gets.errors)}`,
  );
  console.log(`p50 ratio (send/get): ${f(result.p50_ratio)}   (target <= 2)   p99 ratio: ${f(result.p99_ratio)}`);
  console.log(
    `consumer → dev:  ${devDrain.messages} messages in ${f(devDrain.seconds)} s = ${f(devDrain.per_second, 1)} msg/s (failed ${devDrain.failed})`,
  );
  console.log(
    `consumer → SMTP: ${smtpDrain.messages} messages in ${f(smtpDrain.seconds)} s = ${f(smtpDrain.per_second, 1)} msg/s (failed ${smtpDrain.failed}, server received ${server.count()})`,
  );
  console.log(`BENCH_JSON ${JSON.stringify(result)}`);
}

try {
  await main();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await worker?.stop({ keepDir: true });
  smtp?.close();
  process.exit(1);
}
