/**
 * The held-back set of issue 16: hostile or unusual inputs to the send, relay and webhook
 * endpoints, one row each. Every row states the status (and error code) it must get and whether
 * anything may be stored; none may be a 500. Add a row for each new attack found.
 */
import { describe, expect, it } from "vitest";
import { createAccount, type TestAccount } from "../helpers/accounts";
import { type Call, call } from "../helpers/api";
import { countMessages, countRows } from "../helpers/db";
import { mail } from "../helpers/mail";
import { relaySignature } from "../helpers/relay";
import { relayV2 } from "../helpers/relay-v2";

interface Ctx {
  a: TestAccount;
  /** A distinct client address per row, so the failed-signature throttle never mixes rows. */
  ip: string;
}

interface Row {
  name: string;
  endpoint: "send" | "relay" | "events" | "webhook";
  run: (ctx: Ctx) => Promise<Call>;
  status: number;
  code?: string;
  /** Messages the row may leave in the inbox (default: 0 unless 2xx on send/relay). */
  stored?: number;
}

const list = (p: string, n: number) => Array.from({ length: n }, (_, i) => `${p}${i}@example.org`);
const send = (body: unknown) => (ctx: Ctx) =>
  call("POST", `/v1/inboxes/${ctx.a.inbox.id}/messages`, { key: ctx.a.key, body });
const sendRaw = (rawBody: string) => (ctx: Ctx) =>
  call("POST", `/v1/inboxes/${ctx.a.inbox.id}/messages`, {
    key: ctx.a.key,
    rawBody,
    headers: { "Content-Type": "application/json" },
  });
const ok = { to: ["ana@example.org"], subject: "Hi", body_text: "x" };

async function relayPost(
  ctx: Ctx,
  raw: string | Uint8Array,
  opts: { to?: string; headers?: Record<string, string>; path?: string } = {},
): Promise<Call> {
  const to = opts.to ?? ctx.a.inbox.address;
  const body = typeof raw === "string" ? raw : raw;
  const headers = opts.headers ?? (await relaySignature(raw));
  const { exports } = await import("cloudflare:workers");
  const res = await exports.default.fetch(
    new Request(`http://localhost${opts.path ?? `/webhooks/inbound/raw?to=${encodeURIComponent(to)}`}`, {
      method: "POST",
      headers: { "CF-Connecting-IP": ctx.ip, ...headers },
      body,
    }),
  );
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body: parsed, text };
}
const relayRaw = (raw: string | Uint8Array) => (ctx: Ctx) => relayPost(ctx, raw);
const now = () => Math.floor(Date.now() / 1000);
const hook = (body: unknown) => (ctx: Ctx) => call("POST", "/v1/webhooks", { key: ctx.a.key, body });

const ROWS: Row[] = [
  // ---- send ----
  {
    name: "subject with CRLF header injection",
    endpoint: "send",
    run: send({ ...ok, subject: "Hi\r\nBcc: victim@example.net" }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "subject with NUL",
    endpoint: "send",
    run: send({ ...ok, subject: "Hi\u0000there" }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "subject with ESC (terminal escape)",
    endpoint: "send",
    run: send({ ...ok, subject: "\u001b[31mred" }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "display name with CRLF",
    endpoint: "send",
    run: send({ ...ok, to: ["Eve\r\nBcc: x@example.net <ana@example.org>"] }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "display name with BEL",
    endpoint: "send",
    run: send({ ...ok, to: ["Ana\u0007 <ana@example.org>"] }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "address with a line break",
    endpoint: "send",
    run: send({ ...ok, to: ["ana@example.org\nbcc@example.net"] }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "51 addresses in one list",
    endpoint: "send",
    run: send({ ...ok, to: list("t", 51) }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "150 recipients across to/cc/bcc (D1's 100-parameter limit)",
    endpoint: "send",
    run: send({ ...ok, to: list("t", 50), cc: list("c", 50), bcc: list("b", 50) }),
    status: 422,
    code: "too_many_recipients",
  },
  {
    name: "custom header value with vertical tab",
    endpoint: "send",
    run: send({ ...ok, headers: { "X-Note": "a\u000bb" } }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "custom Bcc header",
    endpoint: "send",
    run: send({ ...ok, headers: { Bcc: "x@example.net" } }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "custom header name with a colon",
    endpoint: "send",
    run: send({ ...ok, headers: { "X-A:B": "x" } }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "attachment filename with a path",
    endpoint: "send",
    run: send({ ...ok, attachments: [{ filename: "../../etc/passwd", content: "eA==" }] }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "attachment with invalid base64",
    endpoint: "send",
    run: send({ ...ok, attachments: [{ filename: "a.bin", content: "!!!!" }] }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "attachment with padding that ends no group (was a 500)",
    endpoint: "send",
    run: send({ ...ok, attachments: [{ filename: "a.bin", content: "abcde=" }] }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "attachment in the URL-safe alphabet",
    endpoint: "send",
    run: send({ ...ok, attachments: [{ filename: "a.bin", content: "-_-_" }] }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "to as a string, not a list",
    endpoint: "send",
    run: send({ ...ok, to: "ana@example.org" }),
    status: 422,
    code: "validation_error",
  },
  {
    name: "subject of 999 characters",
    endpoint: "send",
    run: send({ ...ok, subject: "s".repeat(999) }),
    status: 422,
    code: "validation_error",
  },
  { name: "body that is not JSON", endpoint: "send", run: sendRaw("{not json"), status: 400 },
  {
    name: "HTML-only body of '<a ' x 400k (quadratic before)",
    endpoint: "send",
    run: send({ to: ["ana@example.org"], subject: "a", body_html: "<a ".repeat(400_000) }),
    status: 202,
    stored: 1,
  },
  {
    name: "HTML-only body of '<head></head>' x 100k",
    endpoint: "send",
    run: send({ to: ["ana@example.org"], subject: "h", body_html: "<head></head>".repeat(100_000) }),
    status: 202,
    stored: 1,
  },
  {
    name: "right-to-left override in the subject (not a control)",
    endpoint: "send",
    run: send({ ...ok, subject: "invoice\u202Efdp.exe" }),
    status: 202,
    stored: 1,
  },
  {
    name: "international domain name",
    endpoint: "send",
    run: send({ ...ok, to: ["ana@bücher.example"] }),
    status: 202,
    stored: 1,
  },
  // ---- relay ----
  { name: "relay: empty body", endpoint: "relay", run: relayRaw(""), status: 400, code: "empty_message" },
  {
    name: "relay: signature of 63 hex digits",
    endpoint: "relay",
    run: (ctx) =>
      relayPost(ctx, mail({}), {
        headers: { "X-Mailbot-Timestamp": String(now()), "X-Mailbot-Signature": `sha256=${"a".repeat(63)}` },
      }),
    status: 401,
    code: "malformed_signature",
  },
  {
    name: "relay: timestamp in exponent form",
    endpoint: "relay",
    run: (ctx) =>
      relayPost(ctx, mail({}), {
        headers: { "X-Mailbot-Timestamp": "1e9", "X-Mailbot-Signature": `sha256=${"a".repeat(64)}` },
      }),
    status: 401,
    code: "malformed_signature",
  },
  {
    name: "relay: timestamp 301 s in the future",
    endpoint: "relay",
    run: async (ctx) => {
      const raw = mail({});
      return relayPost(ctx, raw, { headers: await relaySignature(raw, { timestamp: now() + 301 }) });
    },
    status: 401,
    code: "timestamp_out_of_range",
  },
  {
    name: "relay: signed with another secret",
    endpoint: "relay",
    run: async (ctx) => {
      const raw = mail({});
      return relayPost(ctx, raw, { headers: await relaySignature(raw, { secret: "guess" }) });
    },
    status: 401,
    code: "invalid_signature",
  },
  {
    name: "relay: v2 signature with upper-case hex",
    endpoint: "relay",
    run: async (ctx) => {
      const raw = mail({ to: ctx.a.inbox.address });
      const h = await relayV2(raw, ctx.a.inbox.address, "");
      return relayPost(ctx, raw, {
        headers: { ...h, "X-Mailbot-Signature": h["X-Mailbot-Signature"].toUpperCase().replace("V2=", "v2=") },
      });
    },
    status: 202,
    stored: 1,
  },
  {
    name: "relay: declared 30 MiB (refused before reading)",
    endpoint: "relay",
    run: async (ctx) => {
      const raw = mail({});
      return relayPost(ctx, raw, {
        headers: { ...(await relaySignature(raw)), "Content-Length": String(30 * 1024 * 1024) },
      });
    },
    status: 413,
    code: "message_too_large",
  },
  {
    name: "relay: recipient with CRLF",
    endpoint: "relay",
    run: async (ctx) => {
      const raw = mail({});
      return relayPost(ctx, raw, { to: `${ctx.a.inbox.address}\r\nx` });
    },
    status: 404,
    code: "unknown_recipient",
  },
  {
    name: "relay: random binary bytes (kept, never dropped)",
    endpoint: "relay",
    run: relayRaw(crypto.getRandomValues(new Uint8Array(4096))),
    status: 202,
    stored: 1,
  },
  {
    name: "relay: no header block at all",
    endpoint: "relay",
    run: relayRaw("\r\n\r\njust a body\r\n"),
    status: 202,
    stored: 1,
  },
  {
    name: "relay: a __proto__ header",
    endpoint: "relay",
    run: relayRaw(mail({ headers: { __proto__: "polluted", constructor: "x" } })),
    status: 202,
    stored: 1,
  },
  {
    name: "relay: multipart nested 300 deep",
    endpoint: "relay",
    run: relayRaw(
      `${Array.from({ length: 300 }, (_, i) => `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n`).join("")}Content-Type: text/plain\r\n\r\ndeep\r\n`,
    ),
    status: 202,
    stored: 1,
  },
  {
    name: "events: a v2 signature (v1 only there)",
    endpoint: "events",
    run: async (ctx) => {
      const body = JSON.stringify({ events: [] });
      const h = await relayV2(body, "x", "");
      return relayPost(ctx, body, {
        headers: { ...h, "Content-Type": "application/json" },
        path: "/webhooks/inbound/events",
      });
    },
    status: 401,
    code: "malformed_signature",
  },
  // ---- webhooks ----
  {
    name: "webhook: cloud metadata address",
    endpoint: "webhook",
    run: hook({ url: "http://169.254.169.254/latest/meta-data" }),
    status: 422,
  },
  {
    name: "webhook: private 10/8 over https",
    endpoint: "webhook",
    run: hook({ url: "https://10.0.0.1/hook" }),
    status: 422,
  },
  { name: "webhook: IPv6 loopback", endpoint: "webhook", run: hook({ url: "https://[::1]/hook" }), status: 422 },
  { name: "webhook: javascript: URL", endpoint: "webhook", run: hook({ url: "javascript:alert(1)" }), status: 422 },
  { name: "webhook: file: URL", endpoint: "webhook", run: hook({ url: "file:///etc/passwd" }), status: 422 },
  {
    name: "webhook: unknown event type",
    endpoint: "webhook",
    run: hook({ url: "https://example.com/hook", events: ["message.exploded"] }),
    status: 422,
  },
  {
    name: "webhook: URL of 10000 characters",
    endpoint: "webhook",
    run: hook({ url: `https://example.com/${"a".repeat(10_000)}` }),
    status: 422,
  },
];

describe("held-back hostile inputs", () => {
  it("has at least 30 rows", () => {
    expect(ROWS.length).toBeGreaterThanOrEqual(30);
  });

  ROWS.forEach((row, i) => {
    it(`${row.endpoint}: ${row.name}`, async () => {
      const a = await createAccount(`hostile${i}`);
      const before = await countMessages(a.inbox.id);
      const hooks = () => countRows("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE account_id = ?", a.account.id);
      const res = await row.run({ a, ip: `203.0.113.${i + 1}` });
      expect(res.status, res.text.slice(0, 500)).toBe(row.status);
      expect(res.status).not.toBe(500);
      if (row.code) expect(res.body?.error?.code, res.text.slice(0, 500)).toBe(row.code);
      expect(await countMessages(a.inbox.id)).toBe(before + (row.stored ?? 0));
      if (row.endpoint === "webhook") expect(await hooks()).toBe(0);
    });
  });
});
