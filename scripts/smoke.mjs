// End-to-end smoke test of the README walk-through against a real `wrangler dev` (the same
// bundler and runtime a user gets from `npm run dev`, with the .dev.vars.example settings and
// the real sandbox limits), plus receiving mail through wrangler's local email endpoint and the
// signed relay webhook, the operator's key route, a reply-all to the sample mail that leaves the inbox
// clean, and a webhook delivered to the local receiver of examples/webhooks/receiver.mjs.
// wrangler dev runs on a free port of its own (never 8787), so it does not disturb `npm run dev`.
// Usage: npm run smoke
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { startReceiver } from "../examples/webhooks/receiver.mjs";
import { LocalWorkerError, startLocalWorker } from "./local-worker.mjs";
import { deliver } from "./mail-receive.mjs";

const vars = Object.fromEntries(
  readFileSync(new URL("../.dev.vars.example", import.meta.url), "utf8")
    .split("\n")
    .filter((line) => /^[A-Z_]+=/.test(line))
    .map((line) => {
      const [k, ...v] = line.split("=");
      return [k, v.join("=") === "__random__" ? randomBytes(24).toString("base64url") : v.join("=")];
    }),
);

let worker = null;
let receiver = null;
let checks = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(ok, what, detail = "") {
  checks++;
  if (!ok) throw new Error(`smoke: FAILED: ${what}${detail ? `\n${detail}` : ""}`);
}

/** One request, spaced like a person at a terminal (the sandbox allows 10 per second). */
async function call(method, path, { key, body, headers = {}, raw, pause = 150 } = {}) {
  await sleep(pause);
  const h = { ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  if (body !== undefined) h["content-type"] = "application/json";
  const res = await fetch(worker.base + path, { method, headers: h, body: raw ?? (body && JSON.stringify(body)) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, json, text };
}

async function main() {
  worker = await startLocalWorker({ vars, label: "mailbot-smoke" });

  const reg = await call("POST", "/v1/auth/register", { body: { email: "me@example.com", name: "My agents" } });
  check(reg.status === 201 && /^mb_/.test(reg.json?.data?.api_key), "register", reg.text);
  const key = reg.json.data.api_key;
  check(reg.json.data.inbox.address.endsWith(`@${vars.MAIL_DOMAIN}`), "sandbox inbox on MAIL_DOMAIN", reg.text);

  const created = await call("POST", "/v1/inboxes", {
    key,
    body: { username: "support", display_name: "Support agent", labels: ["prod"] },
    headers: { "idempotency-key": "5b6c0c1e-create-support" },
  });
  check(created.status === 201, "create inbox", created.text);
  const replay = await call("POST", "/v1/inboxes", {
    key,
    body: { username: "support", display_name: "Support agent", labels: ["prod"] },
    headers: { "idempotency-key": "5b6c0c1e-create-support" },
  });
  check(
    replay.headers.get("idempotent-replayed") === "true" && replay.json?.data?.id === created.json.data.id,
    "replay",
  );
  const taken = await call("POST", "/v1/inboxes", { key, body: { username: "support" } });
  check(taken.status === 409 && taken.json?.error?.code === "address_taken", "409 on a taken address", taken.text);

  const list = await call("GET", "/v1/inboxes", { key });
  check(list.status === 200 && list.json.data.length === 2, "list inboxes", list.text);
  check(list.headers.get("x-ratelimit-limit") === "60", "sandbox rate limit header", JSON.stringify([...list.headers]));
  const inbox = created.json.data.id;

  const reader = await call("POST", "/v1/api-keys", {
    key,
    body: { name: "reader", scopes: ["read"], inbox_ids: [inbox] },
  });
  check(reader.status === 201 && reader.json.data.key, "create restricted key", reader.text);
  const readerList = await call("GET", "/v1/inboxes", { key: reader.json.data.key });
  check(readerList.json?.data?.length === 1, "restricted key sees one inbox", readerList.text);
  const revoked = await call("DELETE", `/v1/api-keys/${reader.json.data.id}`, { key });
  check(revoked.status === 200 && revoked.json.data.revoked_at, "revoke", revoked.text);
  const afterRevoke = await call("GET", "/v1/inboxes", { key: reader.json.data.key });
  check(afterRevoke.status === 401, "revoked key refused on its next request", afterRevoke.text);

  const off = await call("DELETE", `/v1/inboxes/${inbox}`, { key });
  check(off.json?.data?.disabled_reason === "deactivated", "deactivate", off.text);
  const on = await call("POST", `/v1/inboxes/${inbox}/enable`, { key });
  check(on.json?.data?.status === "active", "enable", on.text);

  const audit = await call("GET", "/v1/audit-log?limit=5", { key });
  check(audit.json?.data?.[0]?.action === "inbox.enabled", "audit log", audit.text);
  const verify = await call("GET", "/v1/audit-log/verify", { key });
  check(verify.json?.data?.ok === true && verify.json.data.checked >= 8, "audit chain verifies", verify.text);

  const admin = await call("GET", "/v1/admin/accounts", { key: vars.ADMIN_TOKEN });
  check(admin.status === 200 && admin.json.data.length === 1, "operator list", admin.text);
  const docs = await call("GET", "/docs");
  const spec = await call("GET", "/openapi.json");
  check(docs.status === 200 && spec.json?.openapi === "3.1.0", "docs and OpenAPI");
  // /docs loads Swagger UI from this deployment (static assets), never from a CDN.
  check(!/https?:\/\//.test(docs.text.replace(/<!doctype[^>]*>/i, "")), "/docs names no outside URL", docs.text);
  for (const asset of ["/swagger-ui/swagger-ui-bundle.js", "/swagger-ui/swagger-ui.css"]) {
    const res = await call("GET", asset);
    check(res.status === 200 && res.text.length > 100_000, `${asset} is served locally`, `${res.status}`);
  }

  // A user who lost the first key: the operator issues one (README, "Operators").
  const issued = await call("POST", `/v1/admin/accounts/${reg.json.data.account.id}/api-keys`, {
    key: vars.ADMIN_TOKEN,
    body: { name: "recovery" },
  });
  check(issued.status === 201 && /^mb_/.test(issued.json?.data?.key), "operator issues a key", issued.text);
  const recovered = await call("GET", "/v1/account", { key: issued.json.data.key });
  check(recovered.json?.data?.id === reg.json.data.account.id, "the issued key works", recovered.text);

  // The real sandbox limits: 10 requests within a second pass, the next is refused.
  const burst = [];
  for (let i = 0; i < 11; i++) burst.push(await call("GET", "/v1/account", { key, pause: 0 }));
  const refused = burst.filter((r) => r.status === 429);
  check(refused.length >= 1 && Number(refused[0].headers.get("retry-after")) >= 1, "burst over 10/s is 429");

  // Receiving mail, as in the README: the sample message through the email() handler (the same
  // code path as `npm run mail:receive`), then read back through the API.
  await sleep(1100); // let the burst's one-second window pass
  const sandbox = reg.json.data.inbox;
  // Webhooks, as in the README: a local receiver (examples/webhooks/receiver.mjs) on 127.0.0.1.
  const deliveries = [];
  receiver = await startReceiver({ port: 0, onDelivery: (d) => deliveries.push(d) });
  const hook = await call("POST", "/v1/webhooks", {
    key,
    body: { url: `${receiver.url}/hooks/mailbot`, events: ["message.received"] },
  });
  check(hook.status === 201 && /^whsec_/.test(hook.json?.data?.secret), "webhook endpoint on 127.0.0.1", hook.text);
  const { verifyStandardWebhook } = await import("../examples/webhooks/verify.mjs");
  const sample = readFileSync(new URL("../examples/hello.eml", import.meta.url));
  const [user, domain] = sandbox.address.split("@");
  const viaEmail = await deliver({ raw: sample, to: `${user}+smoke@${domain}`, url: worker.base });
  check(viaEmail.ok && viaEmail.status === 200, "email() accepts mail for a +tag of the sandbox inbox", viaEmail.text);
  check(/^<[0-9a-f-]{36}@mail-receive\.local>$/.test(viaEmail.addedMessageId ?? ""), "a Message-ID is added");

  const inboxPath = `/v1/inboxes/${sandbox.id}`;
  const received = await call("GET", `${inboxPath}/messages?direction=inbound`, { key });
  const msg = received.json?.data?.[0];
  check(
    received.status === 200 && received.json.data.length === 1 && msg.subject === "Notes for Thursday",
    "the message is listed with its subject",
    received.text,
  );
  check(
    msg.from_address === "ada@example.com" &&
      msg.labels.includes("unread") &&
      /sort them by priority/.test(msg.preview),
    "sender, unread label and the text's preview (lists carry previews, not bodies)",
    received.text,
  );
  const att = msg.attachments[0];
  check(
    msg.attachments.length === 1 && att.filename === "notes.txt" && att.content_type === "text/plain",
    "the attachment is listed",
    JSON.stringify(msg.attachments),
  );
  const attBody = await call("GET", `${inboxPath}/messages/${msg.id}/attachments/${att.id}`, { key });
  check(
    attBody.status === 200 &&
      /ship inbound mail/.test(attBody.text) &&
      /attachment/.test(attBody.headers.get("content-disposition")),
    "attachment download",
    attBody.text,
  );
  await sleep(150);
  const rawRes = await fetch(`${worker.base}${inboxPath}/messages/${msg.id}/raw`, {
    headers: { authorization: `Bearer ${key}` },
  });
  const rawBytes = Buffer.from(await rawRes.arrayBuffer());
  check(
    rawRes.status === 200 && rawBytes.equals(viaEmail.raw),
    "raw download is byte-identical",
    `${rawBytes.length} bytes`,
  );
  check(viaEmail.raw.subarray(-sample.length).equals(sample), "the sent bytes are the file plus one Message-ID line");

  // Creating the endpoint sends it a webhook.test event first; the mail is message.received.
  const receivedHook = () => deliveries.find((d) => d.event?.type === "message.received");
  for (let i = 0; i < 80 && !receivedHook(); i++) await sleep(250);
  check(
    deliveries[0]?.event?.type === "webhook.test",
    "a new endpoint gets webhook.test",
    JSON.stringify(deliveries[0]?.event ?? null),
  );
  const delivered = receivedHook();
  check(
    delivered?.event?.type === "message.received" && delivered.event.data.message_id === msg.id,
    "the local receiver gets message.received",
    JSON.stringify(delivered?.event ?? null).slice(0, 300),
  );
  check(verifyStandardWebhook(hook.json.data.secret, delivered.headers, delivered.body), "the delivery verifies");
  await receiver.close();
  receiver = null;

  const found = await call("GET", `${inboxPath}/messages/search?q=thursday`, { key });
  check(found.json?.data?.[0]?.id === msg.id, "search finds it", found.text);
  const read = await call("PATCH", `${inboxPath}/messages/${msg.id}`, { key, body: { remove_labels: ["unread"] } });
  check(read.status === 200 && !read.json.data.labels.includes("unread"), "mark read", read.text);

  const unknown = await deliver({ raw: sample, to: `nobody@${domain}`, url: worker.base });
  check(
    unknown.status === 400 && /nobody@/.test(unknown.reason ?? ""),
    "email() refuses an unknown recipient with a reason",
    unknown.text,
  );

  // The relay webhook: signed with INBOUND_SECRET, refused with any other key.
  const relayRaw = Buffer.from(
    [
      "From: Grace Hopper <grace@example.com>",
      `To: ${sandbox.address}`,
      "Subject: Sorted",
      `In-Reply-To: ${msg.rfc_message_id}`,
      "Message-ID: <smoke-relay-1@example.com>",
      `Date: ${new Date().toUTCString()}`,
      "",
      "Relayed.",
      "",
    ].join("\r\n"),
  );
  const relay = { raw: relayRaw, to: sandbox.address, url: worker.base, via: "relay", secret: vars.INBOUND_SECRET };
  // A long-poll waiting for Grace's mail, answered by the relayed delivery below.
  const since = new Date(Date.now() - 1000).toISOString();
  const waiting = call(
    "GET",
    `${inboxPath}/messages/wait?from_address=grace@example.com&since=${since}&timeout_ms=15000`,
    {
      key,
      pause: 0,
    },
  );
  const forged = await deliver({ ...relay, secret: "not-the-secret" });
  check(forged.status === 401 && forged.code === "invalid_signature", "relay refuses a bad signature", forged.text);
  const stale = await deliver({ ...relay, timestamp: Math.floor(Date.now() / 1000) - 600 });
  check(stale.status === 401 && stale.code === "timestamp_out_of_range", "relay refuses an old timestamp", stale.text);
  const relayed = await deliver(relay);
  check(
    relayed.status === 202 && /^msg_/.test(relayed.messageId) && relayed.duplicate === false,
    "relay",
    relayed.text,
  );
  check(relayed.inboxId === sandbox.id, "relay reaches the sandbox inbox", relayed.text);
  const again = await deliver(relay);
  check(
    again.duplicate === true && again.messageId === relayed.messageId,
    "relay redelivery is stored once",
    again.text,
  );
  const waited = await waiting;
  check(waited.status === 200 && waited.json.data.id === relayed.messageId, "long-poll answers with it", waited.text);
  const thread = await call("GET", `${inboxPath}/threads/${msg.thread_id}`, { key });
  check(thread.json?.data?.messages?.length === 2, "the reply joins the thread by In-Reply-To", thread.text);

  // Reply-all to the sample (README, "Sending mail"): Ada, and Cc agents@ and Grace, all outside
  // addresses, so the dev transport sends it and the inbox stays clean (no bounce, no suppression).
  // The operator-issued key does it (its own rate-limit budget).
  const key2 = issued.json.data.key;
  const settle = async (path, k = key) => {
    for (let i = 0; i < 60; i++) {
      const r = await call("GET", path, { key: k, pause: 250 });
      if (["sent", "failed"].includes(r.json?.data?.status)) return r;
    }
    return call("GET", path, { key: k });
  };
  const all = await call("POST", `/v1/messages/${msg.id}/reply`, {
    key: key2,
    body: { body_text: "Sorted: see the list below.", reply_all: true },
    headers: { "idempotency-key": randomBytes(16).toString("hex") },
  });
  check(all.status === 202, "reply-all is accepted", all.text);
  const allDone = await settle(`${inboxPath}/messages/${all.json.data.id}`, key2);
  const recipients = [...allDone.json.data.to, ...allDone.json.data.cc].map((a) => a.address ?? a).join(",");
  check(
    allDone.json.data.status === "sent" &&
      /ada@/.test(recipients) &&
      /grace@/.test(recipients) &&
      /agents@/.test(recipients),
    "reply-all goes to Ada, agents@ and Grace and is sent",
    allDone.text,
  );
  const rep = await call("GET", `${inboxPath}/reputation`, { key: key2 });
  check(rep.json?.data?.status === "ok" && rep.json.data.bounced === 0, "the inbox stays clean", rep.text);
  const supp = await call("GET", "/v1/suppressions", { key: key2 });
  check(supp.json?.data?.length === 0, "nothing is suppressed", supp.text);

  // Sending: the queue consumer runs under wrangler dev too. Outside addresses go to the dev
  // transport; an address of this deployment is delivered internally, and the reply threads.
  const support = created.json.data;
  const out = await call("POST", `${inboxPath}/messages`, {
    key,
    body: { to: ["Ana <ana@example.com>"], subject: "Hello from the smoke test", body_text: "Hi Ana" },
    headers: { "idempotency-key": "smoke-send-1" },
  });
  check(out.status === 202 && out.json.data.status === "queued", "send is accepted (202 queued)", out.text);
  const outDone = await settle(`${inboxPath}/messages/${out.json.data.id}`);
  check(outDone.json?.data?.status === "sent", "the consumer sends it (dev transport)", outDone.text);
  const outRaw = await call("GET", `${inboxPath}/messages/${out.json.data.id}/raw`, { key });
  check(/^Subject: Hello from the smoke test\r$/m.test(outRaw.text), "its raw bytes are served", outRaw.text);
  const toSupport = await call("POST", `${inboxPath}/messages`, {
    key,
    body: { to: [support.address], subject: "Internal hello", body_text: "Ping" },
  });
  check(toSupport.status === 202, "send to another inbox of the deployment", toSupport.text);
  const arrived = await call(
    "GET",
    `/v1/inboxes/${support.id}/messages/wait?subject_contains=Internal&since=2000-01-01T00:00:00Z&timeout_ms=20000`,
    { key },
  );
  check(arrived.status === 200 && arrived.json.data.direction === "inbound", "it arrives internally", arrived.text);
  const answer = await call("POST", `/v1/messages/${arrived.json.data.id}/reply`, { key, body: { body_text: "Pong" } });
  check(answer.status === 202 && answer.json.data.subject === "Re: Internal hello", "reply (one Re:)", answer.text);
  const back = await call(
    "GET",
    `${inboxPath}/messages/wait?subject_contains=Re%3A%20Internal&since=2000-01-01T00:00:00Z&timeout_ms=20000`,
    { key },
  );
  check(
    back.status === 200 && back.json.data.thread_id === toSupport.json.data.thread_id,
    "the reply arrives in the sender's thread",
    back.text,
  );

  // MCP: the official SDK client over Streamable HTTP, the way an agent connects (README).
  await sleep(1100); // connecting is a few requests at once; stay under the sandbox's 10 per second
  const { Client } = await import("@modelcontextprotocol/sdk/client/index.js");
  const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
  const mcp = new Client({ name: "mailbot-smoke", version: "1.0.0" });
  await mcp.connect(
    new StreamableHTTPClientTransport(new URL(`${worker.base}/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${key}` } },
    }),
  );
  const { tools } = await mcp.listTools();
  check(
    tools.some((t) => t.name === "search_messages") && tools.length >= 14,
    "MCP lists the tools",
    JSON.stringify(tools.map((t) => t.name)),
  );
  const mcpFound = await mcp.callTool({
    name: "search_messages",
    arguments: { inbox_id: sandbox.id, query: "Internal hello" },
  });
  check(
    !mcpFound.isError && mcpFound.structuredContent?.items?.some((m) => m.id === toSupport.json.data.id),
    "MCP search_messages finds the sent message",
    JSON.stringify(mcpFound).slice(0, 500),
  );
  await mcp.close();

  await worker.stop();
  console.log(`smoke: ok (${checks} checks against wrangler dev)`);
}

try {
  await main();
} catch (err) {
  console.error(err instanceof LocalWorkerError ? `smoke: ${err.message}` : (err?.message ?? err));
  if (worker) console.error(`--- last 40 lines of ${worker.logPath} ---\n${worker.tail(40)}`);
  await receiver?.close();
  await worker?.stop({ keepDir: true });
  process.exit(1);
}
