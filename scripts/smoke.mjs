// End-to-end smoke test of the README walk-through against a real `wrangler dev` (the same
// bundler and runtime a user gets from `npm run dev`, with the .dev.vars.example settings and
// the real sandbox limits), plus the email trigger through wrangler's local email endpoint.
// Usage: npm run smoke
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { LocalWorkerError, startLocalWorker } from "./local-worker.mjs";

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

  // The real sandbox limits: 10 requests within a second pass, the next is refused.
  const burst = [];
  for (let i = 0; i < 11; i++) burst.push(await call("GET", "/v1/account", { key, pause: 0 }));
  const refused = burst.filter((r) => r.status === 429);
  check(refused.length >= 1 && Number(refused[0].headers.get("retry-after")) >= 1, "burst over 10/s is 429");

  // The email trigger is wired: until the inbound feature lands it refuses mail with a reason.
  const email = await call("POST", "/cdn-cgi/local/email?from=a@example.com&to=sandbox@example.com", {
    // The local email endpoint refuses a message without a Message-ID before any Worker runs.
    raw: [
      "From: a@example.com",
      "To: sandbox@example.com",
      "Subject: hi",
      "Message-ID: <smoke-1@example.com>",
      `Date: ${new Date().toUTCString()}`,
      "",
      "hello",
      "",
    ].join("\r\n"),
  });
  check(email.status === 400 && /not enabled/.test(email.text), "email() rejects with a reason", email.text);

  await worker.stop();
  console.log(`smoke: ok (${checks} checks against wrangler dev)`);
}

try {
  await main();
} catch (err) {
  console.error(err instanceof LocalWorkerError ? `smoke: ${err.message}` : (err?.message ?? err));
  if (worker) console.error(`--- last 40 lines of ${worker.logPath} ---\n${worker.tail(40)}`);
  await worker?.stop({ keepDir: true });
  process.exit(1);
}
