// Shared by the SDK and CLI tests: a real `wrangler dev` of this repo, a scriptable proxy in
// front of it (to inject 429/503 and dropped responses), mail delivery and account creation.
import { createServer } from "node:http";
import { startDevWorker } from "../scripts/dev-worker.mjs";

export { startReceiver } from "../../../examples/webhooks/receiver.mjs";
export { deliver } from "../../../scripts/mail-receive.mjs";

/** Generous request limits: the tests are about the client, not the server's rate limiter. */
export const TEST_OVERRIDES = {
  TIER_LIMITS: JSON.stringify({ sandbox: { requests_per_minute: 100000, burst: 100000 } }),
};

export async function startWorker(label) {
  return startDevWorker({ label, overrides: TEST_OVERRIDES });
}

export async function register(
  base,
  email = `dev-${Date.now()}-${Math.random().toString(36).slice(2, 8)}@example.com`,
) {
  const res = await fetch(`${base}/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, name: "SDK tests" }),
  });
  const json = await res.json();
  if (res.status !== 201) throw new Error(`register: ${res.status} ${JSON.stringify(json)}`);
  return json.data;
}

/** True when the server has the SSE endpoint (it is built in parallel: until merged, 404). */
export async function hasEventStream(base, key) {
  const ac = new AbortController();
  const res = await fetch(`${base}/v1/events/stream`, {
    headers: { authorization: `Bearer ${key}`, accept: "text/event-stream" },
    signal: ac.signal,
  });
  ac.abort();
  await res.body?.cancel().catch(() => {});
  return res.status !== 404;
}

/**
 * A proxy to `target`. `script(req, seen)` may answer instead of forwarding: return
 * { status, headers, body } to answer, "drop" to forward and then cut the connection without an
 * answer, or undefined to forward. Every request is recorded in `requests`.
 */
export async function startProxy(target) {
  const requests = [];
  const proxy = { requests, script: () => undefined };
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const record = { method: req.method, url: req.url, headers: req.headers, body: body.toString("utf8") };
    requests.push(record);
    const action = proxy.script(record, requests);
    if (action && action !== "drop") {
      res.writeHead(action.status, { "content-type": "application/json", ...action.headers });
      res.end(action.body === undefined ? "" : JSON.stringify(action.body));
      return;
    }
    const headers = { ...req.headers };
    delete headers.host;
    delete headers.connection;
    const upstream = await fetch(target + req.url, {
      method: req.method,
      headers,
      body: ["GET", "HEAD"].includes(req.method) ? undefined : body,
    });
    if (action === "drop") {
      await upstream.arrayBuffer();
      req.socket.destroy();
      return;
    }
    const outHeaders = Object.fromEntries(upstream.headers);
    delete outHeaders["content-length"];
    delete outHeaders["content-encoding"];
    res.writeHead(upstream.status, outHeaders);
    if (!upstream.body) return res.end();
    try {
      for await (const chunk of upstream.body) res.write(chunk);
    } catch {}
    res.end();
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  /** Cuts every open connection (a dropped stream), and keeps listening. */
  proxy.cut = () => server.closeAllConnections();
  proxy.close = () =>
    new Promise((ok) => {
      server.closeAllConnections();
      server.close(ok);
    });
  return proxy;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A tiny RFC 822 message with one attachment. */
export function sampleMail({ from = "ada@example.com", to, subject = "Notes for Thursday" }) {
  return Buffer.from(
    [
      `From: Ada <${from}>`,
      `To: ${to}`,
      `Subject: ${subject}`,
      `Date: ${new Date().toUTCString()}`,
      "MIME-Version: 1.0",
      'Content-Type: multipart/mixed; boundary="b1"',
      "",
      "--b1",
      "Content-Type: text/plain; charset=utf-8",
      "",
      "Please sort them by priority.",
      "--b1",
      'Content-Type: text/plain; name="notes.txt"',
      'Content-Disposition: attachment; filename="notes.txt"',
      "",
      "ship inbound mail",
      "--b1--",
      "",
    ].join("\r\n"),
  );
}
