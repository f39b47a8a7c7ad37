// The dashboard in a real browser: Playwright (playwright-core) driving Debian's Chromium against
// a real `wrangler dev` with throwaway state (scripts/local-worker.mjs). `npm run test:browser`.
// Also writes the README's screenshots to docs/screenshots/ and prints each page's weight.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";
import { startLocalWorker } from "../../scripts/local-worker.mjs";
import { deliver } from "../../scripts/mail-receive.mjs";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = new URL("../../docs/screenshots/", import.meta.url).pathname;

const vars = Object.fromEntries(
  readFileSync(new URL("../../.dev.vars.example", import.meta.url), "utf8")
    .split("\n")
    .filter((line) => /^[A-Z_]+=/.test(line))
    .map((line) => {
      const [k, ...v] = line.split("=");
      return [k, v.join("=") === "__random__" ? randomBytes(24).toString("base64url") : v.join("=")];
    }),
);

let passed = 0;
/** The page whose text a failure prints (set once the browser is up). */
let current = null;
const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    results.push(`ok   ${name} (${Date.now() - t0} ms)`);
    console.log(`ok   ${name}`);
  } catch (err) {
    results.push(`FAIL ${name}: ${err.stack ?? err}`);
    const seen = current
      ? `${current.url()}\n${((await current.textContent("main").catch(() => "")) ?? "").slice(0, 800)}`
      : "";
    console.log(`FAIL ${name}\n${err.stack ?? err}\n--- page: ${seen}`);
  }
}
function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A local HTTP listener that records every request (the hostile mail's target, the webhook receiver). */
function listener(handler) {
  const hits = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      hits.push({ method: req.method, url: req.url, body });
      if (handler) return handler(req, res);
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok");
    });
  });
  return new Promise((ok) =>
    server.listen(0, "127.0.0.1", () => ok({ hits, port: server.address().port, close: () => server.close() })),
  );
}

async function api(base, method, path, key, body) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body && JSON.stringify(body),
  });
  return { status: res.status, json: await res.json().catch(() => null) };
}

function mail({ from, to, subject, text, html }) {
  const boundary = "b1";
  const head = `From: ${from}\r\nTo: ${to}\r\nSubject: ${subject}\r\nDate: ${new Date().toUTCString()}\r\nMIME-Version: 1.0\r\n`;
  if (!html) return Buffer.from(`${head}Content-Type: text/plain; charset=utf-8\r\n\r\n${text}\r\n`);
  if (!text) return Buffer.from(`${head}Content-Type: text/html; charset=utf-8\r\n\r\n${html}\r\n`);
  return Buffer.from(
    `${head}Content-Type: multipart/alternative; boundary=${boundary}\r\n\r\n--${boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${text}\r\n--${boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n${html}\r\n--${boundary}--\r\n`,
  );
}

async function main() {
  const worker = await startLocalWorker({ vars, label: "mailbot-browser" });
  const base = worker.base;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  const cleanup = [() => browser.close(), () => worker.stop()];
  try {
    const reg = await api(base, "POST", "/v1/auth/register", null, { email: "ana@example.com", name: "Ana's agents" });
    assert(reg.status === 201, `register: ${JSON.stringify(reg.json)}`);
    const key = reg.json.data.api_key;
    const sandbox = reg.json.data.inbox;

    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    current = page;
    const dialogs = [];
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      d.accept();
    });
    let agent = null;
    let threadUrl = null;

    await test("sign in with an API key", async () => {
      await page.goto(`${base}/dashboard`);
      assert(page.url().endsWith("/dashboard/sign-in"), "redirected to sign-in");
      await page.screenshot({ path: `${SHOTS}sign-in.png` });
      await page.fill('form:has(input[value="key"]) input[name="secret"]', key);
      await page.click('form:has(input[value="key"]) button[type="submit"]');
      await page.waitForURL("**/dashboard/overview");
      assert((await page.textContent("main")).includes("ana@example.com"), "overview shows the account");
      const cookies = await context.cookies();
      const c = cookies.find((x) => x.name === "mb_dash");
      assert(c?.httpOnly && c.sameSite === "Strict", "HttpOnly SameSite=Strict cookie");
      assert(
        !c.value.includes(key) && !(await page.evaluate(() => document.cookie)).includes("mb_"),
        "key not in the browser",
      );
      await page.screenshot({ path: `${SHOTS}overview.png`, fullPage: true });
    });

    await test("create an inbox", async () => {
      await page.click('nav a:has-text("Inboxes")');
      await page.fill('input[name="username"]', "agent");
      await page.click('button:has-text("Create inbox")');
      await page.waitForURL(/\/dashboard\/inboxes\/inbox_/);
      agent = { id: page.url().split("/").pop(), address: (await page.textContent("h1")).trim() };
      assert(agent.address.startsWith("agent"), agent.address);
      assert((await page.textContent("main")).includes("No messages here yet"), "empty state");
      await page.screenshot({ path: `${SHOTS}inbox-empty.png`, fullPage: true });
    });

    await test("receive a message, open it, reply; the reply is in the thread", async () => {
      const raw = mail({
        from: "Bob <bob@example.org>",
        to: agent.address,
        subject: "Quarterly numbers",
        text: "Hi agent,\nCan you send the Q3 figures?\nBob",
      });
      const r = await deliver({ raw, to: agent.address, from: "bob@example.org", url: base });
      assert(r.ok !== false, `delivered: ${JSON.stringify(r)}`);
      for (let i = 0; i < 20; i++) {
        await page.goto(`${base}/dashboard/inboxes/${agent.id}`);
        if ((await page.textContent("main")).includes("Quarterly numbers")) break;
        await sleep(500);
      }
      await page.screenshot({ path: `${SHOTS}inbox.png`, fullPage: true });
      await page.click('a:has-text("Quarterly numbers")');
      await page.waitForURL(/messages\/msg_/);
      assert((await page.textContent("pre.text")).includes("Q3 figures"), "plain text shown");
      await page.screenshot({ path: `${SHOTS}message.png`, fullPage: true });
      await page.fill('textarea[name="body_text"] >> nth=0', "Here they are: 42.");
      await page.click('button:has-text("Send reply")');
      await page.waitForURL(/threads\/thr_/);
      threadUrl = page.url();
      const items = await page.locator("ol.timeline li").count();
      assert(items === 2, `thread has 2 messages, got ${items}`);
      assert((await page.textContent("ol.timeline")).includes("Here they are"), "reply in thread");
      await page.screenshot({ path: `${SHOTS}thread.png`, fullPage: true });
    });

    await test("hostile HTML runs no script, makes no request, does not navigate", async () => {
      const trap = await listener();
      const t = `http://127.0.0.1:${trap.port}`;
      const html = `<html><head><meta http-equiv="refresh" content="0;url=${t}/refresh"><style>body{background:url(${t}/css-bg)}</style><link rel="stylesheet" href="${t}/css-link"></head><body>
<script>window.top.location="${t}/script-nav"; fetch("${t}/script-fetch"); alert("xss")</script>
<img src="${t}/img" onerror="fetch('${t}/onerror')">
<form action="${t}/form" method="post"><input name="q" value="1"><button id="sub">Go</button></form>
<iframe src="${t}/iframe"></iframe><a id="lnk" href="${t}/link">a link</a><p>hostile body</p></body></html>`;
      await deliver({
        raw: mail({ from: "eve@example.net", to: agent.address, subject: "Hostile", html }),
        to: agent.address,
        from: "eve@example.net",
        url: base,
      });
      let url = null;
      for (let i = 0; i < 20 && !url; i++) {
        await page.goto(`${base}/dashboard/inboxes/${agent.id}`);
        const a = page.locator('a:has-text("Hostile")');
        if (await a.count()) url = `${base}${await a.first().getAttribute("href")}`;
        else await sleep(500);
      }
      assert(url, "hostile message listed");
      await page.goto(url);
      const frame = page.frameLocator("iframe.mail");
      await frame.locator("text=hostile body").waitFor();
      // Try the form too: sandboxed without allow-forms, submitting does nothing.
      await frame
        .locator("#sub")
        .click({ timeout: 2000 })
        .catch(() => {});
      await sleep(2500);
      assert(page.url() === url, `top did not navigate (${page.url()})`);
      assert(dialogs.length === 0, `no script ran (dialogs: ${dialogs})`);
      assert(trap.hits.length === 0, `no request reached the listener: ${JSON.stringify(trap.hits)}`);
      const rel = await frame.locator("#lnk").getAttribute("rel");
      assert(rel === "noopener noreferrer", `links get rel=noopener noreferrer (${rel})`);
      await page.screenshot({ path: `${SHOTS}message-html-sandboxed.png`, fullPage: true });
      trap.close();
    });

    await test("a phishing-style send is refused and the page shows the signals", async () => {
      await page.goto(`${base}/dashboard/inboxes/${agent.id}/compose`);
      await page.fill('input[name="to"]', "victim@example.com");
      await page.fill('input[name="subject"]', "Urgent: verify your account");
      await page.fill('textarea[name="body_text"]', "Your account will be suspended. Verify your password now.");
      await page.fill(
        'textarea[name="body_html"]',
        '<p>Your account will be suspended within 24 hours. Verify your password now:</p><a href="http://192.168.10.10/login">https://www.paypal.com/signin</a><form action="http://192.168.10.10/"><input type="password" name="p"></form>',
      );
      await page.click('button:has-text("Send")');
      const alert = page.locator('[role="alert"]');
      await alert.waitFor();
      const text = await alert.textContent();
      assert(text.includes("send_blocked"), `send_blocked shown: ${text}`);
      assert(text.includes("phishing_suspected"), "reason shown");
      assert((await page.locator("ul.signals li").count()) >= 2, "signals listed");
      await page.screenshot({ path: `${SHOTS}send-refused.png`, fullPage: true });
    });

    await test("a webhook to a local receiver: test it, see the delivery", async () => {
      const receiver = await listener();
      await page.goto(`${base}/dashboard/webhooks`);
      await page.fill('input[name="url"]', `http://127.0.0.1:${receiver.port}/hook`);
      await page.click('button:has-text("Add webhook")');
      assert((await page.locator(".secret").textContent()).startsWith("whsec_"), "secret shown once");
      await page.click(`a:has-text("127.0.0.1:${receiver.port}")`);
      await page.click('button:has-text("Send a test event")');
      assert((await page.textContent('[role="status"]')).includes("queued"), "test queued");
      const hookUrl = page.url().replace(/\/test$/, "");
      let seen = false;
      for (let i = 0; i < 40 && !seen; i++) {
        await sleep(500);
        await page.goto(hookUrl);
        seen = (await page.locator("td .st-ok").count()) > 0;
      }
      assert(
        receiver.hits.some((h) => h.url === "/hook"),
        "receiver got the event",
      );
      assert(seen, "the delivery is shown as succeeded");
      await page.screenshot({ path: `${SHOTS}webhook.png`, fullPage: true });
      receiver.close();
    });

    await test("events page lists events and updates live over the SSE stream", async () => {
      await page.goto(`${base}/dashboard/events`);
      await page.waitForFunction(() => document.getElementById("live-status").textContent === "Live: streaming", null, {
        timeout: 15000,
      });
      const before = await page.locator("#event-feed tbody tr").count();
      await api(base, "POST", "/v1/inboxes", key, { username: "live" });
      await page.waitForFunction((n) => document.querySelectorAll("#event-feed tbody tr").length > n, before, {
        timeout: 15000,
      });
      assert((await page.textContent("#event-feed")).includes("inbox.created"), "new event appears");
      await page.screenshot({ path: `${SHOTS}events.png`, fullPage: true });
    });

    await test("audit log verify shows ok", async () => {
      await page.goto(`${base}/dashboard/audit`);
      await page.click('button:has-text("Verify chain")');
      const text = await page.textContent("#verify-result");
      assert(/Chain intact: [\d,]+ entries checked/.test(text), text);
      assert((await page.textContent("main")).includes("dashboard"), "dashboard actions audited as dashboard");
      await page.screenshot({ path: `${SHOTS}audit.png`, fullPage: true });
    });

    await test("create and revoke a key", async () => {
      await page.goto(`${base}/dashboard/keys`);
      await page.fill('input[name="name"]', "temp-key");
      await page.click('button:has-text("Create key")');
      const secret = await page.textContent("#new-key");
      assert(/^mb_/.test(secret), "key shown once");
      assert((await api(base, "GET", "/v1/account", secret)).status === 200, "the new key works");
      await page.click('button[aria-label="Revoke temp-key"]');
      await page.waitForURL("**/dashboard/keys");
      const row = page.locator("tr", { hasText: "temp-key" });
      assert((await row.textContent()).includes("revoked"), "shown revoked");
      assert((await api(base, "GET", "/v1/account", secret)).status === 401, "the revoked key is refused");
      await page.screenshot({ path: `${SHOTS}keys.png`, fullPage: true });
    });

    await test("a cross-site POST to a dashboard action is refused", async () => {
      const evil = await listener((_req, res) => {
        res.writeHead(200, { "content-type": "text/html" });
        res.end(
          `<form id="f" method="post" action="${base}/dashboard/inboxes"><input name="username" value="csrf"></form><script>document.getElementById("f").submit()</script>`,
        );
      });
      const res = page.waitForResponse(
        (r) => r.url() === `${base}/dashboard/inboxes` && r.request().method() === "POST",
      );
      await page.goto(`http://127.0.0.1:${evil.port}/`);
      const r = await res;
      assert(r.status() === 403, `refused (${r.status()})`);
      const list = await api(base, "GET", "/v1/inboxes", key);
      assert(!list.json.data.some((i) => i.username === "csrf"), "no inbox created");
      evil.close();
    });

    await test("a restricted key's session cannot see other inboxes", async () => {
      const k = await api(base, "POST", "/v1/api-keys", key, {
        name: "sandbox-only",
        scopes: ["read"],
        inbox_ids: [sandbox.id],
      });
      const ctx2 = await browser.newContext();
      const p2 = await ctx2.newPage();
      await p2.goto(`${base}/dashboard/sign-in`);
      await p2.fill('form:has(input[value="key"]) input[name="secret"]', k.json.data.key);
      await p2.click('form:has(input[value="key"]) button[type="submit"]');
      await p2.waitForURL("**/dashboard/overview");
      await p2.goto(`${base}/dashboard/inboxes`);
      const text = await p2.textContent("main");
      assert(text.includes(sandbox.address) && !text.includes(agent.address), "only the sandbox inbox listed");
      const r = await p2.goto(`${base}/dashboard/inboxes/${agent.id}`);
      assert(r.status() === 404, `other inbox is 404 (${r.status()})`);
      await ctx2.close();
    });

    await test("operator signs in with ADMIN_TOKEN and sees accounts", async () => {
      const ctx3 = await browser.newContext({ viewport: { width: 1280, height: 700 } });
      const p3 = await ctx3.newPage();
      await p3.goto(`${base}/dashboard/sign-in`);
      await p3.fill('form:has(input[value="operator"]) input[name="secret"]', vars.ADMIN_TOKEN);
      await p3.click('form:has(input[value="operator"]) button[type="submit"]');
      await p3.waitForURL("**/dashboard/operator/accounts");
      assert((await p3.textContent("main")).includes("ana@example.com"), "account listed");
      await p3.screenshot({ path: `${SHOTS}operator-accounts.png`, fullPage: true });
      await ctx3.close();
    });

    await test("axe-core: no serious or critical violations on the main pages", async () => {
      const ctx4 = await browser.newContext({ bypassCSP: true, storageState: await context.storageState() });
      const p4 = await ctx4.newPage();
      const pages = [
        "/dashboard/overview",
        "/dashboard/inboxes",
        `/dashboard/inboxes/${agent.id}`,
        threadUrl.replace(base, ""),
        "/dashboard/domains",
        "/dashboard/webhooks",
        "/dashboard/events",
        "/dashboard/audit",
        "/dashboard/keys",
        "/dashboard/suppressions",
        `/dashboard/inboxes/${agent.id}/compose`,
      ];
      const bad = [];
      for (const path of pages) {
        await p4.goto(base + path);
        await p4.addScriptTag({ content: AXE });
        const v = await p4.evaluate(async () =>
          (await window.axe.run()).violations.map((x) => ({ id: x.id, impact: x.impact, n: x.nodes.length })),
        );
        for (const x of v)
          if (x.impact === "serious" || x.impact === "critical") bad.push(`${path}: ${x.id} (${x.impact}, ${x.n})`);
      }
      await ctx4.close();
      assert(bad.length === 0, bad.join("\n"));
    });

    await test("sign out ends the session: the old cookie is refused", async () => {
      const old = (await context.cookies()).find((c) => c.name === "mb_dash");
      await page.goto(`${base}/dashboard/overview`);
      await page.click('button:has-text("Sign out")');
      await page.waitForURL("**/dashboard/sign-in");
      const res = await fetch(`${base}/dashboard/overview`, {
        headers: { cookie: `mb_dash=${old.value}` },
        redirect: "manual",
      });
      assert(
        res.status === 303 && res.headers.get("location") === "/dashboard/sign-in",
        `old cookie refused (${res.status})`,
      );
    });

    // Page weight: HTML + the shared CSS and JS, gzip, as a browser on a cold cache loads it.
    const assets = ["/dashboard/assets/app.css", "/dashboard/assets/app.js"];
    let assetBytes = 0;
    for (const a of assets) assetBytes += gzipSync(Buffer.from(await (await fetch(base + a)).arrayBuffer())).length;
    const ctx5 = await browser.newContext({ storageState: undefined });
    const p5 = await ctx5.newPage();
    await p5.goto(`${base}/dashboard/sign-in`);
    await p5.fill('form:has(input[value="key"]) input[name="secret"]', key);
    await p5.click('form:has(input[value="key"]) button[type="submit"]');
    await p5.waitForURL("**/dashboard/overview");
    const cookie = (await ctx5.cookies()).find((c) => c.name === "mb_dash").value;
    for (const path of [
      "/dashboard/overview",
      "/dashboard/inboxes",
      `/dashboard/inboxes/${agent.id}`,
      "/dashboard/audit",
      "/dashboard/events",
    ]) {
      const html = await (await fetch(base + path, { headers: { cookie: `mb_dash=${cookie}` } })).text();
      const kb = (gzipSync(Buffer.from(html)).length + assetBytes) / 1024;
      console.log(`weight ${path.replace(agent.id, ":id")}: ${kb.toFixed(1)} KB gzip (HTML + CSS + JS)`);
      if (kb > 100) results.push(`FAIL page weight ${path}: ${kb.toFixed(1)} KB`);
    }
    await ctx5.close();
  } finally {
    for (const f of cleanup) await f().catch(() => {});
  }
  const failed = results.filter((r) => r.startsWith("FAIL"));
  console.log(`\n${passed} passed, ${failed.length} failed`);
  if (failed.length) {
    console.log(failed.join("\n"));
    process.exit(1);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
