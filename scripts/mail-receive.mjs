// Delivers a raw message to a running mailbot (`npm run dev`), the way mail arrives in production:
// through the email() handler (wrangler's local email endpoint) or the signed relay webhook.
//
//   npm run mail:receive -- --to <address> --file <msg.eml | -> [--from <sender>]
//                           [--url http://localhost:8787] [--via email|relay]
//
// A message without a Message-ID header gets one (wrangler refuses mail without it). The relay
// is signed with INBOUND_SECRET from the environment, else from .dev.vars. The smoke test
// imports deliver() from here, so both take the same path.
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const EMAIL_PREFIX = "Worker rejected email with the following reason: ";

/** The header block of raw mail (up to the first empty line), as text. */
function headerBlock(raw) {
  const text = raw.toString("latin1");
  const end = text.search(/\r?\n\r?\n/);
  return end === -1 ? text : text.slice(0, end);
}

/** The value of the first header called `name` (unfolded), or null. */
export function headerValue(raw, name) {
  const unfolded = headerBlock(raw).replace(/\r?\n[ \t]/g, " ");
  const m = new RegExp(`^${name}[ \\t]*:(.*)$`, "im").exec(unfolded);
  return m ? m[1].trim() : null;
}

/**
 * The message with a Message-ID header: unchanged if it has one, else with
 * `Message-ID: <uuid@mail-receive.local>` put first (in the file's own line ending).
 */
export function withMessageId(raw) {
  if (headerValue(raw, "message-id") !== null) return { raw, added: null };
  const id = `<${randomUUID()}@mail-receive.local>`;
  const eol = /\r\n/.test(headerBlock(raw)) ? "\r\n" : "\n";
  return { raw: Buffer.concat([Buffer.from(`Message-ID: ${id}${eol}`), raw]), added: id };
}

/** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, as the relay endpoint expects. */
export function relaySignature(secret, timestamp, body) {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex")}`;
}

/** INBOUND_SECRET from the environment, else from .dev.vars in the project root, else null. */
export function inboundSecret() {
  if (process.env.INBOUND_SECRET) return process.env.INBOUND_SECRET;
  try {
    const line = readFileSync(join(ROOT, ".dev.vars"), "utf8")
      .split(/\r?\n/)
      .find((l) => l.startsWith("INBOUND_SECRET="));
    return line ? line.slice("INBOUND_SECRET=".length).trim() || null : null;
  } catch {
    return null;
  }
}

/** The address in the From header, for a default envelope sender. */
function fromHeaderAddress(raw) {
  const from = headerValue(raw, "from") ?? "";
  return (/<([^<>\s]+@[^<>\s]+)>/.exec(from) ?? /([^\s<>,;"]+@[^\s<>,;"]+)/.exec(from))?.[1] ?? null;
}

/**
 * Delivers `raw` (a Buffer) to `to` and reports what the server said:
 * { ok, status, via, reason, code, messageId, inboxId, duplicate, addedMessageId, raw, text, json }.
 * `raw` in the result is the exact bytes sent (with any added Message-ID). Network errors throw.
 */
export async function deliver({ raw, to, from, url = "http://localhost:8787", via = "email", secret, timestamp }) {
  const { raw: body, added } = withMessageId(raw);
  const sender = from ?? fromHeaderAddress(body);
  const base = url.replace(/\/+$/, "");
  let res;
  if (via === "relay") {
    const key = secret ?? inboundSecret();
    if (!key) throw new Error("no INBOUND_SECRET: set it in the environment or in .dev.vars (npm run dev writes one)");
    const ts = String(timestamp ?? Math.floor(Date.now() / 1000));
    const query = new URLSearchParams({ to, ...(sender ? { from: sender } : {}) });
    res = await fetch(`${base}/webhooks/inbound/raw?${query}`, {
      method: "POST",
      headers: {
        "content-type": "message/rfc822",
        "x-mailbot-timestamp": ts,
        "x-mailbot-signature": relaySignature(key, ts, body),
      },
      body,
    });
  } else if (via === "email") {
    // wrangler's endpoint needs a non-empty envelope sender.
    const query = new URLSearchParams({ from: sender || "sender@example.com", to });
    res = await fetch(`${base}/cdn-cgi/local/email?${query}`, { method: "POST", body });
  } else {
    throw new Error(`--via must be email or relay, not ${via}`);
  }
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  const ok = via === "relay" ? res.status === 202 : res.status === 200;
  const data = json?.data ?? {};
  return {
    ok,
    status: res.status,
    via,
    reason: ok
      ? null
      : (json?.error?.message ?? (text.startsWith(EMAIL_PREFIX) ? text.slice(EMAIL_PREFIX.length) : text)),
    code: json?.error?.code ?? null,
    messageId: data.message_id ?? null,
    inboxId: data.inbox_id ?? null,
    duplicate: data.duplicate ?? null,
    addedMessageId: added,
    raw: body,
    text,
    json,
  };
}

async function readInput(file) {
  // `npm run` starts scripts in the project root: a relative path means the caller's directory.
  if (file !== "-") return readFileSync(resolve(process.env.INIT_CWD ?? ".", file));
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks);
}

const USAGE = `usage: npm run mail:receive -- --to <address> --file <msg.eml | -> [--from <sender>]
                            [--url http://localhost:8787] [--via email|relay]`;

async function cli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        to: { type: "string" },
        file: { type: "string" },
        from: { type: "string" },
        url: { type: "string", default: "http://localhost:8787" },
        via: { type: "string", default: "email" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.to || !values.file || !["email", "relay"].includes(values.via)) {
    console.error(USAGE);
    return 2;
  }
  let raw;
  try {
    raw = await readInput(values.file);
  } catch (err) {
    console.error(`mail:receive: cannot read ${values.file}: ${err.message}`);
    return 2;
  }
  if (raw.byteLength === 0) {
    console.error("mail:receive: the message is empty");
    return 2;
  }
  const { raw: message, added } = withMessageId(raw);
  if (added) console.error(`mail:receive: the message has no Message-ID header; sending it with Message-ID: ${added}`);

  let result;
  try {
    result = await deliver({ raw: message, to: values.to, from: values.from, url: values.url, via: values.via });
  } catch (err) {
    const cause = err.cause?.code ?? err.cause?.message;
    const hint = err.message === "fetch failed" ? " (is `npm run dev` running?)" : "";
    console.error(`mail:receive: ${err.message}${cause ? ` (${cause})` : ""}${hint}`);
    return 1;
  }
  const base = values.url.replace(/\/+$/, "");
  if (!result.ok) {
    console.error(
      `mail:receive: refused (HTTP ${result.status}${result.code ? ` ${result.code}` : ""}): ${result.reason.trim()}`,
    );
    return 1;
  }
  if (result.via === "relay") {
    console.log(
      result.duplicate
        ? `duplicate: this mail is already stored as ${result.messageId} in ${result.inboxId} (nothing stored twice)`
        : `stored ${result.messageId} in ${result.inboxId} (relay, HTTP ${result.status})`,
    );
    console.log(
      `read it: curl -s ${base}/v1/inboxes/${result.inboxId}/messages/${result.messageId} -H "Authorization: Bearer $KEY"`,
    );
  } else {
    console.log(`delivered to ${values.to}: the email() handler accepted it (HTTP ${result.status})`);
    console.log(`read it: curl -s ${base}/v1/inboxes/$INBOX/messages -H "Authorization: Bearer $KEY"`);
    console.log(`         ($INBOX: the id of the inbox ${values.to} reaches; a repeated Message-ID is stored once)`);
  }
  return 0;
}

const invokedAs = process.argv[1] ? realpathSync(resolve(process.argv[1])) : "";
if (invokedAs === fileURLToPath(import.meta.url)) process.exitCode = await cli();
