// Webhook benchmark on a local `wrangler dev` (its queue consumer included), with a receiver
// in this process on 127.0.0.1:
//  a) deliveries per second: a burst of BENCH_WEBHOOK_EVENTS `webhook.test` events (POST
//     /v1/webhooks/{id}/test, concurrency BENCH_WEBHOOK_CONCURRENCY), from the first request to
//     the last signed delivery received;
//  b) inbound email → webhook arrival: BENCH_WEBHOOK_MAILS mails, one at a time, through the
//     email() handler (/cdn-cgi/local/email); the time from sending the mail to the receiver
//     getting its `message.received` delivery, p50/p99.
// Usage: BENCH_SUITE=webhooks npm run bench, or node bench/webhooks.mjs

import { createHmac, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { startLocalWorker } from "../scripts/local-worker.mjs";
import { BenchError, call, fail, positiveInt } from "./common.mjs";

const EVENTS = positiveInt("BENCH_WEBHOOK_EVENTS", 500);
const C = positiveInt("BENCH_WEBHOOK_CONCURRENCY", 16);
const MAILS = positiveInt("BENCH_WEBHOOK_MAILS", 60);
const adminToken = randomBytes(24).toString("base64url");

let worker = null;
let server = null;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, async () => {
    console.error(`bench: interrupted (${sig}); stopping wrangler`);
    await worker?.stop();
    process.exit(130);
  });
}

/** The receiver: verifies each delivery's X-Mailbot-Signature and notes when each event id arrived. */
function startReceiver() {
  const arrivals = new Map();
  const state = { secret: null, bad: 0, total: 0, waiters: [] };
  server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const at = performance.now();
      const body = Buffer.concat(chunks);
      state.total++;
      if (state.secret) {
        const ts = req.headers["x-mailbot-timestamp"];
        const want = `sha256=${createHmac("sha256", state.secret).update(`${ts}.`).update(body).digest("hex")}`;
        if (req.headers["x-mailbot-signature"] !== want) state.bad++;
      }
      const event = JSON.parse(body.toString());
      if (!arrivals.has(event.id)) arrivals.set(event.id, { at, event });
      res.writeHead(200).end("ok");
      for (const w of state.waiters.splice(0)) w();
    });
  });
  const until = async (predicate, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) return false;
      await new Promise((r) => {
        state.waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return true;
  };
  return new Promise((ok) =>
    server.listen(0, "127.0.0.1", () => ok({ port: server.address().port, arrivals, state, until })),
  );
}

const pct = (sorted, p) => sorted[Math.floor(p * (sorted.length - 1))];
const f = (x, d = 1) => (x == null ? "n/a" : x.toFixed(d));

async function main() {
  const receiver = await startReceiver();
  worker = await startLocalWorker({
    label: "mailbot-bench-webhooks",
    vars: {
      REGISTRATION: "open",
      ENVIRONMENT: "development",
      ADMIN_TOKEN: adminToken,
      REGISTRATIONS_PER_HOUR: "0",
      TIER_LIMITS: JSON.stringify({ sandbox: { requests_per_minute: 1_000_000, burst: 1_000_000 } }),
      WEBHOOK_ALLOW_LOCAL: "true",
      MAIL_DOMAIN: "bench.mailbot.test",
    },
  });
  const base = worker.base;
  const reg = await call(base, "POST", "/v1/auth/register", {
    body: { email: `bench-${randomBytes(6).toString("hex")}@example.com` },
  });
  if (reg.status !== 201) fail(`register answered ${reg.status}: ${reg.text.slice(0, 300)}`, true);
  const key = reg.json.data.api_key;
  const address = reg.json.data.inbox.address;
  const hook = await call(base, "POST", "/v1/webhooks", {
    token: key,
    body: { url: `http://127.0.0.1:${receiver.port}/hook`, events: ["message.received"] },
  });
  if (hook.status !== 201) fail(`create webhook answered ${hook.status}: ${hook.text.slice(0, 300)}`, true);
  receiver.state.secret = hook.json.data.secret;
  const webhookId = hook.json.data.id;
  if (!(await receiver.until(() => receiver.arrivals.size >= 1, 30_000)))
    fail("the creation's webhook.test never arrived", true);

  // a) throughput: a burst of test events.
  const before = receiver.arrivals.size;
  const t0 = performance.now();
  let next = 0;
  let refused = 0;
  await Promise.all(
    Array.from({ length: C }, async () => {
      for (let i = next++; i < EVENTS; i = next++) {
        const r = await call(base, "POST", `/v1/webhooks/${webhookId}/test`, { token: key });
        if (r.status !== 202) refused++;
      }
    }),
  );
  const enqueuedMs = performance.now() - t0;
  const complete = await receiver.until(() => receiver.arrivals.size >= before + EVENTS - refused, 120_000);
  const lastAt = Math.max(...[...receiver.arrivals.values()].map((a) => a.at));
  const burstMs = lastAt - t0;
  const delivered = receiver.arrivals.size - before;

  // b) inbound mail → webhook arrival, one mail at a time.
  const latencies = [];
  for (let i = 0; i < MAILS; i++) {
    const subject = `bench ${i} ${randomBytes(4).toString("hex")}`;
    const raw = [
      "From: Ada <ada@sender.example.org>",
      `To: ${address}`,
      `Subject: ${subject}`,
      `Message-ID: <${randomBytes(8).toString("hex")}@sender.example.org>`,
      "MIME-Version: 1.0",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Hello from the webhook bench.",
      "",
    ].join("\r\n");
    const sent = performance.now();
    const res = await fetch(
      `${base}/cdn-cgi/local/email?from=${encodeURIComponent("ada@sender.example.org")}&to=${encodeURIComponent(address)}`,
      { method: "POST", body: raw },
    );
    await res.arrayBuffer();
    if (!res.ok) fail(`email() answered ${res.status}`, true);
    const find = () => [...receiver.arrivals.values()].find((a) => a.event.data?.subject === subject);
    if (!(await receiver.until(() => Boolean(find()), 30_000))) fail(`mail ${i} never reached the webhook`, true);
    latencies.push(find().at - sent);
  }
  await worker.stop();
  server.close();

  const sorted = latencies.sort((a, b) => a - b);
  const result = {
    mode: "wrangler dev, local",
    burst_events: EVENTS,
    burst_concurrency: C,
    burst_refused: refused,
    burst_delivered: delivered,
    burst_complete: complete,
    burst_enqueue_ms: enqueuedMs,
    burst_ms: Math.round(burstMs),
    deliveries_per_s: delivered / (burstMs / 1000),
    mails: MAILS,
    mail_to_webhook_p50_ms: pct(sorted, 0.5),
    mail_to_webhook_p99_ms: pct(sorted, 0.99),
    mail_to_webhook_max_ms: sorted.at(-1),
    bad_signatures: receiver.state.bad,
    deliveries_received: receiver.state.total,
  };
  console.log(`mailbot webhook bench (wrangler dev, local queue consumer, receiver on 127.0.0.1)`);
  console.log(
    `deliveries: ${delivered}/${EVENTS} test events in ${f(burstMs, 0)} ms → ${f(result.deliveries_per_s)} deliveries/s` +
      `  [requests took ${f(enqueuedMs, 0)} ms at concurrency ${C}${refused ? `, ${refused} refused` : ""}]`,
  );
  console.log(
    `inbound email → webhook: p50 ${f(result.mail_to_webhook_p50_ms)} ms  p99 ${f(result.mail_to_webhook_p99_ms)} ms  max ${f(result.mail_to_webhook_max_ms)} ms  (${MAILS} mails, one at a time)`,
  );
  console.log(`signatures checked: ${receiver.state.total} deliveries, ${receiver.state.bad} bad`);
  console.log(`BENCH_JSON ${JSON.stringify(result)}`);
  if (!complete) fail("not every event of the burst arrived within 120 s");
  if (receiver.state.bad > 0) fail("some deliveries had a bad signature");
}

try {
  await main();
} catch (err) {
  console.error(`bench: ${err instanceof BenchError ? err.message : (err?.stack ?? err)}`);
  if (err?.showLog && worker) console.error(`--- last 60 lines of ${worker.logPath} ---\n${worker.tail()}`);
  await worker?.stop({ keepDir: true });
  server?.close();
  console.error(`bench: FAILED${worker ? ` (wrangler log kept in ${worker.dir})` : ""}`);
  process.exit(1);
}
